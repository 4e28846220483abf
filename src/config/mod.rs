//! Settings: `config/default.toml` (compiled in), an optional file, `RECUR_` environment
//! variables, then command-line flags, validated once into typed values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use crate::clock::ClockMode;
use crate::domain::basket::{BasketRules, Promotion};
use crate::domain::order::{DiscountKind, OrderStatus};
use crate::store::embedded::EmbeddedOptions;
use crate::store::{RedisAccess, RedisAddress, TlsOptions, MAX_PARTITIONS};
use crate::telemetry::{self, LogFormat};

/// The built-in defaults, embedded so the binary works from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables that override settings (`RECUR_REDIS__URL`).
pub const ENV_PREFIX: &str = "RECUR_";

/// Separator of nested keys in environment variable names (`RECUR_LOG__LEVEL` = `log.level`).
pub const ENV_NESTING: &str = "__";

/// The order statuses a `[status_manager]` table may name.
pub const ORDER_STATUSES: [&str; 6] = ["DRAFT", "PENDING", "ACTIVE", "PAUSED", "ENDED", "CANCELED"];

/// `RECUR_` variables that are no settings, by prefix: the benchmarks' switches
/// (`RECUR_BENCH_AUTO_AOF_REWRITE`, ..., which reach the daemons they start).
pub const ENV_OTHER_PREFIXES: [&str; 1] = ["RECUR_BENCH_"];

/// `RECUR_` variables that are no settings, by name: the CI script's promtool
/// (`RECUR_PROMTOOL`, read by tests/deploy.rs).
pub const ENV_OTHER_NAMES: [&str; 1] = ["RECUR_PROMTOOL"];

/// Keys that are settings although config/default.toml leaves them out.
const KEYS_NOT_IN_DEFAULTS: [&str; 2] = ["webhooks.endpoints", "http.tokens"];

/// Tables whose keys are names of the user's (channels, promotion codes): any key below them
/// is accepted here and checked by their own rules.
const FREE_FORM_TABLES: [&str; 3] = ["status_manager", "promo_codes", "admin.commands"];

/// Top-level keys; the environment layer reads only `RECUR_` variables under them (the others
/// are refused by [`check_env`] unless they are among [`ENV_OTHER_PREFIXES`] and
/// [`ENV_OTHER_NAMES`]).
const TOP_LEVEL_KEYS: [&str; 16] = [
    "prefix",
    "http",
    "webhooks",
    "partitions",
    "redis",
    "clock",
    "lifecycle",
    "actors",
    "scheduler",
    "admin",
    "events",
    "cron",
    "cluster",
    "log",
    "status_manager",
    "promo_codes",
];

/// Everything the daemon and the CLI are configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Prefix of every Redis key and channel, without the colon (`recur` → `recur:admin`).
    pub prefix: String,
    /// How many partitions orders and customers are split into (1-1024), fixed when the data
    /// is first made (kept in `<prefix>:meta`).
    pub partitions: u16,
    /// Which Redis to use.
    pub redis: RedisSettings,
    /// The time source.
    pub clock: ClockSettings,
    /// Lifecycle timings the spec leaves to configuration.
    pub lifecycle: LifecycleSettings,
    /// Virtual actor residency.
    pub actors: ActorSettings,
    /// Timer loading and commit grouping.
    pub scheduler: SchedulerSettings,
    /// The admin request channel and stream.
    pub admin: AdminSettings,
    /// The event stream and channel.
    pub events: EventSettings,
    /// Health, readiness and metrics over HTTP.
    pub http: HttpSettings,
    /// Events delivered to HTTP endpoints.
    pub webhooks: WebhookSettings,
    /// Maintenance job schedules.
    pub cron: CronSettings,
    /// Several daemons on one Redis: partition leases.
    pub cluster: ClusterSettings,
    /// Logging.
    pub log: LogSettings,
    /// Status changes allowed through updateOrder: channel → from-status → to-statuses.
    #[serde(default)]
    pub status_manager: StatusManager,
    /// Promotion codes known to the pricing pipeline, by code.
    #[serde(default)]
    pub promo_codes: BTreeMap<String, PromoCode>,
}

/// Status changes allowed through updateOrder: channel → from-status → allowed to-statuses
/// (upper-case status names).
pub type StatusManager = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// `[redis]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// URL of an existing Redis; `None` (empty in config) runs the embedded one. With
    /// `cluster`, a comma-separated list of seed nodes of a Redis Cluster.
    #[serde(deserialize_with = "empty_as_none")]
    pub url: Option<String>,
    /// `url` names seed nodes of a Redis Cluster: recur uses the cluster client (SPEC 6).
    pub cluster: bool,
    /// The ACL user; wins over the URL's. `None` (empty): the URL's, else `default`.
    #[serde(default, deserialize_with = "secret_as_option")]
    pub username: Option<String>,
    /// The password; wins over the URL's. `None` (empty): the URL's, if any. Never printed.
    #[serde(default, deserialize_with = "secret_as_option")]
    pub password: Option<String>,
    /// TLS for `rediss://` URLs.
    #[serde(default)]
    pub tls: RedisTlsSettings,
    /// Sentinel mode: `master` names the monitored master, `url` lists the Sentinels.
    #[serde(default)]
    pub sentinel: SentinelSettings,
    /// How many replicas must confirm a write (`WAIT n timeout`) before it is acknowledged
    /// (SPEC 11.1); 0 = none (a failover may lose what was acknowledged).
    pub wait_replicas: u32,
    /// How long a WAIT waits for them; a WAIT that falls short answers UNAVAILABLE.
    #[serde(deserialize_with = "humane_duration")]
    pub wait_timeout: Duration,
    /// How to run the embedded Redis.
    pub embedded: EmbeddedRedisSettings,
}

/// `[redis.sentinel]` (SPEC 11.1): a non-empty `master` is Sentinel mode.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelSettings {
    /// The master's name as the Sentinels know it (`sentinel monitor <name> ...`).
    #[serde(default)]
    pub master: String,
    /// The Sentinels' own ACL user, when they need one (`RECUR_REDIS__SENTINEL__USERNAME`).
    #[serde(default, deserialize_with = "secret_as_option")]
    pub username: Option<String>,
    /// The Sentinels' own password (`RECUR_REDIS__SENTINEL__PASSWORD`). Never printed.
    #[serde(default, deserialize_with = "secret_as_option")]
    pub password: Option<String>,
}

/// The password masked.
impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| telemetry::MASK))
            .finish()
    }
}

/// The URL and the password masked.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_deref().map(telemetry::mask_secrets))
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| telemetry::MASK))
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .field("embedded", &self.embedded)
            .finish()
    }
}

/// `[redis.tls]`: TLS for `rediss://` URLs (SPEC 11.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsSettings {
    /// PEM file of the CA that signed the server's certificate; empty = the bundled Mozilla
    /// roots.
    #[serde(default, deserialize_with = "empty_as_none_path")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate (servers with `tls-auth-clients yes`), with `key_file`.
    #[serde(default, deserialize_with = "empty_as_none_path")]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default, deserialize_with = "empty_as_none_path")]
    pub key_file: Option<PathBuf>,
    /// Skip verifying the server's certificate (a warning is logged at start).
    #[serde(default)]
    pub insecure: bool,
}

impl RedisTlsSettings {
    /// Whether any TLS setting is made.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.insecure
    }
}

impl RedisSettings {
    /// The user, password and TLS settings connections use.
    pub fn access(&self) -> RedisAccess {
        RedisAccess {
            username: self.username.clone(),
            password: self.password.clone(),
            tls: TlsOptions {
                ca_file: self.tls.ca_file.clone(),
                cert_file: self.tls.cert_file.clone(),
                key_file: self.tls.key_file.clone(),
                insecure: self.tls.insecure,
            },
        }
    }
}

/// `[redis.embedded]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedRedisSettings {
    /// The redis-server program, looked up on PATH unless it is a path.
    pub binary: PathBuf,
    /// Directory of the append-only file and the log.
    pub data_dir: PathBuf,
    /// Append-only persistence (`--appendonly yes`).
    pub appendonly: bool,
}

impl EmbeddedRedisSettings {
    /// What the embedded redis-server launcher needs of these settings.
    pub fn options(&self) -> EmbeddedOptions {
        EmbeddedOptions {
            binary: self.binary.clone(),
            data_dir: self.data_dir.clone(),
            appendonly: self.appendonly,
        }
    }
}

/// `[clock]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSettings {
    /// System or simulated.
    pub mode: ClockMode,
    /// Start of a simulated clock when Redis holds no simulated time yet; `None` = now.
    #[serde(deserialize_with = "empty_as_none_instant")]
    pub start: Option<DateTime<Utc>>,
}

/// `[lifecycle]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// How long a requested payment may stay unpaid before the order is canceled.
    #[serde(deserialize_with = "humane_duration")]
    pub payment_grace_period: Duration,
    /// Delay after start-up before a grace cancellation that fell due during downtime fires.
    #[serde(deserialize_with = "humane_duration")]
    pub payment_restart_grace: Duration,
    /// `[lifecycle.dunning]`: payment retries and the final action.
    pub dunning: DunningSettings,
}

/// `[lifecycle.dunning]` (SPEC 8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DunningSettings {
    /// Retry offsets from a due's requestedDate, as written ("1d", "36h").
    pub retries: Vec<String>,
    /// CANCEL, PAUSE or KEEP.
    pub final_action: crate::domain::order::FinalAction,
}

impl LifecycleSettings {
    /// The lifecycle's rules for the pure domain.
    ///
    /// # Errors
    /// A message when the dunning retries break their rules (checked at load, so in practice
    /// none afterwards).
    pub fn policy(&self) -> Result<crate::domain::Policy, String> {
        let grace = chrono::Duration::from_std(self.payment_grace_period)
            .map_err(|_| "payment_grace_period is too long".to_string())?;
        Ok(crate::domain::Policy {
            payment_grace: grace,
            dunning: crate::domain::lifecycle::DunningRules::parse(
                &self.dunning.retries,
                self.dunning.final_action,
                grace,
            )?,
        })
    }
}

/// `[actors]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    /// Idle time after which an order actor is passivated.
    #[serde(deserialize_with = "humane_duration")]
    pub idle_passivation: Duration,
}

/// `[scheduler]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How far ahead due timers are held in memory.
    #[serde(deserialize_with = "humane_duration")]
    pub window: Duration,
    /// Most timers loaded, or commits grouped, per Redis round trip.
    pub batch_size: usize,
    /// How many round loops run at once, each over its own share of the partitions, so one
    /// lane computes while another's commits are in Redis.
    pub lanes: usize,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// How long replies are kept for idempotent retries.
    #[serde(deserialize_with = "humane_duration")]
    pub reply_retention: Duration,
    /// Largest accepted request, in bytes.
    pub max_request_bytes: usize,
    /// Where a request's channel (its application) comes from (SPEC 11.4).
    pub identity: Identity,
    /// With `identity = "enforced"`: the channels whose own request channel and stream are
    /// read (`<prefix>:admin:<channel>`, `<prefix>:commands:<channel>`).
    pub channels: Vec<String>,
    /// Per channel, the only commands it may run (`web = ["createOrder", "getOrder"]`),
    /// whichever way its requests come in; a channel not listed may run any.
    #[serde(default)]
    pub commands: BTreeMap<String, Vec<String>>,
}

/// `admin.identity` (SPEC 11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// The request's own `channel` field, as in revision 2 (whoever can publish can claim any
    /// channel).
    Declared,
    /// The channel is the one in the Redis name the request was taken from; Redis ACL users
    /// make it unforgeable.
    Enforced,
}

impl Identity {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Declared => "declared",
            Identity::Enforced => "enforced",
        }
    }
}

/// Whether `name` can be a channel (an application) in Redis names and ACL patterns: letters,
/// digits, `_`, `-` and `.`; not `dead` (`<prefix>:commands:dead` is the dead-letter stream).
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "dead"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `[cluster]`: partition leases (SPEC 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// How long a partition lease lives without renewal.
    #[serde(deserialize_with = "humane_duration")]
    pub lease_ttl: Duration,
    /// How often leases are renewed; empty = a third of `lease_ttl`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub renew_interval: Option<Duration>,
    /// This daemon's id in lease tokens and the command stream's consumer group; empty = a
    /// new random id per process.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub daemon_id: Option<String>,
}

impl ClusterSettings {
    /// The renewal interval in force.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval.unwrap_or(self.lease_ttl / 3)
    }
}

/// `[events]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// How many change entries each partition's event stream is trimmed to (so up to
    /// `partitions` x this many in all: 1,024,000 by default).
    pub max_len: u64,
    /// Whether changes are also published on the events channel.
    pub publish: bool,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `host:port` of the listener (an IP address and a port; port 0 picks a free one); empty
    /// = off.
    pub listen: String,
    /// The API's bearer tokens (SPEC 11.3), stored as their SHA-256.
    #[serde(default)]
    pub tokens: Vec<TokenSettings>,
}

/// What an API token may do (SPEC 11.3): each scope covers the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads: orders, listings, events, statistics, the clock, metrics.
    Read,
    /// Reads, and the order and customer commands.
    Write,
    /// Everything, the clock and webhook dead letters included.
    Admin,
}

impl Scope {
    /// The config and `/v1/whoami` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// One `[[http.tokens]]` (its `Debug` shows the name, channel and scope only).
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Who the token is (logs, `/v1/whoami`).
    pub name: String,
    /// Hex SHA-256 of the bearer token (`printf %s "$TOKEN" | sha256sum`); the token itself
    /// is never in the configuration.
    pub sha256: String,
    /// The application the token's requests come from (updateOrder's status manager,
    /// `[admin.commands]`).
    pub channel: String,
    /// What the token may do.
    pub scope: Scope,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field("name", &self.name)
            .field("sha256", &"***")
            .field("channel", &self.channel)
            .field("scope", &self.scope)
            .finish()
    }
}

/// `[webhooks]` and its `[[webhooks.endpoints]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// How long one delivery attempt may take.
    #[serde(deserialize_with = "humane_duration")]
    pub timeout: Duration,
    /// The pause after the first failed attempt; it doubles after each further one.
    #[serde(deserialize_with = "humane_duration")]
    pub retry_initial: Duration,
    /// The longest pause between attempts.
    #[serde(deserialize_with = "humane_duration")]
    pub retry_max: Duration,
    /// How long after its first attempt an event is retried before it is dead-lettered.
    #[serde(deserialize_with = "humane_duration")]
    pub max_age: Duration,
    /// Deliveries in flight at once per endpoint (each to another order).
    pub max_in_flight: usize,
    /// Where events go.
    #[serde(default)]
    pub endpoints: Vec<EndpointSettings>,
}

/// One `[[webhooks.endpoints]]` (its `Debug` leaves the secret out).
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// The endpoint's name in Redis keys, dead letters and metrics; default: the URL.
    #[serde(default)]
    pub id: Option<String>,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The HMAC-SHA256 key of `Recur-Signature`.
    pub secret: String,
    /// Event types to deliver (`orderCreated`, ...), or `["*"]` for every one.
    pub events: Vec<String>,
    /// Also deliver the events of test-clock orders (SPEC 11.2, 11.5); default false.
    #[serde(default)]
    pub test_clocks: bool,
}

/// The secret and the URL's password masked.
impl std::fmt::Debug for EndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSettings")
            .field("id", &self.id)
            .field("url", &telemetry::mask_secrets(&self.url))
            .field("secret", &telemetry::MASK)
            .field("events", &self.events)
            .field("test_clocks", &self.test_clocks)
            .finish()
    }
}

impl EndpointSettings {
    /// The endpoint's id: `id`, else the URL (with a password in it masked: set when the
    /// settings load).
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.url)
    }

    /// Whether events of `event_type` go to this endpoint.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event_type)
    }
}

/// The built-in `http.listen`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";

/// Where the HTTP listener listens, as the settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    /// `http.listen` is empty: no listener.
    Off,
    /// The built-in default: skipped with a warning when taken (a second daemon on one host).
    Default(std::net::SocketAddr),
    /// Set in the configuration: an address that cannot be bound stops start-up.
    Configured(std::net::SocketAddr),
}

impl HttpSettings {
    /// The listener to start. Validated when the settings loaded; an address that no longer
    /// parses counts as off.
    pub fn listen(&self) -> HttpListen {
        let listen = self.listen.trim();
        match listen.parse() {
            _ if listen.is_empty() => HttpListen::Off,
            Ok(addr) if listen == DEFAULT_HTTP_LISTEN => HttpListen::Default(addr),
            Ok(addr) => HttpListen::Configured(addr),
            Err(_) => HttpListen::Off,
        }
    }
}

/// `[cron]`: maintenance schedules (UTC, with seconds), run on the daemon's `Clock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSettings {
    /// When the event stream is trimmed to `events.max_len`.
    #[serde(deserialize_with = "cron_schedule")]
    pub trim_events: cron::Schedule,
    /// When customer statistics are checked against a recomputation.
    #[serde(deserialize_with = "cron_schedule")]
    pub reconcile_stats: cron::Schedule,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Human or JSON lines.
    pub format: LogFormat,
    /// A tracing filter directive (`info`, `recur=debug,warn`).
    pub level: String,
}

/// One `[promo_codes.<CODE>]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoCode {
    /// Percentage off, or a fixed amount off.
    pub kind: PromoKind,
    /// The percentage (0-100) or the amount in the order's currency; a decimal string.
    pub value: Decimal,
    /// Applies to the first N cycles only; `None` = every cycle.
    #[serde(default)]
    pub first_cycles: Option<u32>,
    /// The code stops applying at this instant; `None` = never.
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
}

/// How a promo code's `value` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromoKind {
    /// `value` percent of the price.
    Percent,
    /// `value` in the order's currency.
    Fixed,
}

/// Values given on the command line, applied over every other layer. `None` leaves a setting
/// as the lower layers have it.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: a TOML file layered over the defaults.
    pub config_file: Option<PathBuf>,
    /// `--redis-url`
    pub redis_url: Option<String>,
    /// `--redis-cluster` (`Some(true)` when given).
    pub redis_cluster: Option<bool>,
    /// `--prefix`
    pub prefix: Option<String>,
    /// `--clock`
    pub clock_mode: Option<ClockMode>,
    /// `--clock-start` (RFC 3339, checked like `clock.start`).
    pub clock_start: Option<String>,
    /// `--http-listen` (empty = off).
    pub http_listen: Option<String>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that does not exist.
    #[error("config file `{}` not found", path.display())]
    FileNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// A source could not be read or parsed as a whole (e.g. a TOML syntax error).
    #[error("cannot read settings from {origin}: {message}")]
    Unreadable {
        /// Which source: a file, the defaults, the environment.
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// A `RECUR_` environment variable names no setting (a typo would otherwise be ignored).
    #[error(
        "unknown environment variable {variable}: {}",
        match suggestion {
            Some(s) => format!("did you mean {s}? (nested keys are joined with __)"),
            None => "no setting is named like it (config/default.toml lists them; nested \
                     keys are joined with __, as in RECUR_REDIS__URL)".to_string(),
        }
    )]
    UnknownEnv {
        /// The variable, as set.
        variable: String,
        /// The nearest variable that names a setting.
        suggestion: Option<String>,
    },
    /// One setting has a wrong type or value.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `clock.mode`.
        key: String,
        /// What is wrong with it, and where the value came from.
        message: String,
    },
}

impl Settings {
    /// A fingerprint of the settings that decide behaviour (SPEC 10: partitions, lifecycle,
    /// status manager, promotion codes): daemons of one group must agree on it. A canonical
    /// JSON of those settings, hashed (UUID v5).
    pub fn behaviour_fingerprint(&self) -> String {
        let promo: BTreeMap<&String, serde_json::Value> = self
            .promo_codes
            .iter()
            .map(|(code, p)| {
                let kind = match p.kind {
                    PromoKind::Percent => "percent",
                    PromoKind::Fixed => "fixed",
                };
                let expires = p.expires.map(|t| t.timestamp_millis());
                let v = serde_json::json!({"kind": kind, "value": p.value.normalize().to_string(), "firstCycles": p.first_cycles, "expires": expires});
                (code, v)
            })
            .collect();
        let canonical = serde_json::json!({
            "partitions": self.partitions,
            "lifecycle": {
                "paymentGracePeriodMs": self.lifecycle.payment_grace_period.as_millis() as u64,
                "paymentRestartGraceMs": self.lifecycle.payment_restart_grace.as_millis() as u64,
                "dunning": {
                    "retries": self.lifecycle.dunning.retries,
                    "finalAction": self.lifecycle.dunning.final_action,
                },
            },
            "statusManager": self.status_manager,
            "promoCodes": promo,
            // Secrets are left out: they can be rotated one daemon at a time.
            "webhooks": {
                "timeoutMs": self.webhooks.timeout.as_millis() as u64,
                "retryInitialMs": self.webhooks.retry_initial.as_millis() as u64,
                "retryMaxMs": self.webhooks.retry_max.as_millis() as u64,
                "maxAgeMs": self.webhooks.max_age.as_millis() as u64,
                "endpoints": self.webhooks.endpoints.iter().map(|e| serde_json::json!({
                    "id": e.id(), "url": e.url, "events": e.events,
                })).collect::<Vec<_>>(),
            },
        });
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, canonical.to_string().as_bytes())
            .simple()
            .to_string()
    }

    /// Loads the layered settings: defaults, `overrides.config_file`, `RECUR_` environment
    /// variables, then the other overrides; and validates them.
    ///
    /// # Errors
    /// [`ConfigError::FileNotFound`] for a missing `--config` file, [`ConfigError::Unreadable`]
    /// for an unparsable source, [`ConfigError::Invalid`] naming the first bad key.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        Settings::from_figment(layers(overrides)?)
    }

    /// The built-in defaults alone (no file, environment or flags).
    ///
    /// # Errors
    /// Only if `config/default.toml` itself is broken.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Settings::from_figment(Figment::from(Toml::string(DEFAULT_TOML)))
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let mut settings: Settings = figment.extract().map_err(ConfigError::from_figment)?;
        settings.normalize();
        settings.validate()?;
        Ok(settings)
    }

    /// The status manager and promotion codes of `settings`, as the domain's plain values. Status
    /// names were validated when the settings loaded.
    pub fn basket_rules(&self) -> BasketRules {
        let mut rules = BasketRules::default();
        for (channel, table) in &self.status_manager {
            for (from, tos) in table {
                let Some(from) = OrderStatus::parse(from) else {
                    continue;
                };
                for to in tos.iter().filter_map(|t| OrderStatus::parse(t)) {
                    rules.statuses.allow(channel, from, to);
                }
            }
        }
        for (code, p) in &self.promo_codes {
            let kind = match p.kind {
                PromoKind::Percent => DiscountKind::Percent,
                PromoKind::Fixed => DiscountKind::Fixed,
            };
            rules.promotions.insert(
                code.clone(),
                Promotion {
                    kind,
                    value: p.value,
                    first_cycles: p.first_cycles,
                    expires: p.expires,
                },
            );
        }
        rules
    }

    /// Whether recur must start its own redis-server (no `redis.url`).
    pub fn uses_embedded_redis(&self) -> bool {
        self.redis.url.is_none()
    }

    /// What commits wait for (`redis.wait_replicas` and `redis.wait_timeout`); `None` when
    /// `wait_replicas` is 0.
    pub fn redis_wait(&self) -> Option<crate::store::WaitFor> {
        (self.redis.wait_replicas > 0).then(|| crate::store::WaitFor {
            replicas: self.redis.wait_replicas,
            timeout_ms: u64::try_from(self.redis.wait_timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        })
    }

    /// The configured Redis (`redis.url` read with `redis.cluster`); `None` = the embedded one.
    /// Validated when the settings loaded.
    pub fn redis_address(&self) -> Option<RedisAddress> {
        let url = self.redis.url.as_deref()?;
        if !self.redis.sentinel.master.is_empty() {
            let sentinels = url.split(',').map(|u| u.trim().to_string()).collect();
            let s = &self.redis.sentinel;
            return Some(
                RedisAddress::sentinel(
                    &s.master,
                    sentinels,
                    s.username.clone(),
                    s.password.clone(),
                )
                .with_access(self.redis.access()),
            );
        }
        // Checked by `validate`; a URL that changed since is used as given.
        let address = RedisAddress::parse(url, self.redis.cluster).unwrap_or_else(|_| {
            if self.redis.cluster {
                RedisAddress::cluster(url.split(',').map(str::to_string).collect())
            } else {
                RedisAddress::single(url.to_string())
            }
        });
        Some(address.with_access(self.redis.access()))
    }

    /// Status names in `[status_manager]` are upper-case; environment variables arrive
    /// lower-cased, so accept any case.
    fn normalize(&mut self) {
        // An endpoint's id names it in Redis keys, metrics and logs: without an `id`, a URL
        // with a password (`https://user:pass@host`) gives its masked form.
        for e in &mut self.webhooks.endpoints {
            if e.id.is_none() {
                let masked = telemetry::mask_secrets(&e.url);
                if masked != e.url {
                    e.id = Some(masked.into_owned());
                }
            }
        }
        for transitions in self.status_manager.values_mut() {
            *transitions = std::mem::take(transitions)
                .into_iter()
                .map(|(from, to)| {
                    let to = to.into_iter().map(|s| s.to_ascii_uppercase()).collect();
                    (from.to_ascii_uppercase(), to)
                })
                .collect();
        }
    }
}

mod sources;
mod validate;

pub use crate::domain::time::parse_duration;
pub use sources::check_env;
use sources::*;

#[cfg(test)]
// figment::Jail's closures must return figment::Error, whatever its size.
#[allow(clippy::result_large_err)]
mod tests;
