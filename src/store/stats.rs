//! Customer statistics in Redis: the version-guarded apply script (`stats.lua`), reading the
//! figures, rewriting them from a recomputation, and sweeping the stats outbox.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::{Store, StoreError};
use crate::domain::stats::{Contribution, Figures};

/// The Lua source of the stats apply.
pub const STATS_SCRIPT: &str = include_str!("stats.lua");

/// The stats script, hashed once (every delta runs it by its SHA).
static STATS: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(STATS_SCRIPT));

/// One outbox entry: the order's contribution (None = deleted) at a version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    /// Customer id.
    pub c: String,
    /// Order id.
    pub o: String,
    /// Order version.
    pub v: u64,
    /// The contribution, None when the order was deleted.
    pub k: Option<Contribution>,
}

impl Store {
    /// Applies a delta and, in the same atomic script call, removes its outbox entry (when
    /// given); Ok(true) when it changed the figures, Ok(false) when it was already applied (the
    /// same or a newer version).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn apply_delta(
        &self,
        d: &Delta,
        outbox_entry: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let keys = self.keys();
        let contribution = match &d.k {
            Some(c) => serde_json::to_string(c).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => String::new(),
        };
        let applied: i64 = STATS
            .key(keys.customer_contributions(&d.c))
            .key(keys.customer_stats(&d.c))
            .key(keys.customers(keys.partition(&d.c)))
            .key(keys.customer_orders(&d.c))
            .arg(&d.o)
            .arg(d.v)
            .arg(contribution)
            .arg(&d.c)
            .invoke_async(&mut conn)
            .await?;
        // The entry is in the order's partition (another hash slot): acknowledged after the
        // apply, which a crash in between only repeats, to no effect.
        if let Some(entry) = outbox_entry {
            let _removed: i64 = conn
                .xdel(keys.outbox(keys.partition(&d.o)), &[entry])
                .await?;
        }
        Ok(applied == 1)
    }

    /// Up to `count` outbox entries of a partition, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn outbox_entries(
        &self,
        partition: u16,
        count: usize,
    ) -> Result<Vec<(String, Delta)>, StoreError> {
        let mut conn = self.conn();
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_count(self.keys().outbox(partition), "-", "+", count)
            .await?;
        let mut out = Vec::new();
        for e in reply.ids {
            let raw: Option<String> = e.get("delta");
            let delta = raw
                .as_deref()
                .map(serde_json::from_str::<Delta>)
                .transpose()
                .map_err(|err| StoreError::Corrupt(format!("outbox entry {}: {err}", e.id)))?;
            if let Some(d) = delta {
                out.push((e.id, d));
            }
        }
        Ok(out)
    }

    /// The number of partitions with outbox streams (all of them).
    pub fn partitions(&self) -> u16 {
        self.keys().partitions()
    }

    /// A customer's kept figures (zeros when it has none yet).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn figures(&self, customer_id: &str) -> Result<Figures, StoreError> {
        let mut conn = self.conn();
        let raw: BTreeMap<String, i64> = conn
            .hgetall(self.keys().customer_stats(customer_id))
            .await?;
        let mut f = Figures::default();
        for (k, v) in raw {
            match k.as_str() {
                "ordersCount" => f.orders_count = v,
                "paidOrdersCount" => f.paid_orders_count = v,
                "activeOrdersCount" => f.active_orders_count = v,
                "lastOrderDate" => f.last_order_ms = v,
                "lastPaymentDate" => f.last_payment_ms = v,
                other => {
                    let mut parts = other.split(':');
                    if let (Some("money"), Some(cur), Some(which)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        let e = f.money.entry(cur.to_string()).or_insert([0, 0]);
                        e[usize::from(which == "refunded")] = v;
                    }
                }
            }
        }
        Ok(f)
    }

    /// Replaces a customer's figures and contributions with a recomputation (atomically).
    /// Tombstones of deleted orders are kept so stale deltas cannot bring them back.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn rewrite_figures(
        &self,
        customer_id: &str,
        contributions: &[(String, Contribution)],
        figures: &Figures,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let keys = self.keys();
        let ckey = keys.customer_contributions(customer_id);
        let skey = keys.customer_stats(customer_id);
        let existing: BTreeMap<String, String> = conn.hgetall(&ckey).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&skey).ignore();
        for (order_id, raw) in &existing {
            let keep = raw.contains("\"deleted\":true");
            if !keep && !contributions.iter().any(|(o, _)| o == order_id) {
                // The order is gone without a delete delta: tombstone its last version.
                let v = serde_json::from_str::<Contribution>(raw)
                    .map(|c| c.v)
                    .unwrap_or(0);
                pipe.hset(
                    &ckey,
                    order_id,
                    serde_json::json!({"v": v, "deleted": true}).to_string(),
                )
                .ignore();
            }
        }
        for (order_id, c) in contributions {
            pipe.hset(
                &ckey,
                order_id,
                serde_json::to_string(c).unwrap_or_default(),
            )
            .ignore();
        }
        pipe.hset(&skey, "ordersCount", figures.orders_count)
            .ignore();
        pipe.hset(&skey, "paidOrdersCount", figures.paid_orders_count)
            .ignore();
        pipe.hset(&skey, "activeOrdersCount", figures.active_orders_count)
            .ignore();
        pipe.hset(&skey, "lastOrderDate", figures.last_order_ms)
            .ignore();
        pipe.hset(&skey, "lastPaymentDate", figures.last_payment_ms)
            .ignore();
        for (cur, [paid, refunded]) in &figures.money {
            pipe.hset(&skey, format!("money:{cur}:paid"), *paid)
                .ignore();
            pipe.hset(&skey, format!("money:{cur}:refunded"), *refunded)
                .ignore();
        }
        pipe.sadd(keys.customers(keys.partition(customer_id)), customer_id)
            .ignore();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Every order id in a customer's index.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn customer_order_ids(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        Ok(conn
            .zrange(self.keys().customer_orders(customer_id), 0, -1)
            .await?)
    }

    /// Removes ids from a customer's index (orders deleted outside recur).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn forget_customer_orders(
        &self,
        customer_id: &str,
        ids: &[String],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let _: i64 = conn
            .zrem(self.keys().customer_orders(customer_id), ids)
            .await?;
        // Each gone order's id from its partition's index too.
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.zrem(self.keys().orders(self.keys().partition(id)), id);
        }
        let _: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// A random sample of customers with statistics.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    /// (From `partitions`' customer sets, about `count` in all, spread over them.)
    pub async fn sample_customers(
        &self,
        partitions: &[u16],
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let each = count.div_ceil(partitions.len()).max(1);
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.cmd("SRANDMEMBER")
                .arg(self.keys().customers(p))
                .arg(each);
        }
        let rows: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut sample: Vec<String> = rows.into_iter().flatten().collect();
        sample.truncate(count);
        Ok(sample)
    }
}
