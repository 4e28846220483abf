//! The command line: `recur serve`, `recur admin`, `recur bench`, parsed with clap, and the
//! translation of flags into settings overrides and admin request arguments.

pub mod admin;

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};

use recur::clock::ClockMode;
use recur::config::Overrides;

/// recur: a subscription order scheduler daemon.
///
/// One virtual actor per order runs its time-driven lifecycle (start, payment cycles,
/// pause/resume, end-date changes, expiry, auto-renew cancel) with every order, timer and
/// statistic kept in Redis. Admin commands and events travel over Redis pub/sub and streams.
#[derive(Debug, Parser)]
#[command(name = "recur", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// recur's subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the daemon until SIGINT or SIGTERM.
    ///
    /// Settings come from the built-in defaults, then --config FILE, then RECUR_ environment
    /// variables (e.g. RECUR_REDIS__URL, RECUR_LOG__FORMAT=json), then these flags. Without a
    /// Redis URL, recur starts and owns a private redis-server (from PATH) whose data lives
    /// under redis.embedded.data_dir.
    Serve(ServeArgs),
    /// Send one admin command to a running daemon and print its reply.
    ///
    /// Arguments come from --json (a JSON object, inline or @FILE) and the named flags, which
    /// win over --json. The request is re-published with the same id until a reply comes or
    /// --timeout passes. The reply is printed as JSON on stdout.
    ///
    /// `recur admin watch` instead prints every event of every partition's event stream
    /// (<prefix>:{p<N>}:events), one JSON object per line with its change's entity, from now
    /// (or --from-start) until Ctrl-C.
    ///
    /// Redis: --redis-url, else redis.url (config file or RECUR_REDIS__URL), else the embedded
    /// redis-server that `recur serve` runs under redis.embedded.data_dir. A Redis Cluster:
    /// --redis-cluster (or redis.cluster = true) with the seed nodes as the URL.
    ///
    /// Exit status: 0 ok reply, 1 error reply, 2 no reply (no Redis, timeout, bad arguments).
    ///
    /// Example: recur admin pauseOrder --order-id ord-1 --json '{"resumeAt":"2025-03-01T00:00:00Z"}'
    Admin(AdminArgs),
    /// Run a load scenario against a private Redis and report throughput and latency (runs
    /// the recur-bench program built beside recur; `recur bench --help` lists the scenarios).
    Bench(BenchArgs),
}

/// Where settings come from; shared by every subcommand that talks to Redis.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// A TOML file layered over the built-in defaults (config/default.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The Redis to use (redis://host:port/db, rediss://host:port for TLS, or
    /// redis+unix:///path/redis.sock) instead of the embedded redis-server under
    /// redis.embedded.data_dir. With --redis-cluster, the seed nodes of a Redis Cluster,
    /// comma-separated (redis://h1:7000,redis://h2:7000). Give a password in
    /// RECUR_REDIS__PASSWORD (and a user in RECUR_REDIS__USERNAME), not on the command line,
    /// where other users of the machine can read it; TLS files are set under [redis.tls].
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The Redis URL names seed nodes of a Redis Cluster: use the cluster client
    /// (redis.cluster, RECUR_REDIS__CLUSTER=true). Needs a URL: the embedded Redis is a single
    /// server.
    #[arg(long)]
    pub redis_cluster: bool,
    /// Prefix of every Redis key and channel, without the colon [default: recur].
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
}

/// `recur serve`
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The time source: the system clock, or a simulated clock that moves only on the
    /// advanceClock admin command [default: system].
    #[arg(long, value_enum, value_name = "MODE")]
    pub clock: Option<ClockArg>,
    /// Start instant of a simulated clock (RFC 3339). Applies only when Redis holds no
    /// simulated time yet.
    #[arg(long, value_name = "RFC3339")]
    pub clock_start: Option<String>,
    /// Address of the /healthz, /readyz and /metrics listener (http.listen; "" = off)
    /// [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,
}

/// `--clock` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockArg {
    /// Wall-clock time.
    System,
    /// Moves only on advanceClock.
    Simulated,
}

impl From<ClockArg> for ClockMode {
    fn from(arg: ClockArg) -> Self {
        match arg {
            ClockArg::System => ClockMode::System,
            ClockArg::Simulated => ClockMode::Simulated,
        }
    }
}

impl SettingsArgs {
    /// These flags as settings overrides (no clock overrides).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            redis_url: self.redis_url.clone(),
            redis_cluster: self.redis_cluster.then_some(true),
            prefix: self.prefix.clone(),
            ..Overrides::default()
        }
    }
}

impl ServeArgs {
    /// These flags as settings overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            clock_mode: self.clock.map(ClockMode::from),
            clock_start: self.clock_start.clone(),
            http_listen: self.http_listen.clone(),
            ..self.settings.overrides()
        }
    }
}

/// `recur admin <command>`
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin command, e.g. ping, getOrder, pauseOrder, advanceClock; or `watch` to print
    /// every event as one JSON line until Ctrl-C.
    pub command: String,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The command's arguments as a JSON object: inline, `@file.json`, or `@-` for stdin.
    #[arg(long, value_name = "ARGS")]
    pub json: Option<String>,
    /// `watch` only: start at the oldest event kept instead of now.
    #[arg(long)]
    pub from_start: bool,
    /// The request id (default: a new one). Retrying with the same id never repeats a change.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// The application name sent as the request's `channel`.
    #[arg(long, value_name = "NAME", default_value = "cli")]
    pub channel: String,
    /// How long to keep retrying before giving up, e.g. 10s.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: String,
    /// args.orderId
    #[arg(long, value_name = "ID")]
    pub order_id: Option<String>,
    /// args.customerId
    #[arg(long, value_name = "ID")]
    pub customer_id: Option<String>,
    /// args.paymentId
    #[arg(long, value_name = "ID")]
    pub payment_id: Option<String>,
    /// args.amount, a decimal string such as 9.90
    #[arg(long, value_name = "DECIMAL")]
    pub amount: Option<String>,
    /// args.reason (paymentFailed)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// args.effectiveAt (cancelOrder, changePlan): IMMEDIATELY or NEXT_PAYMENT_DATE
    #[arg(long, value_name = "WHEN")]
    pub effective_at: Option<String>,
    /// args.cause (cancelOrder): OWNER_ACTION, MEMBER_ACTION or UNKNOWN
    #[arg(long, value_name = "CAUSE")]
    pub cause: Option<String>,
    /// args.endDate (postponeEndDate), RFC 3339
    #[arg(long, value_name = "RFC3339")]
    pub end_date: Option<String>,
    /// args.startDate (changeStartDate), RFC 3339
    #[arg(long, value_name = "RFC3339")]
    pub start_date: Option<String>,
    /// args.resumeAt (pauseOrder), RFC 3339
    #[arg(long, value_name = "RFC3339")]
    pub resume_at: Option<String>,
    /// args.to (advanceClock), RFC 3339
    #[arg(long, value_name = "RFC3339")]
    pub to: Option<String>,
    /// args.status (listOrders)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// args.limit (listOrders)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// args.cursor (listOrders)
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// args.timeZone (createOrder): an IANA name such as Europe/Paris
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// args.proration (changePlan): PRORATE or NONE
    #[arg(long, value_name = "HOW")]
    pub proration: Option<String>,
    /// args.endpoint (retryDeadWebhooks): a webhook endpoint's id
    #[arg(long, value_name = "ID")]
    pub endpoint: Option<String>,
    /// args.daemonId (getMetrics): the daemon that answers
    #[arg(long, value_name = "ID")]
    pub daemon_id: Option<String>,
}

/// Why admin arguments could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AdminArgsError {
    /// `--json` is not valid JSON.
    #[error("--json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The file named by `--json @FILE` is not valid JSON.
    #[error("--json @{}: not valid JSON: {source}", path.display())]
    JsonFile {
        /// The file.
        path: PathBuf,
        /// Where the JSON is broken.
        #[source]
        source: serde_json::Error,
    },
    /// The file named by `--json @FILE` (or stdin, for `@-`) cannot be read.
    #[error("--json @{}: cannot read it: {source}", path.display())]
    Read {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--json` is valid JSON but not an object.
    #[error("--json must be a JSON object, like '{{\"orderId\": \"o-1\"}}'")]
    NotAnObject,
}

impl AdminArgs {
    /// The request's `args` object: `--json` (inline, `@FILE` or `@-`), then every named flag
    /// given (camelCase keys).
    ///
    /// # Errors
    /// [`AdminArgsError`] when `--json` is not a JSON object or its file cannot be read.
    pub fn request_args(&self) -> Result<Value, AdminArgsError> {
        let mut args = match &self.json {
            Some(text) => match parse_json_arg(text)? {
                Value::Object(map) => map,
                _ => return Err(AdminArgsError::NotAnObject),
            },
            None => Map::new(),
        };
        let strings = [
            ("orderId", &self.order_id),
            ("customerId", &self.customer_id),
            ("paymentId", &self.payment_id),
            ("amount", &self.amount),
            ("reason", &self.reason),
            ("effectiveAt", &self.effective_at),
            ("cause", &self.cause),
            ("endDate", &self.end_date),
            ("startDate", &self.start_date),
            ("timeZone", &self.time_zone),
            ("proration", &self.proration),
            ("endpoint", &self.endpoint),
            ("daemonId", &self.daemon_id),
            ("resumeAt", &self.resume_at),
            ("to", &self.to),
            ("status", &self.status),
            ("cursor", &self.cursor),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                args.insert(key.to_string(), Value::String(value.clone()));
            }
        }
        if let Some(limit) = self.limit {
            args.insert("limit".to_string(), Value::from(limit));
        }
        Ok(Value::Object(args))
    }
}

/// Parses `--json`: inline JSON, `@path` (a file) or `@-` (stdin).
fn parse_json_arg(text: &str) -> Result<Value, AdminArgsError> {
    let Some(path) = text.strip_prefix('@') else {
        return Ok(serde_json::from_str(text)?);
    };
    let path = PathBuf::from(path);
    let read_error = |source| AdminArgsError::Read {
        path: path.clone(),
        source,
    };
    let contents = if path.as_os_str() == "-" {
        let mut contents = String::new();
        std::io::stdin()
            .read_to_string(&mut contents)
            .map_err(read_error)?;
        contents
    } else {
        std::fs::read_to_string(&path).map_err(read_error)?
    };
    serde_json::from_str(&contents).map_err(|source| AdminArgsError::JsonFile {
        path: path.clone(),
        source,
    })
}

/// `recur bench <scenario> [flags]`: everything after `bench` goes to the `recur-bench`
/// program beside `recur` (the benchmarks are a crate of their own, outside the daemon).
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// The scenario and its flags, as `recur-bench --help` lists them.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_become_overrides() {
        let cli = Cli::try_parse_from([
            "recur",
            "serve",
            "--config",
            "prod.toml",
            "--redis-url",
            "redis://127.0.0.1:6380",
            "--prefix",
            "p",
            "--clock",
            "simulated",
            "--clock-start",
            "2025-01-01T00:00:00Z",
        ])
        .expect("valid flags");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let o = args.overrides();
        assert_eq!(o.config_file, Some(PathBuf::from("prod.toml")));
        assert_eq!(o.redis_url.as_deref(), Some("redis://127.0.0.1:6380"));
        assert_eq!(o.prefix.as_deref(), Some("p"));
        assert_eq!(o.clock_mode, Some(ClockMode::Simulated));
        assert_eq!(o.clock_start.as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(o.redis_cluster, None, "no --redis-cluster");
    }

    #[test]
    fn redis_cluster_flag_becomes_an_override_for_serve_and_admin() {
        let seeds = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
        let cli = Cli::try_parse_from(["recur", "serve", "--redis-cluster", "--redis-url", seeds])
            .expect("valid flags");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let o = args.overrides();
        assert_eq!(o.redis_cluster, Some(true));
        assert_eq!(o.redis_url.as_deref(), Some(seeds));
        let args = admin_args(&["--redis-cluster", "--redis-url", seeds]);
        assert_eq!(args.settings.overrides().redis_cluster, Some(true));
    }

    #[test]
    fn serve_without_flags_overrides_nothing() {
        let cli = Cli::try_parse_from(["recur", "serve"]).expect("valid");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let o = args.overrides();
        assert!(o.config_file.is_none() && o.redis_url.is_none() && o.clock_mode.is_none());
    }

    #[test]
    fn bad_clock_value_is_refused() {
        assert!(Cli::try_parse_from(["recur", "serve", "--clock", "sundial"]).is_err());
    }

    #[test]
    fn admin_flags_win_over_json() {
        let cli = Cli::try_parse_from([
            "recur",
            "admin",
            "pauseOrder",
            "--json",
            r#"{"orderId": "from-json", "resumeAt": "2025-03-01T00:00:00Z"}"#,
            "--order-id",
            "ord-1",
            "--limit",
            "5",
        ])
        .expect("valid");
        let Command::Admin(args) = cli.command else {
            panic!("expected admin");
        };
        assert_eq!(args.command, "pauseOrder");
        assert_eq!(
            args.request_args().expect("valid args"),
            serde_json::json!({
                "orderId": "ord-1",
                "resumeAt": "2025-03-01T00:00:00Z",
                "limit": 5,
            })
        );
    }

    fn admin_args(extra: &[&str]) -> AdminArgs {
        let argv = ["recur", "admin", "createOrder"].iter().chain(extra);
        let Command::Admin(args) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("expected admin");
        };
        args
    }

    #[test]
    fn admin_json_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("order.json");
        std::fs::write(&file, r#"{"customerId": "c-1", "type": "ONLINE"}"#).expect("write");
        let at_file = format!("@{}", file.display());
        let args = admin_args(&["--json", &at_file, "--customer-id", "c-2"]);
        assert_eq!(
            args.request_args().expect("valid"),
            serde_json::json!({"customerId": "c-2", "type": "ONLINE"})
        );

        std::fs::write(&file, "{broken").expect("write");
        let error = admin_args(&["--json", &at_file])
            .request_args()
            .expect_err("broken file");
        assert!(
            matches!(error, AdminArgsError::JsonFile { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("order.json"), "{error}");

        let missing = format!("@{}", dir.path().join("nope.json").display());
        let error = admin_args(&["--json", &missing])
            .request_args()
            .expect_err("missing file");
        assert!(matches!(error, AdminArgsError::Read { .. }), "{error:?}");
    }

    #[test]
    fn admin_watch_and_exit_codes_are_documented() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("admin")
            .expect("admin exists")
            .render_long_help()
            .to_string();
        assert!(help.contains("recur admin watch"), "{help}");
        assert!(help.contains("Exit status"), "{help}");
    }

    #[test]
    fn admin_json_must_be_an_object() {
        let cli = Cli::try_parse_from(["recur", "admin", "ping", "--json", "[1]"]).expect("parses");
        let Command::Admin(args) = cli.command else {
            panic!("expected admin");
        };
        assert!(matches!(
            args.request_args(),
            Err(AdminArgsError::NotAnObject)
        ));
    }
}
