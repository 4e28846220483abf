//! The command line: `recur serve`, `recur admin`, `recur bench`, parsed with clap, and the
//! translation of flags into settings overrides and admin request arguments.

pub mod admin;
pub mod commands;
pub mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use recur::clock::ClockMode;
use recur::config::Overrides;

pub use commands::AdminArgs;

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
    /// Send an admin command to a running daemon and print its reply; or watch the events.
    ///
    /// Each admin command is a subcommand with its arguments as flags (`recur admin getOrder
    /// --help`), checked before anything is sent. Dates are 2026-05-01 (midnight UTC) or RFC
    /// 3339 (2026-05-01T09:30:00Z); amounts are decimals (10.00). --json '{...}' (inline, @FILE
    /// or @- for stdin) gives the arguments as one JSON object, for what no flag covers; the
    /// flags win over it. The request is re-sent with the same id until a reply comes or
    /// --timeout passes.
    ///
    /// Redis: --redis-url, else redis.url (config file or RECUR_REDIS__URL), else the embedded
    /// redis-server that `recur serve` runs under redis.embedded.data_dir. A Redis Cluster:
    /// --redis-cluster (or redis.cluster = true) with the seed nodes as the URL.
    #[command(after_long_help = ADMIN_AFTER_HELP)]
    Admin(AdminArgs),
    /// Run a load scenario against a private Redis and report throughput and latency (runs
    /// the recur-bench program built beside recur; `recur bench --help` lists the scenarios).
    Bench(BenchArgs),
}

/// What `recur admin --help` ends with.
const ADMIN_AFTER_HELP: &str = "\
Output: the reply object as JSON on stdout (--output json, the default: the same in a terminal
and in a pipe); --output table prints the result as key/value rows (listOrders: one row per
order) and an error reply as one line.

Exit status: 0 ok reply; 1 error reply (printed like any reply); 2 no reply: bad arguments
(before anything is sent), no Redis, or --timeout passed (retrying with the same --request-id
is safe).

Examples:
  recur admin getOrder --order-id ord-1
  recur admin recordPayment --order-id ord-1 --payment-id pay-1 --amount 10.00
  recur admin pauseOrder --order-id ord-1 --resume-at 2026-03-01
  recur admin advanceClock --to 2026-02-01
  recur admin listOrders --customer-id cus-1 --output table
  recur admin send getOrder --json '{\"orderId\": \"ord-1\"}'";

/// Where settings come from; shared by every subcommand that talks to Redis. Global: `recur
/// admin` takes them before or after its command.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Settings")]
pub struct SettingsArgs {
    /// A TOML file layered over the built-in defaults (config/default.toml).
    #[arg(global = true, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The Redis to use (redis://host:port/db, rediss://host:port for TLS, or
    /// redis+unix:///path/redis.sock) instead of the embedded redis-server under
    /// redis.embedded.data_dir. With --redis-cluster, the seed nodes of a Redis Cluster,
    /// comma-separated (redis://h1:7000,redis://h2:7000). Give a password in
    /// RECUR_REDIS__PASSWORD (and a user in RECUR_REDIS__USERNAME), not on the command line,
    /// where other users of the machine can read it; TLS files are set under [redis.tls].
    #[arg(global = true, long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The Redis URL names seed nodes of a Redis Cluster: use the cluster client
    /// (redis.cluster, RECUR_REDIS__CLUSTER=true). Needs a URL: the embedded Redis is a single
    /// server.
    #[arg(global = true, long)]
    pub redis_cluster: bool,
    /// Prefix of every Redis key and channel, without the colon [default: recur].
    #[arg(global = true, long, value_name = "P")]
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

    use clap::error::ErrorKind;
    use serde_json::json;

    use commands::{AdminArgsError, AdminCommand, Output};

    fn admin(argv: &[&str]) -> Result<AdminArgs, clap::Error> {
        let argv = ["recur", "admin"].iter().chain(argv);
        match Cli::try_parse_from(argv)?.command {
            Command::Admin(args) => Ok(args),
            other => panic!("expected admin, got {other:?}"),
        }
    }

    fn admin_args(extra: &[&str]) -> AdminArgs {
        let argv: Vec<&str> = ["createOrder"].iter().chain(extra).copied().collect();
        admin(&argv).expect("parses")
    }

    /// The request `recur admin <argv>` sends: its command and args.
    fn request(argv: &[&str]) -> (String, serde_json::Value) {
        let args = admin(argv).expect("parses");
        let body = args.command.request_args().expect("valid args");
        (args.command.name().to_string(), body)
    }

    fn refused(argv: &[&str]) -> clap::Error {
        admin(argv).expect_err("refused")
    }

    #[test]
    fn every_admin_command_is_a_subcommand_listed_in_the_help() {
        let mut cli = Cli::command();
        let admin = cli.find_subcommand_mut("admin").expect("admin exists");
        let help = admin.render_help().to_string();
        for name in recur::admin::COMMAND_NAMES.iter().chain(&["watch", "send"]) {
            let sub = admin
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no `recur admin {name}`"));
            assert!(sub.get_about().is_some(), "{name} has no help");
            assert!(
                help.contains(&format!("  {name} ")),
                "{name} not in:\n{help}"
            );
        }
        assert_eq!(
            admin
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .count(),
            recur::admin::COMMAND_NAMES.len() + 2,
            "a subcommand the daemon does not know"
        );
    }

    #[test]
    fn each_subcommand_sends_its_own_name() {
        for name in recur::admin::COMMAND_NAMES {
            let args = admin(&[name, "--json", "{}"]).expect(name);
            assert_eq!(args.command.name(), name);
            assert_eq!(args.command.subcommand(), name);
        }
        let args = admin(&["send", "createTestClock", "--json", "{}"]).unwrap();
        assert_eq!(
            (args.command.name(), args.command.subcommand()),
            ("createTestClock", "send")
        );
    }

    #[test]
    fn typed_flags_become_the_request_args() {
        assert_eq!(
            request(&[
                "recordPayment",
                "--order-id",
                "ord-1",
                "--payment-id",
                "pay-1",
                "--amount",
                "10.00",
                "--due-cycle",
                "2",
                "--due-kind",
                "proration",
            ]),
            (
                "recordPayment".into(),
                json!({"orderId": "ord-1", "paymentId": "pay-1", "amount": "10.00",
                       "due": {"cycle": 2, "kind": "PRORATION"}})
            )
        );
        assert_eq!(
            request(&[
                "cancelOrder",
                "--order-id",
                "ord-1",
                "--effective-at",
                "next_payment_date",
                "--cause",
                "MEMBER_ACTION"
            ])
            .1,
            json!({"orderId": "ord-1", "effectiveAt": "NEXT_PAYMENT_DATE", "cause": "MEMBER_ACTION"})
        );
        assert_eq!(
            request(&["listOrders", "--status", "active", "--limit", "5"]).1,
            json!({"status": "ACTIVE", "limit": 5})
        );
        assert_eq!(
            request(&[
                "changePlan",
                "--order-id",
                "o",
                "--effective-at",
                "IMMEDIATELY",
                "--plan-id",
                "p",
                "--plan-name",
                "P",
                "--proration",
                "NONE",
                "--json",
                r#"{"pricing": {}, "prices": []}"#,
            ])
            .1["proration"],
            "NONE"
        );
        assert_eq!(
            request(&["updateOrder", "--customer-id", "c-1", "--order-id", "o-1"]).1,
            json!({"customerId": "c-1", "id": "o-1"})
        );
        assert_eq!(request(&["ping"]), ("ping".into(), json!({})));
    }

    #[test]
    fn dates_take_a_day_or_rfc_3339() {
        let to = |d: &str| request(&["advanceClock", "--to", d]).1["to"].clone();
        assert_eq!(to("2026-05-01"), "2026-05-01T00:00:00.000Z");
        assert_eq!(to("2026-05-01T09:30:00+02:00"), "2026-05-01T07:30:00.000Z");
        for bad in ["2026-05", "2026-13-01", "tomorrow", "2026-05-01 09:30"] {
            let e = refused(&["advanceClock", "--to", bad]);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
            let message = e.to_string();
            assert!(message.contains("--to <DATE>"), "{message}");
            assert!(message.contains("2026-05-01"), "an example: {message}");
        }
        let e = refused(&["pauseOrder", "--order-id", "o", "--resume-at", "soon"]);
        assert!(e.to_string().contains("--resume-at <DATE>"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let cases: [(&[&str], &str); 7] = [
            (
                &[
                    "recordPayment",
                    "--order-id",
                    "o",
                    "--payment-id",
                    "p",
                    "--amount",
                    "10,00",
                ],
                "--amount <DECIMAL>",
            ),
            (&["getOrder", "--order-id", "has space"], "--order-id <ID>"),
            (
                &["cancelOrder", "--order-id", "o", "--effective-at", "LATER"],
                "--effective-at",
            ),
            (&["listOrders", "--limit", "501"], "--limit <N>"),
            (&["listOrders", "--status", "SLEEPING"], "--status"),
            (&["createOrder", "--currency", "XYZ"], "--currency <CODE>"),
            (
                &["createOrder", "--time-zone", "Mars/Olympus"],
                "--time-zone <ZONE>",
            ),
        ];
        for (argv, flag) in cases {
            let e = refused(argv);
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                ),
                "{argv:?}: {e}"
            );
            assert!(e.to_string().contains(flag), "{argv:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
        let e = refused(&[
            "recordPayment",
            "--order-id",
            "o",
            "--payment-id",
            "p",
            "--amount",
            "10,00",
        ]);
        assert!(e.to_string().contains("10.00"), "an example: {e}");
    }

    #[test]
    fn missing_arguments_are_named_by_their_flags_all_at_once() {
        let e = refused(&["recordPayment", "--order-id", "ord-1"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let message = e.to_string();
        assert!(
            message.contains("--payment-id <ID>") && message.contains("--amount <DECIMAL>"),
            "{message}"
        );
        assert_eq!(e.exit_code(), 2);
        // With --json, what neither gives is named once assembled.
        let args = admin(&["recordPayment", "--json", r#"{"orderId": "o"}"#]).unwrap();
        match args.command.request_args() {
            Err(AdminArgsError::Missing { command, missing }) => {
                assert_eq!(command, "recordPayment");
                assert_eq!(missing, ["--payment-id <ID>", "--amount <DECIMAL>"]);
            }
            other => panic!("{other:?}"),
        }
        let args = admin(&["createOrder", "--customer-id", "c"]).unwrap();
        let Err(AdminArgsError::Missing { missing, .. }) = args.command.request_args() else {
            panic!("createOrder needs more");
        };
        assert!(missing.contains(&"pricing (in --json)"), "{missing:?}");
        assert!(missing.contains(&"--plan-id <ID>"), "{missing:?}");
        let args = admin(&["updateOrder", "--customer-id", "c"]).unwrap();
        let Err(AdminArgsError::Missing { missing, .. }) = args.command.request_args() else {
            panic!("updateOrder needs a target");
        };
        assert_eq!(missing, ["--order-id <ID> or --name <TEXT>"]);
    }

    #[test]
    fn typos_get_suggestions() {
        let e = refused(&["getOrdr", "--order-id", "o"]);
        assert_eq!(e.kind(), ErrorKind::InvalidSubcommand);
        assert!(e.to_string().contains("getOrder"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = refused(&["getOrder", "--oder-id", "o"]);
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert!(e.to_string().contains("--order-id"), "{e}");
        // An argument of another command is no argument of this one.
        assert_eq!(
            refused(&["getOrder", "--order-id", "o", "--limit", "5"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn admin_without_a_command_prints_its_help() {
        let e = refused(&[]);
        assert_eq!(
            e.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn settings_and_request_options_go_before_or_after_the_command() {
        let args = admin(&[
            "--redis-url",
            "redis://127.0.0.1:6380",
            "getOrder",
            "--order-id",
            "o",
            "--prefix",
            "t",
            "--timeout",
            "2m",
            "--output",
            "table",
            "--request-id",
            "r-1",
        ])
        .unwrap();
        assert_eq!(
            args.settings.redis_url.as_deref(),
            Some("redis://127.0.0.1:6380")
        );
        assert_eq!(args.settings.prefix.as_deref(), Some("t"));
        assert_eq!(args.request.timeout, std::time::Duration::from_secs(120));
        assert_eq!(args.request.output, Output::Table);
        assert_eq!(args.request.request_id.as_deref(), Some("r-1"));
        assert_eq!(args.request.channel, "cli");
        let e = refused(&["ping", "--timeout", "soon"]);
        assert!(e.to_string().contains("--timeout <DURATION>"), "{e}");
        assert_eq!(admin(&["ping"]).unwrap().request.output, Output::Json);
    }

    #[test]
    fn admin_flags_win_over_json() {
        assert_eq!(
            request(&[
                "pauseOrder",
                "--json",
                r#"{"orderId": "from-json", "resumeAt": "2025-03-01T00:00:00Z"}"#,
                "--order-id",
                "ord-1",
            ]),
            (
                "pauseOrder".into(),
                json!({"orderId": "ord-1", "resumeAt": "2025-03-01T00:00:00Z"})
            )
        );
        // Nested flags merge into the object --json gives.
        let (_, body) = request(&[
            "createOrder",
            "--json",
            r#"{"customerId": "c", "type": "ONLINE", "currency": "USD",
                "plan": {"id": "from-json", "name": "Basic", "description": "kept"},
                "pricing": {}, "prices": []}"#,
            "--plan-id",
            "basic",
            "--paid",
        ]);
        assert_eq!(
            body["plan"],
            json!({"id": "basic", "name": "Basic", "description": "kept"})
        );
        assert_eq!(body["paid"], true);
    }

    #[test]
    fn admin_json_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("order.json");
        std::fs::write(&file, r#"{"customerId": "c-1", "type": "ONLINE"}"#).expect("write");
        let at_file = format!("@{}", file.display());
        let args = admin_args(&["--json", &at_file, "--customer-id", "c-2"]);
        let Err(AdminArgsError::Missing { missing, .. }) = args.command.request_args() else {
            panic!("createOrder needs more");
        };
        assert!(!missing.contains(&"--customer-id <ID>"), "{missing:?}");
        assert!(!missing.contains(&"--type <TYPE>"), "{missing:?}");

        std::fs::write(&file, "{broken").expect("write");
        let error = admin_args(&["--json", &at_file])
            .command
            .request_args()
            .expect_err("broken file");
        assert!(
            matches!(error, AdminArgsError::JsonFile { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("order.json"), "{error}");

        let missing = format!("@{}", dir.path().join("nope.json").display());
        let error = admin_args(&["--json", &missing])
            .command
            .request_args()
            .expect_err("missing file");
        assert!(matches!(error, AdminArgsError::Read { .. }), "{error:?}");
    }

    #[test]
    fn admin_watch_output_and_exit_codes_are_documented() {
        let mut command = Cli::command();
        let admin = command.find_subcommand_mut("admin").expect("admin exists");
        let help = admin.render_long_help().to_string();
        assert!(help.contains("watch"), "{help}");
        assert!(help.contains("Exit status"), "{help}");
        assert!(help.contains("--output table"), "{help}");
        let watch = admin
            .find_subcommand_mut("watch")
            .expect("watch")
            .render_long_help()
            .to_string();
        assert!(watch.contains("--from-start"), "{watch}");
    }

    #[test]
    fn admin_json_must_be_an_object() {
        let args = admin(&["ping", "--json", "[1]"]).expect("parses");
        assert!(matches!(
            args.command.request_args(),
            Err(AdminArgsError::NotAnObject)
        ));
        assert!(matches!(
            admin(&["watch", "--from-start"]).unwrap().command,
            AdminCommand::Watch(commands::WatchArgs { from_start: true })
        ));
    }

    /// Every `recur admin ...` line of the shell examples in the user-facing docs parses.
    #[test]
    fn the_documented_admin_examples_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for doc in [
            "README.md",
            "deploy/README.md",
            "docs/OPERATIONS.md",
            "docs/WEBHOOKS.md",
        ] {
            let text = std::fs::read_to_string(root.join(doc)).expect(doc);
            let mut in_block = false;
            for line in text.lines() {
                if line.trim_start().starts_with("```") {
                    in_block = !in_block;
                    continue;
                }
                if !in_block {
                    continue;
                }
                let words = shell_words(line);
                let Some(at) = words
                    .windows(2)
                    .position(|w| (w[0].ends_with("recur") || w[0] == "$R") && w[1] == "admin")
                else {
                    continue;
                };
                let argv: Vec<&str> = std::iter::once("recur")
                    .chain(words[at + 1..].iter().map(String::as_str))
                    .collect();
                let parsed = Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("{doc}: `{line}` does not parse:\n{e}"));
                if let Command::Admin(args) = parsed.command {
                    args.command
                        .request_args()
                        .unwrap_or_else(|e| panic!("{doc}: `{line}`: {e}"));
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} examples found");
    }

    /// A shell line's words, quotes removed, up to a comment or a `|`, `&`, `;` or `>`.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' | '"' => {
                    let w = word.get_or_insert_with(String::new);
                    for q in chars.by_ref() {
                        if q == c {
                            break;
                        }
                        w.push(q);
                    }
                }
                '#' | '|' | '&' | ';' | '>' if word.is_none() => break,
                c if c.is_whitespace() => words.extend(word.take()),
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        words
    }
}
