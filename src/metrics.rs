//! The daemon's figures (SPEC 9): one Prometheus registry per daemon, through the `prometheus`
//! crate. `/metrics` renders it as Prometheus text and `getMetrics` as JSON (SPEC 10's shape),
//! so both read the same values. Each part of the daemon updates only its own figures through
//! the methods here; the gauges that are read off Redis (timers due, timer lag) are set by
//! whoever asks for a snapshot, just before it renders.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use serde_json::{json, Map, Value};

/// What a transition was started by (`recur_transitions_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    /// A timer fired (the scheduler).
    Fire,
    /// An admin command.
    Command,
}

/// How a lease changed hands (`recur_lease_changes_total{change}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    Acquired,
    Lost,
    Released,
}

/// The outcome of one webhook delivery attempt (`recur_webhook_deliveries_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Another status, a timeout or a refused connection: retried later.
    Failed,
    /// Given up after `webhooks.max_age` (or trimmed): moved to the dead letters.
    Dead,
}

impl DeliveryOutcome {
    fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Dead => "dead",
        }
    }
}

/// Commit pipelines take from well under a millisecond to seconds (a Redis under AOF rewrite).
const COMMIT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Admin requests: a read is a millisecond, an advanceClock over a year can take minutes.
const ADMIN_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

/// The histograms recur exports (each also gives `_bucket`, `_count` and `_sum` series).
pub const HISTOGRAMS: [&str; 2] = [
    "recur_commit_duration_seconds",
    "recur_admin_duration_seconds",
];

/// Figures whose series appear with their first value (by admin command): listed with no
/// series until then.
const LAZY: [&str; 2] = ["recur_admin_requests_total", "recur_admin_duration_seconds"];

/// Every figure of one daemon, registered in its own registry (several daemons in one process,
/// as in the tests, never mix their figures).
pub struct Metrics {
    registry: Registry,
    transitions_fire: IntCounter,
    transitions_command: IntCounter,
    events: IntCounter,
    commit_duration: Histogram,
    commits: IntCounter,
    admin_requests: IntCounterVec,
    admin_duration: HistogramVec,
    resident_actors: IntGauge,
    activations: IntCounter,
    passivations: IntCounter,
    timers_fired: IntCounter,
    timers_due: IntGauge,
    timer_lag: Gauge,
    partitions_owned: IntGauge,
    lease_changes: IntCounterVec,
    redis_errors: IntCounter,
    orders_unreadable: IntCounter,
    stats_deltas_applied: IntCounter,
    webhooks: WebhookFigures,
    ready: IntGauge,
    replication: ReplicationFigures,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    register(registry, c.clone());
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    register(registry, c.clone());
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name");
    register(registry, g.clone());
    g
}

fn register(registry: &Registry, c: impl Collector + 'static) {
    // Names are fixed here and registered once per registry.
    registry
        .register(Box::new(c))
        .expect("metric registered once");
}

/// A histogram with these buckets.
fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid histogram");
    register(r, h.clone());
    h
}

/// A histogram with one label and these buckets.
fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    label: &str,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &[label],
    )
    .expect("valid histogram");
    register(r, h.clone());
    h
}

/// A gauge of seconds (or any fraction).
fn float_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid gauge");
    register(r, g.clone());
    g
}

/// A counter with one label, its series for `values` created at zero (so a scrape shows them
/// before the first count).
fn labelled(r: &Registry, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let vec = counter_vec(r, name, help, &[label]);
    for value in values {
        vec.with_label_values(&[value]);
    }
    vec
}

/// Webhook delivery's figures.
struct WebhookFigures {
    deliveries: IntCounterVec,
    pending: IntGauge,
    trimmed: IntCounter,
}

impl WebhookFigures {
    fn new(r: &Registry) -> WebhookFigures {
        WebhookFigures {
            deliveries: labelled(
                r,
                "recur_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome",
                "outcome",
                &[
                    DeliveryOutcome::Delivered.label(),
                    DeliveryOutcome::Failed.label(),
                    DeliveryOutcome::Dead.label(),
                ],
            ),
            pending: gauge(
                r,
                "recur_webhook_pending",
                "Webhook deliveries waiting (in flight or for a retry)",
            ),
            trimmed: counter(
                r,
                "recur_webhook_trimmed_total",
                "Undelivered webhook events dead-lettered because the stream trim (events.max_len) would remove them",
            ),
        }
    }
}

/// The WAITs' figures (SPEC 11.1).
struct ReplicationFigures {
    confirmed: IntCounter,
    short: IntCounter,
    replicas: IntGauge,
}

impl ReplicationFigures {
    fn new(r: &Registry) -> ReplicationFigures {
        let waits = counter_vec(
            r,
            "recur_replication_waits_total",
            "WAITs sent after commits, lease acquisitions and confirmations (redis.wait_replicas > 0), by outcome: confirmed by enough replicas, or short",
            &["outcome"],
        );
        let replicas = gauge(
            r,
            "recur_replication_replicas",
            "How many replicas the last WAIT confirmed (the fewest over the masters of its pipeline; -1 before the first, or when redis.wait_replicas is 0)",
        );
        replicas.set(-1);
        ReplicationFigures {
            confirmed: waits.with_label_values(&["confirmed"]),
            short: waits.with_label_values(&["short"]),
            replicas,
        }
    }
}

impl Metrics {
    /// Every figure at zero, in a registry of its own.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let transitions = counter_vec(
            &r,
            "recur_transitions_total",
            "Order versions committed, by what started them (fire: a timer, command: an admin request)",
            &["kind"],
        );
        let commit_duration = histogram(
            &r,
            "recur_commit_duration_seconds",
            "Round trip of one pipeline of order commits to Redis",
            &COMMIT_BUCKETS,
        );
        let admin_duration = histogram_vec(
            &r,
            "recur_admin_duration_seconds",
            "Time from taking an admin request to its reply, by command",
            &ADMIN_BUCKETS,
            "command",
        );
        let timer_lag = float_gauge(
            &r,
            "recur_timer_lag_seconds",
            "How late the most overdue timer of the partitions held is, on the lifecycle clock (0 when none is overdue)",
        );
        let lease_changes = labelled(
            &r,
            "recur_lease_changes_total",
            "Partition leases this daemon acquired, lost or released",
            "change",
            &["acquired", "lost", "released"],
        );
        Metrics {
            transitions_fire: transitions.with_label_values(&["fire"]),
            transitions_command: transitions.with_label_values(&["command"]),
            events: counter(
                &r,
                "recur_events_total",
                "Events written to the partition streams",
            ),
            commit_duration,
            commits: counter(
                &r,
                "recur_commits_total",
                "Order commits sent to Redis (committed or refused)",
            ),
            admin_requests: counter_vec(
                &r,
                "recur_admin_requests_total",
                "Admin requests this daemon answered, by command and reply code (OK for success)",
                &["command", "code"],
            ),
            admin_duration,
            resident_actors: gauge(&r, "recur_resident_actors", "Order actors in memory"),
            activations: counter(&r, "recur_actor_activations_total", "Order actors started"),
            passivations: counter(
                &r,
                "recur_actor_passivations_total",
                "Order actors stopped (idle, lost partition, shutdown)",
            ),
            timers_fired: counter(
                &r,
                "recur_timers_fired_total",
                "Due timers handed to their order actor",
            ),
            timers_due: gauge(
                &r,
                "recur_timers_due",
                "Timers of the partitions held that are due now on the lifecycle clock",
            ),
            timer_lag,
            partitions_owned: gauge(
                &r,
                "recur_partitions_owned",
                "Partitions whose lease this daemon holds",
            ),
            lease_changes,
            redis_errors: counter(
                &r,
                "recur_redis_errors_total",
                "Redis operations that failed (commits, loops, probes)",
            ),
            orders_unreadable: counter(
                &r,
                "recur_orders_unreadable_total",
                "Stored orders a listing skipped because they could not be read",
            ),
            stats_deltas_applied: counter(
                &r,
                "recur_stats_deltas_applied_total",
                "Customer-statistics deltas applied",
            ),
            webhooks: WebhookFigures::new(&r),
            ready: gauge(
                &r,
                "recur_ready",
                "1 when /readyz would answer 200 (as of the last scrape or probe), else 0",
            ),
            replication: ReplicationFigures::new(&r),
            registry: r,
        }
    }

    /// One pipeline of `size` commits took `elapsed`.
    pub fn commit_batch(&self, size: usize, elapsed: Duration) {
        self.commit_duration.observe(elapsed.as_secs_f64());
        self.commits.inc_by(size as u64);
    }

    /// One WAIT (one pipeline's, over every master it went to) answered: how many replicas
    /// confirmed it (the fewest of its masters), and whether that was enough.
    pub fn replication_wait(&self, replicas: i64, enough: bool) {
        if enough {
            self.replication.confirmed.inc();
        } else {
            self.replication.short.inc();
        }
        self.replication.replicas.set(replicas);
    }

    /// One order version committed with `events` events.
    pub fn committed(&self, kind: TransitionKind, events: usize) {
        match kind {
            TransitionKind::Fire => self.transitions_fire.inc(),
            TransitionKind::Command => self.transitions_command.inc(),
        }
        self.events.inc_by(events as u64);
    }

    /// An admin request answered: its command name ("unknown" for names recur does not know),
    /// its reply code ("OK" for success) and how long it took.
    pub fn admin_request(&self, command: &str, code: &str, elapsed: Duration) {
        self.admin_requests
            .with_label_values(&[command, code])
            .inc();
        self.admin_duration
            .with_label_values(&[command])
            .observe(elapsed.as_secs_f64());
    }

    /// An order actor started.
    pub fn actor_started(&self) {
        self.resident_actors.inc();
        self.activations.inc();
    }

    /// An order actor stopped.
    pub fn actor_stopped(&self) {
        self.resident_actors.dec();
        self.passivations.inc();
    }

    /// A due timer was handed to its actor.
    pub fn timer_fired(&self) {
        self.timers_fired.inc();
    }

    /// A stats delta changed a customer's figures.
    pub fn stats_delta_applied(&self) {
        self.stats_deltas_applied.inc();
    }

    /// A Redis operation failed.
    pub fn redis_error(&self) {
        self.redis_errors.inc();
    }

    /// Transitions committed so far (fired and commanded).
    pub fn transitions_total(&self) -> u64 {
        self.transitions_fire.get() + self.transitions_command.get()
    }

    /// A listing skipped a stored order it could not read.
    pub fn order_unreadable(&self) {
        self.orders_unreadable.inc();
    }

    /// `n` leases changed hands this way.
    pub fn lease_changes(&self, change: LeaseChange, n: usize) {
        let label = match change {
            LeaseChange::Acquired => "acquired",
            LeaseChange::Lost => "lost",
            LeaseChange::Released => "released",
        };
        self.lease_changes
            .with_label_values(&[label])
            .inc_by(n as u64);
    }

    /// The partitions held now.
    pub fn set_partitions_owned(&self, n: usize) {
        self.partitions_owned
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The timers read off Redis: how many are due and how late the most overdue one is.
    pub fn set_timers(&self, due: u64, lag: Duration) {
        self.timers_due.set(i64::try_from(due).unwrap_or(i64::MAX));
        self.timer_lag.set(lag.as_secs_f64());
    }

    /// A webhook delivery attempt ended.
    pub fn webhook_delivery(&self, outcome: DeliveryOutcome) {
        self.webhooks
            .deliveries
            .with_label_values(&[outcome.label()])
            .inc();
    }

    /// An undelivered event dead-lettered because the trim would remove it.
    pub fn webhook_trimmed(&self) {
        self.webhooks.trimmed.inc();
    }

    /// Webhook deliveries waiting now.
    pub fn set_webhook_pending(&self, n: u64) {
        self.webhooks
            .pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Whether the daemon is ready (the last readiness check).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Order actors in memory now.
    pub fn resident_actors(&self) -> i64 {
        self.resident_actors.get()
    }

    /// The registry in Prometheus text format (`/metrics`).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the metric types used here.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The registry as JSON (SPEC 10): `{<name>: [{"labels", "value"}]}` for counters and
    /// gauges, `{"count", "sum", "buckets"}` for a histogram without labels and a list of those
    /// with `labels` for one with labels. Buckets are cumulative, `{"le", "count"}`, ending
    /// with `le: "+Inf"`.
    pub fn json(&self) -> Value {
        let mut out = Map::new();
        for family in self.registry.gather() {
            out.insert(family.name().to_string(), family_json(&family));
        }
        for name in LAZY {
            out.entry(name).or_insert_with(|| Value::Array(Vec::new()));
        }
        Value::Object(out)
    }
}

fn family_json(family: &MetricFamily) -> Value {
    let series = family.get_metric();
    match family.get_field_type() {
        MetricType::HISTOGRAM => {
            let hists: Vec<Value> = series
                .iter()
                .map(|m| {
                    let h = m.get_histogram();
                    let mut buckets: Vec<Value> = h
                        .get_bucket()
                        .iter()
                        .map(|b| json!({"le": b.upper_bound(), "count": b.cumulative_count()}))
                        .collect();
                    buckets.push(json!({"le": "+Inf", "count": h.get_sample_count()}));
                    let mut v = json!({
                        "count": h.get_sample_count(),
                        "sum": h.get_sample_sum(),
                        "buckets": buckets,
                    });
                    if !m.get_label().is_empty() {
                        v["labels"] = labels_json(m);
                    }
                    v
                })
                .collect();
            let labelled = series.iter().any(|m| !m.get_label().is_empty());
            match (labelled, hists.as_slice()) {
                (false, [one]) => one.clone(),
                _ => Value::Array(hists),
            }
        }
        kind => Value::Array(
            series
                .iter()
                .map(|m| {
                    let value = match kind {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        _ => m.get_gauge().get_value(),
                    };
                    json!({"labels": labels_json(m), "value": value})
                })
                .collect(),
        ),
    }
}

fn labels_json(m: &prometheus::proto::Metric) -> Value {
    let labels: BTreeMap<&str, &str> = m
        .get_label()
        .iter()
        .map(|l| (l.name(), l.value()))
        .collect();
    json!(labels)
}

/// The total of one figure in a `getMetrics` result's `metrics` (every series summed; a
/// histogram's count), 0 when absent: what clients and benchmarks compare before and after.
pub fn total(metrics: &Value, name: &str) -> f64 {
    match metrics.get(name) {
        Some(Value::Array(all)) => all.iter().map(sample_value).sum(),
        Some(one @ Value::Object(_)) => sample_value(one),
        _ => 0.0,
    }
}

/// A series' value: a counter's or gauge's `value`, a histogram's `count`.
fn sample_value(series: &Value) -> f64 {
    series
        .get("value")
        .or_else(|| series.get("count"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// The value of one series of a figure in a `getMetrics` result's `metrics`: the one whose
/// labels include every `(name, value)` of `labels` (summed when several do).
pub fn series(metrics: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(Value::Array(all)) = metrics.get(name) else {
        return 0.0;
    };
    all.iter()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s["labels"][k].as_str() == Some(v))
        })
        .map(sample_value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_figure_is_registered_and_both_views_agree() {
        let m = Metrics::new();
        m.committed(TransitionKind::Fire, 2);
        m.committed(TransitionKind::Command, 1);
        m.committed(TransitionKind::Fire, 0);
        m.commit_batch(3, Duration::from_millis(2));
        m.admin_request("createOrder", "OK", Duration::from_millis(3));
        m.admin_request("createOrder", "INVALID_REQUEST", Duration::from_millis(1));
        m.set_timers(4, Duration::from_millis(1500));
        let json = m.json();
        for name in [
            "recur_transitions_total",
            "recur_events_total",
            "recur_commit_duration_seconds",
            "recur_admin_requests_total",
            "recur_admin_duration_seconds",
            "recur_resident_actors",
            "recur_timers_due",
            "recur_timer_lag_seconds",
            "recur_partitions_owned",
            "recur_redis_errors_total",
            "recur_webhook_deliveries_total",
            "recur_webhook_pending",
            "recur_replication_waits_total",
            "recur_replication_replicas",
        ] {
            assert!(json.get(name).is_some(), "{name} missing from {json}");
            assert!(
                m.render().contains(&format!("# TYPE {name} ")),
                "{name} not rendered"
            );
        }
        assert_eq!(
            series(&json, "recur_transitions_total", &[("kind", "fire")]),
            2.0
        );
        assert_eq!(total(&json, "recur_transitions_total"), 3.0);
        assert_eq!(total(&json, "recur_events_total"), 3.0);
        assert_eq!(total(&json, "recur_commit_duration_seconds"), 1.0);
        assert_eq!(
            json["recur_commit_duration_seconds"]["buckets"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()["le"],
            "+Inf"
        );
        assert_eq!(
            series(
                &json,
                "recur_admin_requests_total",
                &[("command", "createOrder"), ("code", "OK")]
            ),
            1.0
        );
        assert_eq!(
            series(
                &json,
                "recur_admin_duration_seconds",
                &[("command", "createOrder")]
            ),
            2.0
        );
        assert_eq!(total(&json, "recur_timer_lag_seconds"), 1.5);
        assert_eq!(total(&json, "recur_timers_due"), 4.0);
        assert_eq!(
            total(&json, "recur_replication_replicas"),
            -1.0,
            "no WAIT yet"
        );
        m.replication_wait(1, true);
        m.replication_wait(0, false);
        let json = m.json();
        assert_eq!(
            series(
                &json,
                "recur_replication_waits_total",
                &[("outcome", "short")]
            ),
            1.0
        );
        assert_eq!(total(&json, "recur_replication_waits_total"), 2.0);
        assert_eq!(total(&json, "recur_replication_replicas"), 0.0);
    }

    #[test]
    fn two_daemons_in_one_process_keep_their_own_figures() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.committed(TransitionKind::Command, 1);
        assert_eq!(total(&a.json(), "recur_transitions_total"), 1.0);
        assert_eq!(total(&b.json(), "recur_transitions_total"), 0.0);
    }
}
