//! What `GET /v1/daemons` and `GET /v1/orders/{id}/events` read (SPEC 11.3): each daemon's
//! status beside its heartbeat, who holds which lease, and one order's changes out of its
//! partition's event stream. Reads only, except a daemon's own status record.

use redis::AsyncCommands;
use serde_json::Value;

use super::{Keys, RedisConn, Store, StoreError};

/// How many entries of a partition's stream one page of [`Store::order_changes`] reads.
const CHANGES_PAGE: usize = 512;

/// One change of an order as its partition's stream holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderChange {
    /// The stream entry's id.
    pub entry_id: String,
    /// The change JSON (`{orderId, customerId, version, events, entity}`).
    pub change: Value,
}

/// The daemons' status records, the lease holders and one order's changes, as the HTTP API
/// reads them. A narrow handle (the admin connection and the key names), made by
/// [`Store::status_store`].
#[derive(Clone)]
pub struct StatusStore {
    conn: RedisConn,
    keys: Keys,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn status_store(&self) -> StatusStore {
        StatusStore {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl StatusStore {
    /// Whether Redis answers a PING.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Records this daemon's status (a JSON object) for `ttl_ms`: written with each heartbeat,
    /// it lapses with the daemon (SPEC 10 counts heartbeats among the writes outside leases).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_status(
        &self,
        daemon_id: &str,
        status: &str,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.keys.daemon_status(daemon_id))
            .arg(status)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The recorded status of each of `daemon_ids` (`None`: none recorded, or it lapsed).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn daemon_statuses(
        &self,
        daemon_ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if daemon_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in daemon_ids {
            pipe.get(self.keys.daemon_status(id));
        }
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Every partition's lease holder (the daemon id of `<daemon id>:<epoch>`), by partition.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn lease_holders(&self) -> Result<Vec<Option<String>>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            pipe.get(self.keys.lease(p));
        }
        let leases: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(leases
            .into_iter()
            .map(|l| l.and_then(|l| l.rsplit_once(':').map(|(id, _)| id.to_string())))
            .collect())
    }

    /// The newest changes of `order_id` in its partition's event stream, newest first, until
    /// they hold `events` events or `max_scanned` entries were read (the stream holds every
    /// order of the partition, trimmed to `events.max_len / partitions`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn order_changes(
        &self,
        order_id: &str,
        events: usize,
        max_scanned: usize,
    ) -> Result<Vec<OrderChange>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.order_keys().events(self.keys.partition(order_id));
        // A cheap test before parsing: the change JSON names its order (`"orderId":"..."`).
        let needle = serde_json::to_string(order_id)
            .map(|quoted| format!("\"orderId\":{quoted}"))
            .unwrap_or_default();
        let (mut out, mut counted, mut scanned) = (Vec::new(), 0usize, 0usize);
        let mut end = "+".to_string();
        while counted < events && scanned < max_scanned {
            let page: redis::streams::StreamRangeReply =
                conn.xrevrange_count(&key, &end, "-", CHANGES_PAGE).await?;
            let Some(last) = page.ids.last() else {
                break;
            };
            // The next page ends just before this one's oldest entry (exclusive range).
            end = format!("({}", last.id);
            let full = page.ids.len() == CHANGES_PAGE;
            for entry in page.ids {
                scanned += 1;
                let Some(raw) = entry.get::<String>("change") else {
                    continue;
                };
                if !raw.contains(&needle) {
                    continue;
                }
                let Ok(change) = serde_json::from_str::<Value>(&raw) else {
                    continue;
                };
                if change.get("orderId").and_then(Value::as_str) != Some(order_id) {
                    continue;
                }
                counted += change
                    .get("events")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                out.push(OrderChange {
                    entry_id: entry.id,
                    change,
                });
                if counted >= events {
                    break;
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }
}
