//! Replication waits (SPEC 11.1, `redis.wait_replicas` / `redis.wait_timeout`): with n > 0,
//! nothing is acknowledged before `WAIT n timeout` confirms the write it reports.
//!
//! - [`Replication`] holds the setting and the outcome of the last WAIT (for `/readyz`, the
//!   metrics, and the error a short WAIT gives).
//! - [`Publisher`] publishes change entries on the events channel once their commits are
//!   confirmed (the commit scripts publish themselves only when nothing waits), in the order
//!   the commit batchers hand them over, by their stream entry ids (a script on the master
//!   publishes the entry as the stream holds it).
//!
//! How a WAIT is made to cover what it confirms: WAIT counts the replicas that acknowledged
//! every write *of its own connection* so far, so it is sent on the connection of the writes,
//! right after them (in the same pipeline; on a cluster, in each slot's sub-pipeline, so on the
//! master those writes went to). What was only read (a kept reply, an order, a stream entry
//! another connection wrote) is covered once the same connection writes something after the
//! read: recur writes the partition's lease back unchanged (`SET <lease> <token> KEEPTTL`,
//! under the lease check) — the commit script does it when it finds a kept reply, and a
//! confirmation ([`super::Store::confirm`]) does it on its own. Replication is in order, so a
//! replica that has that write has everything the master held before it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::conn::WaitFor;
use super::keys::Keys;
use super::scripts;
use super::RedisConn;
use crate::metrics::Metrics;

/// The last WAIT's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWait {
    /// How many replicas confirmed (the fewest over the masters of its pipeline; -1: a WAIT
    /// answered an error, or none could be sent).
    pub replicas: i64,
    /// Whether that was enough.
    pub enough: bool,
    /// When it came back.
    pub at: Instant,
}

/// The replication setting and what the last WAIT said. Shared by the commit batchers, the
/// store and readiness.
pub struct Replication {
    wait: Option<WaitFor>,
    last: Mutex<Option<LastWait>>,
    metrics: Arc<Metrics>,
}

impl Replication {
    /// `wait`: `None` when `redis.wait_replicas` is 0 (nothing waits).
    pub fn new(wait: Option<WaitFor>, metrics: Arc<Metrics>) -> Arc<Replication> {
        Arc::new(Replication {
            wait,
            last: Mutex::new(None),
            metrics,
        })
    }

    /// What a write waits for (`None`: nothing).
    pub fn wait(&self) -> Option<WaitFor> {
        self.wait
    }

    /// Records a WAIT's answer (the fewest replicas over its masters); whether it was enough.
    pub fn record(&self, replicas: i64) -> bool {
        let enough = self.wait.is_none_or(|w| replicas >= i64::from(w.replicas));
        self.metrics.replication_wait(replicas, enough);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(LastWait {
            replicas,
            enough,
            at: Instant::now(),
        });
        enough
    }

    /// The last WAIT's outcome, if any was sent.
    pub fn last(&self) -> Option<LastWait> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why writes are not confirmed now (the last WAIT fell short), for `/readyz`: `None` when
    /// nothing waits, no WAIT was sent yet, or the last one was enough.
    pub fn shortfall(&self) -> Option<String> {
        let wait = self.wait?;
        let last = self.last()?;
        (!last.enough).then(|| {
            format!(
                "replication: {} of {} replicas confirmed the last write within {} ms (redis.wait_replicas); writes are answered UNAVAILABLE until enough replicas are back",
                last.replicas.max(0),
                wait.replicas,
                wait.timeout_ms
            )
        })
    }

    /// Whether the outcome is unknown or older than `age` (a probe would tell).
    pub fn stale(&self, age: Duration) -> bool {
        self.wait.is_some() && self.last().is_none_or(|l| l.at.elapsed() > age)
    }
}

/// Publishes confirmed change entries on the events channel, in the order they are handed
/// over, each handful in one pipeline (best effort, as the channel always was: a failure is
/// logged). A change is named by its partition and stream entry id, and a small script on the
/// partition's master publishes the entry as the stream holds it (`publish_change.lua`): the
/// change (the order's whole JSON) is not sent to Redis a second time.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Vec<(u16, String)>>,
}

impl Publisher {
    /// Starts the publishing task (on the current local task set) over `conn`. It stops when
    /// every handle is dropped, after publishing what it was given.
    pub fn start(conn: RedisConn, keys: Keys) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::task::spawn_local(publish_all(rx, conn, keys));
        Publisher { tx }
    }

    /// Queues the change entries `entries` (partition, stream entry id) after everything
    /// queued before.
    pub fn send(&self, entries: Vec<(u16, String)>) {
        if !entries.is_empty() && self.tx.send(entries).is_err() {
            tracing::debug!("the events publisher has stopped; change entries not published");
        }
    }
}

/// At most this many changes go in one pipeline.
const PUBLISH_BATCH: usize = 4096;

async fn publish_all(
    mut rx: mpsc::UnboundedReceiver<Vec<(u16, String)>>,
    mut conn: RedisConn,
    keys: Keys,
) {
    let sha = scripts::PUBLISH_CHANGE.sha();
    let channel = keys.order_keys().events_channel();
    while let Some(first) = rx.recv().await {
        let mut entries = first;
        while entries.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(more) => entries.extend(more),
                Err(_) => break,
            }
        }
        let pipeline = |entries: &[&(u16, String)]| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (p, id) in entries {
                pipe.cmd("EVALSHA")
                    .arg(sha)
                    .arg(1)
                    .arg(keys.order_keys().events(*p))
                    .arg(id)
                    .arg(&channel);
            }
            pipe
        };
        let all: Vec<&(u16, String)> = entries.iter().collect();
        let sent: Result<Vec<redis::Value>, redis::RedisError> =
            pipeline(&all).query_async(&mut conn).await;
        let result = match sent {
            // A master that does not know the script (restarted, promoted): the registry
            // loaded, and the missing ones sent again.
            Ok(values) => {
                let missing: Vec<&(u16, String)> = all
                    .iter()
                    .zip(&values)
                    .filter(|(_, v)| scripts::is_noscript(v))
                    .map(|(e, _)| *e)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    match scripts::load_all(&mut conn).await {
                        Ok(()) => pipeline(&missing)
                            .query_async::<Vec<redis::Value>>(&mut conn)
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, changes = entries.len(), "cannot publish confirmed changes on the events channel");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_wait_is_a_reason_until_an_enough_one() {
        let wait = WaitFor {
            replicas: 1,
            timeout_ms: 1000,
        };
        let r = Replication::new(Some(wait), Arc::new(Metrics::default()));
        assert_eq!(r.shortfall(), None, "nothing sent yet");
        assert!(r.stale(Duration::from_secs(1)));
        assert!(!r.record(0));
        let reason = r.shortfall().expect("short");
        assert!(
            reason.starts_with("replication: 0 of 1 replicas confirmed"),
            "{reason}"
        );
        assert!(r.record(2));
        assert_eq!(r.shortfall(), None);
        assert!(!r.stale(Duration::from_secs(60)));
        let off = Replication::new(None, Arc::new(Metrics::default()));
        assert!(off.record(0), "nothing waits: always enough");
        assert_eq!(off.shortfall(), None);
        assert!(!off.stale(Duration::ZERO));
    }
}
