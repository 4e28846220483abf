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
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let w = &self.webhooks;
        if w.timeout.is_zero() || w.retry_initial.is_zero() || w.max_age.is_zero() {
            return Err(invalid(
                "webhooks",
                "timeout, retry_initial and max_age must be above zero",
            ));
        }
        if w.retry_max < w.retry_initial {
            return Err(invalid(
                "webhooks.retry_max",
                "must not be below retry_initial",
            ));
        }
        if w.max_in_flight == 0 {
            return Err(invalid("webhooks.max_in_flight", "must be at least 1"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, e) in w.endpoints.iter().enumerate() {
            let key = |k: &str| format!("webhooks.endpoints[{i}].{k}");
            let scheme_ok = e.url.starts_with("http://") || e.url.starts_with("https://");
            if !scheme_ok || e.url.len() <= "https://".len() || e.url.contains(char::is_whitespace)
            {
                return Err(invalid(
                    &key("url"),
                    format!(
                        "'{}' is not an http:// or https:// URL",
                        telemetry::mask_secrets(&e.url)
                    ),
                ));
            }
            if e.secret.is_empty() {
                return Err(invalid(&key("secret"), "must not be empty"));
            }
            let id = e.id();
            if id.is_empty()
                || id
                    .chars()
                    .any(|c| c.is_whitespace() || c == '{' || c == '}')
            {
                return Err(invalid(
                    &key("id"),
                    "must be non-empty, without spaces or braces",
                ));
            }
            if !ids.insert(id.to_string()) {
                return Err(invalid(&key("id"), format!("'{id}' names two endpoints")));
            }
            if e.events.is_empty() {
                return Err(invalid(
                    &key("events"),
                    "name event types, or [\"*\"] for every one",
                ));
            }
            for t in &e.events {
                let known = t == "*"
                    || serde_json::from_value::<crate::domain::EventType>(serde_json::json!(t))
                        .is_ok();
                if !known {
                    return Err(invalid(
                        &key("events"),
                        format!("'{t}' is not an event type"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `admin.identity`, `admin.channels`, `[admin.commands]` and `[[http.tokens]]`.
    fn validate_identities(&self) -> Result<(), ConfigError> {
        let channel_rule = "a channel name is letters, digits, '_', '-' and '.' (at most 64), \
                            and not 'dead'";
        let a = &self.admin;
        for (i, c) in a.channels.iter().enumerate() {
            if !valid_channel_name(c) {
                return Err(invalid(
                    &format!("admin.channels[{i}]"),
                    format!("'{c}': {channel_rule}"),
                ));
            }
            if a.channels[..i].contains(c) {
                return Err(invalid(
                    &format!("admin.channels[{i}]"),
                    format!("'{c}' is listed twice"),
                ));
            }
        }
        if a.identity == Identity::Enforced && a.channels.is_empty() {
            return Err(invalid(
                "admin.channels",
                "admin.identity = \"enforced\" reads only the channels listed here; \
                 name at least one (e.g. [\"web\", \"backoffice\"])",
            ));
        }
        for (channel, commands) in &a.commands {
            if !valid_channel_name(channel) {
                return Err(invalid(
                    &format!("admin.commands.{channel}"),
                    channel_rule.to_string(),
                ));
            }
            if let Some(bad) = commands
                .iter()
                .find(|c| !crate::wire::COMMAND_NAMES.contains(&c.as_str()))
            {
                return Err(invalid(
                    &format!("admin.commands.{channel}"),
                    format!("'{bad}' is not an admin command"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut digests = std::collections::BTreeSet::new();
        for (i, t) in self.http.tokens.iter().enumerate() {
            let key = |k: &str| format!("http.tokens[{i}].{k}");
            if t.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    format!("'{}' names two tokens", t.name),
                ));
            }
            // The digest is not echoed: it is no secret, but it is not the reader's business.
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid(
                    &key("sha256"),
                    "must be the 64 hex digits of the token's SHA-256 \
                     (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
            if !digests.insert(t.sha256.to_ascii_lowercase()) {
                return Err(invalid(
                    &key("sha256"),
                    "another token has the same SHA-256",
                ));
            }
            if !valid_channel_name(&t.channel) {
                return Err(invalid(&key("channel"), channel_rule.to_string()));
            }
        }
        Ok(())
    }

    /// `[redis.tls]` goes with `rediss://` URLs, a client certificate with its key.
    fn validate_redis_tls(&self, address: &RedisAddress) -> Result<(), ConfigError> {
        let tls = &self.redis.tls;
        if tls.is_set() && !address.uses_tls() {
            return Err(invalid(
                "redis.tls",
                "is set but redis.url is not a rediss:// URL: use rediss:// for TLS (or \
                 remove the redis.tls settings)",
            ));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let key = if tls.cert_file.is_some() {
                "redis.tls.key_file"
            } else {
                "redis.tls.cert_file"
            };
            return Err(invalid(
                key,
                "redis.tls.cert_file and redis.tls.key_file go together (a client certificate \
                 and its private key)",
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty()
            || self.prefix.ends_with(':')
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c == '{' || c == '}')
        {
            return Err(invalid(
                "prefix",
                "must be non-empty, without spaces, braces ({ }) and the trailing colon",
            ));
        }
        self.lifecycle
            .policy()
            .map_err(|message| invalid("lifecycle.dunning.retries", message))?;
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(invalid(
                "partitions",
                format!("must be between 1 and {MAX_PARTITIONS}"),
            ));
        }
        self.validate_redis()?;
        self.validate_webhooks()?;
        let listen = self.http.listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                format!("'{listen}' is not an IP address and port (127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464) or empty"),
            ));
        }
        if self.redis.embedded.binary.as_os_str().is_empty() {
            return Err(invalid("redis.embedded.binary", "must not be empty"));
        }
        if self.redis.embedded.data_dir.as_os_str().is_empty() {
            return Err(invalid("redis.embedded.data_dir", "must not be empty"));
        }
        self.validate_timings()?;
        if self.scheduler.batch_size == 0 {
            return Err(invalid("scheduler.batch_size", "must be at least 1"));
        }
        // More lanes than partitions run as one lane per partition (see scheduler::lanes).
        if self.scheduler.lanes == 0 {
            return Err(invalid("scheduler.lanes", "must be at least 1"));
        }
        if self.admin.max_request_bytes == 0 {
            return Err(invalid("admin.max_request_bytes", "must be at least 1"));
        }
        self.validate_identities()?;
        if self.events.max_len == 0 {
            return Err(invalid("events.max_len", "must be at least 1"));
        }
        telemetry::check_level(&self.log.level).map_err(|message| invalid("log.level", message))?;
        self.validate_behaviour()
    }

    /// The Redis settings: one mode (single, cluster, Sentinel), addresses that parse, TLS
    /// files that load, and what the embedded Redis cannot do refused.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let sentinel = !self.redis.sentinel.master.is_empty();
        if sentinel && self.redis.cluster {
            return Err(invalid(
                "redis.sentinel.master",
                "Sentinel mode and redis.cluster = true are exclusive: a Redis Cluster fails \
                 over by itself",
            ));
        }
        if sentinel && self.redis.url.is_none() {
            return Err(invalid(
                "redis.sentinel.master",
                "Sentinel mode needs redis.url to list the Sentinels \
                 (redis://s1:26379,redis://s2:26379)",
            ));
        }
        match &self.redis.url {
            Some(url) if sentinel => {
                for (i, u) in url.split(',').enumerate() {
                    RedisAddress::parse(u.trim(), false).map_err(|message| {
                        invalid("redis.url", format!("Sentinel {}: {message}", i + 1))
                    })?;
                }
                let address = self
                    .redis_address()
                    .ok_or_else(|| invalid("redis.url", "is empty"))?;
                self.validate_redis_tls(&address)?;
            }
            Some(url) => {
                let address = RedisAddress::parse(url, self.redis.cluster)
                    .map_err(|message| invalid("redis.url", message))?;
                self.validate_redis_tls(&address)?;
            }
            None if self.redis.password.is_some() || self.redis.username.is_some() => {
                let key = if self.redis.password.is_some() {
                    "redis.password"
                } else {
                    "redis.username"
                };
                return Err(invalid(
                    key,
                    "needs redis.url: the embedded Redis (empty redis.url) listens on a private \
                     unix socket without a password",
                ));
            }
            None if self.redis.tls.is_set() => {
                return Err(invalid(
                    "redis.tls",
                    "needs a rediss:// redis.url: the embedded Redis (empty redis.url) does \
                     not use TLS",
                ));
            }
            None if self.redis.cluster => {
                return Err(invalid(
                    "redis.cluster",
                    "needs redis.url set to the cluster's seed nodes, comma-separated \
                     (redis://host:port,redis://host:port): the embedded Redis (empty \
                     redis.url) is a single server and cannot be a cluster",
                ));
            }
            None => {}
        }
        if self.redis.wait_replicas > 0 {
            if self.redis.url.is_none() {
                return Err(invalid(
                    "redis.wait_replicas",
                    "needs redis.url: the embedded Redis has no replicas, so every write would \
                     wait for replicas that never come (0 = do not wait)",
                ));
            }
            if self.redis.wait_timeout.is_zero() {
                return Err(invalid(
                    "redis.wait_timeout",
                    "must be longer than zero (a WAIT without a timeout would block forever)",
                ));
            }
        }
        Ok(())
    }

    /// Durations that must be positive, and the lease timing (renewal at most half the TTL).
    fn validate_timings(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("actors.idle_passivation", self.actors.idle_passivation),
            ("scheduler.window", self.scheduler.window),
            ("admin.reply_retention", self.admin.reply_retention),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if self.cluster.lease_ttl < Duration::from_millis(100) {
            return Err(invalid("cluster.lease_ttl", "must be at least 100ms"));
        }
        let renew = self.cluster.renew_interval();
        if renew.is_zero() || renew * 2 > self.cluster.lease_ttl {
            return Err(invalid(
                "cluster.renew_interval",
                "must be longer than zero and at most half of cluster.lease_ttl",
            ));
        }
        if self
            .cluster
            .daemon_id
            .as_deref()
            .is_some_and(|id| id.contains(':') || id.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "cluster.daemon_id",
                "may not contain ':' or spaces",
            ));
        }
        Ok(())
    }

    /// The behaviour settings: status-manager transitions between real statuses, promo
    /// codes with sensible values.
    fn validate_behaviour(&self) -> Result<(), ConfigError> {
        for (channel, transitions) in &self.status_manager {
            for (from, to) in transitions {
                let key = format!("status_manager.{channel}.{from}");
                if let Some(bad) = std::iter::once(from)
                    .chain(to)
                    .find(|s| !ORDER_STATUSES.contains(&s.as_str()))
                {
                    return Err(invalid(
                        &key,
                        format!(
                            "`{bad}` is not an order status (one of {})",
                            ORDER_STATUSES.join(", ")
                        ),
                    ));
                }
            }
        }
        for (code, promo) in &self.promo_codes {
            let key = format!("promo_codes.{code}");
            if promo.value.is_sign_negative() {
                return Err(invalid(&format!("{key}.value"), "must not be negative"));
            }
            if promo.kind == PromoKind::Percent && promo.value > Decimal::ONE_HUNDRED {
                return Err(invalid(
                    &format!("{key}.value"),
                    "a percentage is at most 100",
                ));
            }
            if promo.first_cycles == Some(0) {
                return Err(invalid(
                    &format!("{key}.first_cycles"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

/// The layers in precedence order, last wins.
fn layers(overrides: &Overrides) -> Result<Figment, ConfigError> {
    check_env(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = &overrides.config_file {
        if !path.is_file() {
            return Err(ConfigError::FileNotFound { path: path.clone() });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(env_layer());
    // Secrets as they are written: the environment layer reads values as TOML-like
    // (`123` a number, `1.50` the float 1.5), which would change a password.
    for (key, value) in raw_env_secrets() {
        figment = figment.merge(Serialized::default(&key, value));
    }
    if let Some(url) = &overrides.redis_url {
        figment = figment.merge(Serialized::default("redis.url", url));
    }
    if let Some(cluster) = overrides.redis_cluster {
        figment = figment.merge(Serialized::default("redis.cluster", cluster));
    }
    if let Some(prefix) = &overrides.prefix {
        figment = figment.merge(Serialized::default("prefix", prefix));
    }
    if let Some(mode) = overrides.clock_mode {
        figment = figment.merge(Serialized::default("clock.mode", mode));
    }
    if let Some(start) = &overrides.clock_start {
        figment = figment.merge(Serialized::default("clock.start", start));
    }
    if let Some(listen) = &overrides.http_listen {
        figment = figment.merge(Serialized::default("http.listen", listen));
    }
    Ok(figment)
}

/// Settings read from the environment as raw strings ([`raw_env_secrets`]), not by
/// [`env_layer`].
const RAW_ENV_KEYS: [&str; 4] = [
    "redis.password",
    "redis.username",
    "redis.sentinel.password",
    "redis.sentinel.username",
];

/// `RECUR_SECTION__KEY=value`, limited to recur's own top-level keys.
fn env_layer() -> Env {
    Env::prefixed(ENV_PREFIX).split(ENV_NESTING).filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        // Keys keep the variable's case here; Env lower-cases them later.
        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
            && !RAW_ENV_KEYS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key.as_str()))
    })
}

/// Every setting's dotted key (`redis.embedded.data_dir`), tables included (`redis`), from the
/// built-in defaults.
fn setting_keys() -> Vec<String> {
    fn walk(prefix: &str, dict: &figment::value::Dict, keys: &mut Vec<String>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let figment::value::Value::Dict(_, inner) = value {
                walk(&path, inner, keys);
            }
            keys.push(path);
        }
    }
    let mut keys: Vec<String> = KEYS_NOT_IN_DEFAULTS.iter().map(|k| k.to_string()).collect();
    // The defaults are compiled in and tested: they always parse.
    let defaults: figment::value::Dict = Figment::from(Toml::string(DEFAULT_TOML))
        .extract()
        .unwrap_or_default();
    walk("", &defaults, &mut keys);
    keys
}

/// The environment variable that sets `key` (`redis.url` → `RECUR_REDIS__URL`).
fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', ENV_NESTING).to_ascii_uppercase()
    )
}

/// Refuses a `RECUR_` variable that names no setting (and is none of the variables recur reads
/// besides settings), naming the nearest one: `RECUR_REDIS_URL` would otherwise be ignored and
/// the daemon run on the embedded Redis.
///
/// # Errors
/// [`ConfigError::UnknownEnv`] for the first such variable (in name order).
pub fn check_env(names: impl IntoIterator<Item = String>) -> Result<(), ConfigError> {
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| n.to_ascii_uppercase().starts_with(ENV_PREFIX))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let keys = setting_keys();
    let known: Vec<String> = keys.iter().map(|k| env_name(k)).collect();
    for name in names {
        let upper = name.to_ascii_uppercase();
        let other = ENV_OTHER_NAMES.contains(&upper.as_str())
            || ENV_OTHER_PREFIXES.iter().any(|p| upper.starts_with(p));
        let free_form = FREE_FORM_TABLES
            .iter()
            .any(|t| upper.starts_with(&format!("{}{ENV_NESTING}", env_name(t))));
        if other || free_form || known.contains(&upper) {
            continue;
        }
        let suggestion = nearest(&upper, known.iter().map(String::as_str))
            .filter(|(_, distance)| *distance <= upper.len().saturating_sub(ENV_PREFIX.len()) / 2)
            .map(|(s, _)| s.to_string());
        return Err(ConfigError::UnknownEnv {
            variable: name,
            suggestion,
        });
    }
    Ok(())
}

/// The candidate nearest to `word` (fewest single-character edits), with its distance.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<(&'a str, usize)> {
    candidates
        .map(|c| (c, edit_distance(word, c)))
        .min_by_key(|(_, d)| *d)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `a`, `a` or `b`, one of `a`, `b`, `c` (each once in backticks).
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}

/// figment's message for an error, without its nested backticks (`expected `one of `a``), and
/// with the nearest name for an unknown key or value.
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let hint = |found: &str, expected: &[&str]| match nearest(found, expected.iter().copied()) {
        Some((near, d)) if d <= found.len().max(2) / 2 => format!(": did you mean `{near}`?"),
        _ => String::new(),
    };
    match kind {
        Kind::UnknownField(found, expected) => format!(
            "unknown key `{found}`{} (expected {})",
            hint(found, expected),
            one_of(expected)
        ),
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value `{found}`{} (expected {})",
            hint(found, expected),
            one_of(expected)
        ),
        other => other.to_string(),
    }
}

/// `RECUR_REDIS__PASSWORD` and `RECUR_REDIS__USERNAME` as (key, the value unchanged).
fn raw_env_secrets() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.to_str()?;
            let rest = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])?;
            let key = rest.replace(ENV_NESTING, ".").to_ascii_lowercase();
            RAW_ENV_KEYS
                .contains(&key.as_str())
                .then(|| (key, value.to_string_lossy().into_owned()))
        })
        .collect()
}

impl ConfigError {
    fn from_figment(error: figment::Error) -> ConfigError {
        let origin = match &error.metadata {
            // Name the variable itself: RECUR_ + the key path joined by the nesting separator.
            Some(md) if md.name.contains("environment") && !error.path.is_empty() => format!(
                "environment variable {ENV_PREFIX}{}",
                error.path.join(ENV_NESTING).to_ascii_uppercase()
            ),
            Some(md) if md.name.ends_with("source string") => "the built-in defaults".to_string(),
            Some(md) => match &md.source {
                Some(figment::Source::File(path)) => format!("{} {}", md.name, path.display()),
                // Serialized overrides are the only providers defined in code.
                Some(figment::Source::Code(_)) | None => "the command line".to_string(),
                Some(source) => format!("{} {source}", md.name),
            },
            None => "the command line".to_string(),
        };
        let message = describe_kind(&error.kind);
        if error.path.is_empty() {
            ConfigError::Unreadable { origin, message }
        } else {
            ConfigError::Invalid {
                key: error.path.join("."),
                message: format!("{message} (from {origin})"),
            }
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

pub use crate::domain::time::parse_duration;

fn humane_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn empty_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

fn empty_as_none_path<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    Ok(empty_as_none(deserializer)?.map(PathBuf::from))
}

/// A user name or password: any string, `None` when empty (spaces are kept: they may be part
/// of a password). Anything but a string is refused without repeating the value.
fn secret_as_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct Secret;
    impl serde::de::Visitor<'_> for Secret {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()).filter(|v| !v.is_empty()))
        }
    }
    deserializer
        .deserialize_str(Secret)
        .map_err(|_: D::Error| serde::de::Error::custom("must be a string (quote it)"))
}

fn empty_as_none_instant<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 instant: {e}")))
}

fn cron_schedule<'de, D: Deserializer<'de>>(deserializer: D) -> Result<cron::Schedule, D::Error> {
    let text = String::deserialize(deserializer)?;
    cron::Schedule::from_str(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a cron expression (sec min hour day month weekday): {e}"
        ))
    })
}

#[cfg(test)]
// figment::Jail's closures must return figment::Error, whatever its size.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// Runs `f` in a figment `Jail`: a global lock, a scratch working directory, and
    /// environment changes undone afterwards. Every test here that reads the environment
    /// goes through it, so tests setting `RECUR_` variables never affect each other.
    fn jailed(f: impl FnOnce(&mut Jail) -> Result<(), figment::Error>) {
        Jail::expect_with(f);
    }

    #[test]
    fn an_endpoint_s_debug_form_leaves_its_secret_out() {
        let ep = EndpointSettings {
            id: Some("billing".into()),
            url: "https://billing.example/recur".into(),
            secret: "whsec_do_not_print".into(),
            events: vec!["*".into()],
            test_clocks: false,
        };
        let printed = format!("{ep:?} {:?}", vec![ep.clone()]);
        assert!(!printed.contains("whsec_do_not_print"), "{printed}");
        assert!(printed.contains("billing.example") && printed.contains("***"));
    }

    #[test]
    fn webhook_endpoints_come_from_a_file_or_the_environment_and_are_checked() {
        jailed(|jail| {
            jail.set_env(
                "RECUR_WEBHOOKS__ENDPOINTS",
                r#"[{id="b", url="http://127.0.0.1:9/hook", secret="s", events=["*"]}]"#,
            );
            let s = Settings::load(&Overrides::default()).expect("valid endpoints");
            assert_eq!(s.webhooks.endpoints.len(), 1);
            assert_eq!(s.webhooks.endpoints[0].id(), "b");
            assert!(s.webhooks.endpoints[0].wants("orderCreated"));
            jail.create_file(
                "hooks.toml",
                "[[webhooks.endpoints]]\nurl = \"https://x.example/h\"\nsecret = \"s\"\nevents = [\"orderCreated\"]\n",
            )?;
            jail.set_env("RECUR_WEBHOOKS__ENDPOINTS", "[]");
            let file = Overrides {
                config_file: Some("hooks.toml".into()),
                ..Overrides::default()
            };
            // The environment wins over the file.
            assert!(Settings::load(&file).unwrap().webhooks.endpoints.is_empty());
            Ok(())
        });
        jailed(|jail| {
            let cases = [
                (
                    r#"[{url="ftp://x", secret="s", events=["*"]}]"#,
                    "webhooks.endpoints[0].url",
                ),
                (
                    r#"[{url="http://x/h", secret="", events=["*"]}]"#,
                    "webhooks.endpoints[0].secret",
                ),
                (
                    r#"[{url="http://x/h", secret="s", events=["orderExploded"]}]"#,
                    "webhooks.endpoints[0].events",
                ),
                (
                    r#"[{url="http://x/h", secret="s", events=[]}]"#,
                    "webhooks.endpoints[0].events",
                ),
                (
                    r#"[{url="http://x/h", secret="s", events=["*"]}, {url="http://x/h", secret="t", events=["*"]}]"#,
                    "webhooks.endpoints[1].id",
                ),
            ];
            for (value, key) in cases {
                jail.set_env("RECUR_WEBHOOKS__ENDPOINTS", value);
                assert_invalid_key(load_err(&Overrides::default()), key);
            }
            jail.set_env("RECUR_WEBHOOKS__ENDPOINTS", "[]");
            jail.set_env("RECUR_WEBHOOKS__RETRY_MAX", "1s");
            assert_invalid_key(load_err(&Overrides::default()), "webhooks.retry_max");
            Ok(())
        });
    }

    fn load_err(overrides: &Overrides) -> ConfigError {
        match Settings::load(overrides) {
            Ok(settings) => panic!("expected an error, loaded {settings:?}"),
            Err(e) => e,
        }
    }

    fn assert_invalid_key(error: ConfigError, expected: &str) {
        match &error {
            ConfigError::Invalid { key, .. } if key == expected => {
                assert!(error.to_string().contains(expected), "{error}");
            }
            other => panic!("expected an invalid `{expected}`, got {other:?}"),
        }
    }

    #[test]
    fn defaults_load() {
        jailed(|_| {
            let s = Settings::load(&Overrides::default()).expect("defaults are valid");
            assert_eq!(s.prefix, "recur");
            assert!(s.uses_embedded_redis());
            assert!(!s.redis.cluster);
            assert_eq!(s.redis_address(), None);
            assert_eq!(s.redis.embedded.binary, PathBuf::from("redis-server"));
            assert_eq!(s.redis.embedded.data_dir, PathBuf::from("data/redis"));
            assert!(s.redis.embedded.appendonly);
            assert_eq!(s.clock.mode, ClockMode::System);
            assert_eq!(s.clock.start, None);
            assert_eq!(
                s.lifecycle.payment_grace_period,
                Duration::from_secs(72 * 3600)
            );
            assert_eq!(s.lifecycle.payment_restart_grace, Duration::from_secs(3600));
            assert_eq!(s.actors.idle_passivation, Duration::from_secs(60));
            assert_eq!(s.scheduler.window, Duration::from_secs(60));
            assert_eq!(s.scheduler.batch_size, 1024);
            assert_eq!(s.scheduler.lanes, 16);
            assert_eq!(s.admin.reply_retention, Duration::from_secs(24 * 3600));
            assert_eq!(s.admin.max_request_bytes, 1_048_576);
            assert_eq!(s.events.max_len, 16_000);
            assert_eq!(
                u64::from(s.partitions) * s.events.max_len,
                1_024_000,
                "about a million changes retained by default (docs/DECISIONS.md)"
            );
            assert!(s.events.publish);
            assert_eq!(s.cron.trim_events.to_string(), "0 */5 * * * *");
            assert_eq!(s.cron.reconcile_stats.to_string(), "0 0 * * * *");
            assert_eq!(s.log.format, LogFormat::Human);
            assert_eq!(s.log.level, "info");
            assert!(s.status_manager.is_empty());
            assert!(s.promo_codes.is_empty());
            Ok(())
        });
    }

    #[test]
    fn defaults_without_environment_match() {
        let s = Settings::defaults().expect("defaults are valid");
        assert_eq!(s.prefix, "recur");
    }

    #[test]
    fn env_overrides_defaults_and_nests_with_double_underscore() {
        jailed(|jail| {
            jail.set_env("RECUR_REDIS__URL", "redis://127.0.0.1:7000/0");
            jail.set_env("RECUR_SCHEDULER__BATCH_SIZE", "16");
            jail.set_env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "4d");
            jail.set_env("RECUR_LIFECYCLE__DUNNING__FINAL_ACTION", "PAUSE");
            jail.set_env("RECUR_LOG__FORMAT", "json");
            // Read by the benchmarks and the CI script, not settings: allowed.
            jail.set_env("RECUR_BENCH_AUTO_AOF_REWRITE", "off");
            jail.set_env("RECUR_PROMTOOL", "/usr/bin/promtool");
            let s = Settings::load(&Overrides::default()).expect("valid");
            assert_eq!(s.redis.url.as_deref(), Some("redis://127.0.0.1:7000/0"));
            assert!(!s.uses_embedded_redis());
            assert_eq!(s.scheduler.batch_size, 16);
            assert_eq!(
                s.lifecycle.payment_grace_period,
                Duration::from_secs(4 * 86_400)
            );
            assert_eq!(
                s.lifecycle.dunning.final_action,
                crate::domain::order::FinalAction::Pause
            );
            assert_eq!(s.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        jailed(|jail| {
            jail.create_file(
                "recur.toml",
                r#"
                prefix = "from-file"
                [clock]
                mode = "simulated"
                start = "2025-01-31T10:00:00+02:00"
                [redis]
                url = "redis://file:6379"
                [status_manager.backoffice]
                ACTIVE = ["PAUSED", "CANCELED"]
                [promo_codes.WELCOME10]
                kind = "percent"
                value = "10"
                first_cycles = 3
                "#,
            )?;
            jail.set_env("RECUR_PREFIX", "from-env");
            jail.set_env("RECUR_REDIS__URL", "redis://env:6379");
            let overrides = Overrides {
                config_file: Some("recur.toml".into()),
                redis_url: Some("redis://flag:6379".into()),
                ..Overrides::default()
            };
            let s = Settings::load(&overrides).expect("valid");
            assert_eq!(s.prefix, "from-env");
            assert_eq!(s.redis.url.as_deref(), Some("redis://flag:6379"));
            assert_eq!(s.clock.mode, ClockMode::Simulated);
            assert_eq!(
                s.clock.start.map(|t| t.to_rfc3339()),
                Some("2025-01-31T08:00:00+00:00".to_string())
            );
            assert_eq!(
                s.status_manager["backoffice"]["ACTIVE"],
                vec!["PAUSED".to_string(), "CANCELED".to_string()]
            );
            let promo = &s.promo_codes["WELCOME10"];
            assert_eq!(promo.kind, PromoKind::Percent);
            assert_eq!(promo.value, Decimal::TEN);
            assert_eq!(promo.first_cycles, Some(3));
            assert_eq!(promo.expires, None);
            Ok(())
        });
    }

    #[test]
    fn clock_flags_override() {
        jailed(|_| {
            let overrides = Overrides {
                clock_mode: Some(ClockMode::Simulated),
                clock_start: Some("2030-01-01T00:00:00Z".into()),
                prefix: Some("t1".into()),
                ..Overrides::default()
            };
            let s = Settings::load(&overrides).expect("valid");
            assert_eq!(s.clock.mode, ClockMode::Simulated);
            assert_eq!(s.prefix, "t1");
            assert!(s.clock.start.is_some());
            Ok(())
        });
    }

    #[test]
    fn empty_redis_url_means_embedded() {
        jailed(|jail| {
            jail.set_env("RECUR_REDIS__URL", "");
            let s = Settings::load(&Overrides::default()).expect("valid");
            assert!(s.uses_embedded_redis());
            Ok(())
        });
    }

    #[test]
    fn a_cluster_takes_seed_nodes_from_env_or_flags() {
        jailed(|jail| {
            let seeds = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
            jail.set_env("RECUR_REDIS__URL", seeds);
            jail.set_env("RECUR_REDIS__CLUSTER", "true");
            let s = Settings::load(&Overrides::default()).expect("valid");
            assert!(s.redis.cluster && !s.uses_embedded_redis());
            assert_eq!(
                s.redis_address(),
                Some(RedisAddress::cluster(vec![
                    "redis://127.0.0.1:7000".into(),
                    "redis://127.0.0.1:7001".into()
                ]))
            );
            jail.set_env("RECUR_REDIS__CLUSTER", "false");
            // The list without the cluster setting is refused, naming the setting to use...
            let error = load_err(&Overrides::default());
            assert!(
                error.to_string().contains("redis.cluster = true"),
                "{error}"
            );
            assert_invalid_key(error, "redis.url");
            // ... which the flag gives.
            let flag = Overrides {
                redis_cluster: Some(true),
                ..Overrides::default()
            };
            assert!(Settings::load(&flag).expect("valid").redis.cluster);
            Ok(())
        });
    }

    #[test]
    fn replication_waits_need_a_redis_with_replicas_and_a_timeout() {
        jailed(|jail| {
            let s = Settings::load(&Overrides::default()).expect("valid");
            assert_eq!(s.redis.wait_replicas, 0, "off by default");
            assert_eq!(s.redis.wait_timeout, Duration::from_secs(1));
            assert_eq!(s.redis_wait(), None);
            // The embedded Redis has no replica to wait for.
            jail.set_env("RECUR_REDIS__WAIT_REPLICAS", "1");
            let error = load_err(&Overrides::default());
            assert!(error.to_string().contains("embedded Redis"), "{error}");
            assert_invalid_key(error, "redis.wait_replicas");
            jail.set_env("RECUR_REDIS__URL", "redis://127.0.0.1:7000");
            jail.set_env("RECUR_REDIS__WAIT_TIMEOUT", "250ms");
            let s = Settings::load(&Overrides::default()).expect("valid");
            assert_eq!(
                s.redis_wait(),
                Some(crate::store::WaitFor {
                    replicas: 1,
                    timeout_ms: 250
                })
            );
            // WAIT n 0 would block forever.
            jail.set_env("RECUR_REDIS__WAIT_TIMEOUT", "0s");
            assert_invalid_key(load_err(&Overrides::default()), "redis.wait_timeout");
            Ok(())
        });
    }

    #[test]
    fn a_cluster_without_seed_nodes_is_refused_not_embedded() {
        jailed(|jail| {
            jail.set_env("RECUR_REDIS__CLUSTER", "true");
            let error = load_err(&Overrides::default());
            assert!(error.to_string().contains("embedded Redis"), "{error}");
            assert_invalid_key(error, "redis.cluster");
            // A unix socket cannot be a cluster node.
            jail.set_env("RECUR_REDIS__URL", "redis+unix:///tmp/redis.sock");
            assert_invalid_key(load_err(&Overrides::default()), "redis.url");
            jail.set_env("RECUR_REDIS__CLUSTER", "yes please");
            assert_invalid_key(load_err(&Overrides::default()), "redis.cluster");
            Ok(())
        });
    }

    #[test]
    fn redis_credentials_come_from_settings_over_the_url_and_stay_as_written() {
        jailed(|jail| {
            jail.set_env(
                "RECUR_REDIS__URL",
                "rediss://url-user:url-pass@127.0.0.1:7000",
            );
            // Read as written: the environment layer would make these a number or a float.
            for password in ["0123", "1.50", "true", "[x]", " spaced "] {
                jail.set_env("RECUR_REDIS__PASSWORD", password);
                let s = Settings::load(&Overrides::default()).expect("valid");
                assert_eq!(s.redis.password.as_deref(), Some(password));
            }
            jail.set_env("RECUR_REDIS__PASSWORD", "s3cret-env");
            jail.set_env("RECUR_REDIS__USERNAME", "app");
            let s = Settings::load(&Overrides::default()).expect("valid");
            let address = s.redis_address().expect("configured");
            assert_eq!(address.access().password.as_deref(), Some("s3cret-env"));
            assert_eq!(address.access().username.as_deref(), Some("app"));
            let info = address
                .access()
                .connection_info(address.urls()[0])
                .expect("a url");
            assert_eq!(info.redis_settings().password(), Some("s3cret-env"));
            assert_eq!(info.redis_settings().username(), Some("app"));
            // Nothing printed holds a password.
            for printed in [
                format!("{s:?}"),
                format!("{address:?}"),
                address.to_string(),
            ] {
                assert!(!printed.contains("s3cret-env"), "{printed}");
                assert!(!printed.contains("url-pass"), "{printed}");
            }
            assert_eq!(address.to_string(), "rediss://url-user:***@127.0.0.1:7000");
            Ok(())
        });
    }

    #[test]
    fn a_password_that_is_not_a_string_is_refused_without_repeating_it() {
        jailed(|jail| {
            jail.create_file(
                "recur.toml",
                "[redis]\nurl = \"redis://127.0.0.1:7000\"\npassword = 98765432\n",
            )?;
            let error = load_err(&Overrides {
                config_file: Some("recur.toml".into()),
                ..Overrides::default()
            });
            assert!(!error.to_string().contains("98765432"), "{error}");
            assert!(error.to_string().contains("quote it"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn redis_secrets_and_tls_need_a_url_that_fits() {
        jailed(|jail| {
            // The embedded Redis has no password and no TLS.
            jail.set_env("RECUR_REDIS__PASSWORD", "p");
            assert_invalid_key(load_err(&Overrides::default()), "redis.password");
            jail.set_env("RECUR_REDIS__PASSWORD", "");
            jail.set_env("RECUR_REDIS__TLS__INSECURE", "true");
            assert_invalid_key(load_err(&Overrides::default()), "redis.tls");
            // TLS settings with a plain URL would silently not be used.
            jail.set_env("RECUR_REDIS__URL", "redis://127.0.0.1:7000");
            let error = load_err(&Overrides::default());
            assert!(error.to_string().contains("rediss://"), "{error}");
            assert_invalid_key(error, "redis.tls");
            jail.set_env("RECUR_REDIS__TLS__INSECURE", "false");
            jail.set_env("RECUR_REDIS__URL", "rediss://127.0.0.1:7000");
            jail.set_env("RECUR_REDIS__TLS__CERT_FILE", "client.pem");
            assert_invalid_key(load_err(&Overrides::default()), "redis.tls.key_file");
            jail.set_env("RECUR_REDIS__TLS__KEY_FILE", "client.key");
            jail.set_env("RECUR_REDIS__TLS__CA_FILE", "ca.pem");
            let s = Settings::load(&Overrides::default()).expect("valid");
            let address = s.redis_address().unwrap();
            let tls = &address.access().tls;
            assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
            assert_eq!(tls.cert_file, Some(PathBuf::from("client.pem")));
            assert_eq!(tls.key_file, Some(PathBuf::from("client.key")));
            assert!(!tls.insecure);
            // Every seed of a TLS cluster is rediss://.
            jail.set_env("RECUR_REDIS__CLUSTER", "true");
            jail.set_env(
                "RECUR_REDIS__URL",
                "rediss://127.0.0.1:7000,redis://127.0.0.1:7001",
            );
            assert_invalid_key(load_err(&Overrides::default()), "redis.url");
            Ok(())
        });
    }

    #[test]
    fn webhook_secrets_and_url_passwords_are_not_printed() {
        jailed(|jail| {
            jail.set_env(
                "RECUR_WEBHOOKS__ENDPOINTS",
                r#"[{url="https://hook:tok3n@x.example/h", secret="whsec_s3cret", events=["*"]}]"#,
            );
            let s = Settings::load(&Overrides::default()).expect("valid");
            let ep = &s.webhooks.endpoints[0];
            // The id (Redis keys, metrics, logs) is the URL masked.
            assert_eq!(ep.id(), "https://hook:***@x.example/h");
            let printed = format!("{s:?}");
            assert!(!printed.contains("whsec_s3cret"), "{printed}");
            assert!(!printed.contains("tok3n"), "{printed}");
            jail.set_env(
                "RECUR_WEBHOOKS__ENDPOINTS",
                r#"[{url="ftp://u:tok3n@x", secret="s", events=["*"]}]"#,
            );
            let error = load_err(&Overrides::default());
            assert!(!error.to_string().contains("tok3n"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn dunning_retries_must_come_before_the_deadline() {
        jailed(|jail| {
            // The default retries (1d, 2d) do not fit a 2-day grace.
            jail.set_env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "2d");
            assert_invalid_key(load_err(&Overrides::default()), "lifecycle.dunning.retries");
            jail.set_env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "72h");
            jail.set_env("RECUR_LIFECYCLE__DUNNING__FINAL_ACTION", "SOMETIMES");
            assert!(Settings::load(&Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn bad_cron_names_the_key() {
        jailed(|jail| {
            jail.set_env("RECUR_CRON__TRIM_EVENTS", "every five minutes");
            assert_invalid_key(load_err(&Overrides::default()), "cron.trim_events");
            Ok(())
        });
    }

    #[test]
    fn bad_clock_mode_names_the_key() {
        jailed(|jail| {
            jail.set_env("RECUR_CLOCK__MODE", "sundial");
            let error = load_err(&Overrides::default());
            assert!(error.to_string().contains("RECUR_CLOCK__MODE"), "{error}");
            assert_invalid_key(error, "clock.mode");
            Ok(())
        });
    }

    #[test]
    fn bad_clock_start_names_the_key() {
        jailed(|_| {
            let overrides = Overrides {
                clock_start: Some("tomorrow".into()),
                ..Overrides::default()
            };
            assert_invalid_key(load_err(&overrides), "clock.start");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_keys() {
        let cases = [
            ("RECUR_LOG__FORMAT", "xml", "log.format"),
            ("RECUR_LOG__LEVEL", "recur=loud", "log.level"),
            (
                "RECUR_ACTORS__IDLE_PASSIVATION",
                "60",
                "actors.idle_passivation",
            ),
            ("RECUR_SCHEDULER__WINDOW", "0s", "scheduler.window"),
            ("RECUR_SCHEDULER__BATCH_SIZE", "0", "scheduler.batch_size"),
            ("RECUR_SCHEDULER__LANES", "0", "scheduler.lanes"),
            ("RECUR_PREFIX", "recur:", "prefix"),
            ("RECUR_PREFIX", "re{p1}cur", "prefix"),
            ("RECUR_PREFIX", "recur}", "prefix"),
            ("RECUR_PARTITIONS", "0", "partitions"),
            ("RECUR_PARTITIONS", "1025", "partitions"),
            ("RECUR_PARTITIONS", "many", "partitions"),
            ("RECUR_REDIS__URL", "http://nope", "redis.url"),
            ("RECUR_LOG__LEVEL", "verbose", "log.level"),
            ("RECUR_LOG__LEVEL", "warning", "log.level"),
        ];
        for (var, value, key) in cases {
            jailed(|jail| {
                jail.set_env(var, value);
                assert_invalid_key(load_err(&Overrides::default()), key);
                Ok(())
            });
        }
    }

    fn unknown_env(names: &[&str]) -> (String, Option<String>) {
        match check_env(names.iter().map(|n| n.to_string())) {
            Err(ConfigError::UnknownEnv {
                variable,
                suggestion,
            }) => (variable, suggestion),
            other => panic!("{names:?}: expected an unknown variable, got {other:?}"),
        }
    }

    #[test]
    fn environment_typos_are_refused_naming_the_nearest_variable() {
        let cases = [
            ("RECUR_REDIS_URL", Some("RECUR_REDIS__URL")),
            ("RECUR_LOG_LEVEL", Some("RECUR_LOG__LEVEL")),
            (
                "RECUR_SCHEDULER__BATCHSIZE",
                Some("RECUR_SCHEDULER__BATCH_SIZE"),
            ),
            (
                "RECUR_REDIS__EMBEDDED_DATA_DIR",
                Some("RECUR_REDIS__EMBEDDED__DATA_DIR"),
            ),
            ("recur_partition", Some("RECUR_PARTITIONS")),
            ("RECUR_ADMIN__XYZZY_QUUX", None),
            (
                "RECUR_WEBHOOKS__ENDPOINTS__0__URL",
                Some("RECUR_WEBHOOKS__ENDPOINTS"),
            ),
        ];
        for (name, expected) in cases {
            let (variable, suggestion) = unknown_env(&[name]);
            assert_eq!(variable, name);
            assert_eq!(suggestion.as_deref(), expected, "{name}");
        }
        let message = ConfigError::UnknownEnv {
            variable: "RECUR_REDIS_URL".into(),
            suggestion: Some("RECUR_REDIS__URL".into()),
        }
        .to_string();
        assert_eq!(
            message,
            "unknown environment variable RECUR_REDIS_URL: did you mean RECUR_REDIS__URL? \
             (nested keys are joined with __)"
        );
        // Settings (in any case), whole tables, free-form tables, and what recur reads besides.
        let allowed = [
            "RECUR_REDIS__URL",
            "recur_redis__url",
            "RECUR_REDIS",
            "RECUR_PARTITIONS",
            "RECUR_CLUSTER__RENEW_INTERVAL",
            "RECUR_WEBHOOKS__ENDPOINTS",
            "RECUR_LIFECYCLE__DUNNING__RETRIES",
            "RECUR_STATUS_MANAGER__BACKOFFICE__ACTIVE",
            "RECUR_PROMO_CODES__WELCOME10__KIND",
            "RECUR_BENCH_AUTO_AOF_REWRITE",
            "RECUR_BENCH_ANYTHING_NEW",
            "RECUR_PROMTOOL",
            "RUST_LOG",
            "PATH",
        ];
        check_env(allowed.iter().map(|n| n.to_string())).expect("all allowed");
    }

    #[test]
    fn an_environment_typo_stops_loading() {
        jailed(|jail| {
            jail.set_env("RECUR_REDIS_URL", "redis://127.0.0.1:6380");
            let error = load_err(&Overrides::default());
            assert!(
                error.to_string().contains("did you mean RECUR_REDIS__URL?"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_values_say_what_was_meant_without_nested_backticks() {
        jailed(|jail| {
            jail.create_file("typo.toml", "[redis]\nurll = \"redis://x\"\n")?;
            jail.create_file("mode.toml", "[clock]\nmode = \"simulate\"\n")?;
            let with = |file: &str| Overrides {
                config_file: Some(file.into()),
                ..Overrides::default()
            };
            let error = load_err(&with("typo.toml"));
            let message = error.to_string();
            assert!(message.contains("did you mean `url`?"), "{message}");
            assert!(message.contains("typo.toml"), "{message}");
            assert!(!message.contains("``"), "nested backticks: {message}");
            let message = load_err(&with("mode.toml")).to_string();
            assert!(message.contains("did you mean `simulated`?"), "{message}");
            assert!(!message.contains("``"), "nested backticks: {message}");
            Ok(())
        });
    }

    #[test]
    fn bad_status_and_promo_entries_name_their_keys() {
        jailed(|jail| {
            jail.create_file(
                "bad-status.toml",
                "[status_manager.web]\nACTIVE = [\"FROZEN\"]\n",
            )?;
            jail.create_file(
                "bad-promo.toml",
                "[promo_codes.HALF]\nkind = \"percent\"\nvalue = \"150\"\n",
            )?;
            let with = |file: &str| Overrides {
                config_file: Some(file.into()),
                ..Overrides::default()
            };
            assert_invalid_key(
                load_err(&with("bad-status.toml")),
                "status_manager.web.ACTIVE",
            );
            assert_invalid_key(load_err(&with("bad-promo.toml")), "promo_codes.HALF.value");
            Ok(())
        });
    }

    #[test]
    fn missing_or_broken_config_file_is_reported() {
        jailed(|jail| {
            let missing = Overrides {
                config_file: Some("nope.toml".into()),
                ..Overrides::default()
            };
            assert!(matches!(
                load_err(&missing),
                ConfigError::FileNotFound { .. }
            ));
            jail.create_file("broken.toml", "prefix = ")?;
            let broken = Overrides {
                config_file: Some("broken.toml".into()),
                ..Overrides::default()
            };
            let error = load_err(&broken);
            assert!(matches!(error, ConfigError::Unreadable { .. }), "{error:?}");
            assert!(error.to_string().contains("broken.toml"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn durations_parse() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("24h"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("7d"), Ok(ms(7 * 86_400_000)));
        assert_eq!(parse_duration(" 1h30m "), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "1.5h",
            "-1s",
            "1h 30m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn config_becomes_basket_rules() {
        let mut s = Settings::defaults().unwrap();
        s.status_manager.insert(
            "backoffice".into(),
            [("ACTIVE".to_string(), vec!["PAUSED".to_string()])]
                .into_iter()
                .collect(),
        );
        s.promo_codes.insert(
            "WELCOME10".into(),
            PromoCode {
                kind: PromoKind::Percent,
                value: Decimal::TEN,
                first_cycles: Some(3),
                expires: None,
            },
        );
        let r = s.basket_rules();
        assert!(r
            .statuses
            .allows("backoffice", OrderStatus::Active, OrderStatus::Paused));
        assert!(!r
            .statuses
            .allows("backoffice", OrderStatus::Paused, OrderStatus::Active));
        let (code, p) = r.promotion("welcome10").unwrap();
        assert_eq!(code, "WELCOME10");
        assert_eq!(
            (p.kind, p.value, p.first_cycles),
            (DiscountKind::Percent, Decimal::TEN, Some(3))
        );
    }
}
