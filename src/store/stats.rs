//! Customer statistics in Redis: the version-guarded apply script (`stats.lua`), reading the
//! figures, rewriting them from a recomputation, and sweeping the stats outbox.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::{scripts, Confirmer, Keys, RedisConn, Store, StoreError};
use crate::domain::stats::{Contribution, Figures};

/// What applying a delta did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The figures changed.
    Changed,
    /// The same or a newer version was applied before: nothing changed.
    AlreadySeen,
}

pub use crate::domain::stats::Delta;

/// The customer statistics' part of Redis. A narrow handle (the admin connection, its
/// confirmed writes and the key names), made by [`Store::stats_store`].
#[derive(Clone)]
pub struct StatsStore {
    keys: Keys,
    writes: Confirmer,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn stats_store(&self) -> StatsStore {
        StatsStore {
            keys: self.keys.clone(),
            writes: self.writes.clone(),
        }
    }
}

impl StatsStore {
    /// The replication confirmations this handle's writes and reads go with.
    pub fn confirmer(&self) -> &Confirmer {
        &self.writes
    }

    fn conn(&self) -> RedisConn {
        self.writes.conn.clone()
    }

    fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn write_confirmed(&self, cmd: redis::Cmd) -> Result<redis::Value, StoreError> {
        self.writes.write_confirmed(cmd).await
    }

    /// Applies a delta to its customer's statistics, fenced by the customer partition's lease
    /// `token`, and removes its inbox entry (when given) in the same script call.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `token` is not the lease's (nothing written), or when
    /// Redis fails.
    pub async fn apply_delta(
        &self,
        d: &Delta,
        token: &str,
        inbox_entry: Option<&str>,
    ) -> Result<Applied, StoreError> {
        let mut conn = self.conn();
        let keys = self.keys();
        let partition = keys.partition(&d.c);
        let contribution = match &d.k {
            Some(c) => serde_json::to_string(c).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => String::new(),
        };
        let applied: i64 = scripts::STATS
            .script()
            .key(keys.stats_keys().customer_contributions(&d.c))
            .key(keys.stats_keys().customer_stats(&d.c))
            .key(keys.stats_keys().customers(partition))
            .key(keys.order_keys().customer_orders(&d.c))
            .key(keys.lease(partition))
            .key(keys.stats_keys().inbox(partition))
            .arg(&d.o)
            .arg(d.v)
            .arg(contribution)
            .arg(&d.c)
            .arg(token)
            .arg(inbox_entry.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        match applied {
            1 => Ok(Applied::Changed),
            0 => Ok(Applied::AlreadySeen),
            _ => Err(StoreError::Fenced { partition }),
        }
    }

    /// Removes a settled entry from an order partition's outbox.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails (the entry is settled again later, to no effect).
    pub async fn remove_outbox_entry(&self, partition: u16, entry: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _removed: i64 = conn
            .xdel(self.keys().stats_keys().outbox(partition), &[entry])
            .await?;
        Ok(())
    }

    /// Relays a delta whose customer lives in a partition another daemon owns: appends it to
    /// that partition's inbox (confirmed by `redis.wait_replicas` replicas first), then removes
    /// it from the order partition's outbox and tells the customer's owner (`<prefix>:inbox`,
    /// payload = the partition). A crash between the two relays it again; the stats apply
    /// ignores the versions it has seen.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails (the outbox entry stays for the next sweep).
    pub async fn relay_delta(&self, d: &Delta, outbox_entry: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let keys = self.keys();
        let json = serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let customer_partition = keys.partition(&d.c);
        // Confirmed (redis.wait_replicas) before the outbox entry goes: on a cluster the inbox
        // is on another master, whose failover must not lose the delta the outbox let go of.
        let mut add = redis::cmd("XADD");
        add.arg(keys.stats_keys().inbox(customer_partition))
            .arg("*")
            .arg("delta")
            .arg(json);
        self.write_confirmed(add).await?;
        let _: (i64, i64) = redis::pipe()
            .xdel(
                keys.stats_keys().outbox(keys.partition(&d.o)),
                &[outbox_entry],
            )
            .publish(keys.stats_keys().inbox_channel(), customer_partition)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Up to `count` entries of a customer partition's inbox, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or an entry cannot be read.
    pub async fn inbox_entries(
        &self,
        partition: u16,
        count: usize,
    ) -> Result<Vec<(String, Delta)>, StoreError> {
        self.deltas_of(self.keys().stats_keys().inbox(partition), count)
            .await
    }

    /// The version of an order's contribution its customer's statistics hold, if any.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the contribution cannot be read.
    pub async fn applied_version(
        &self,
        customer_id: &str,
        order_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn();
        let raw: Option<String> = conn
            .hget(
                self.keys().stats_keys().customer_contributions(customer_id),
                order_id,
            )
            .await?;
        #[derive(serde::Deserialize)]
        struct Versioned {
            v: u64,
        }
        raw.map(|r| {
            serde_json::from_str::<Versioned>(&r)
                .map(|c| c.v)
                .map_err(|e| StoreError::Corrupt(format!("contribution of {order_id}: {e}")))
        })
        .transpose()
    }

    /// How many deltas wait in the outboxes and inboxes of `partitions` (0 = statistics are
    /// settled there).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn unsettled_deltas(&self, partitions: &[u16]) -> Result<u64, StoreError> {
        if partitions.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.xlen(self.keys().stats_keys().outbox(p))
                .xlen(self.keys().stats_keys().inbox(p));
        }
        let lens: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(lens.iter().sum())
    }

    /// Of `partitions`, those whose outbox and those whose inbox hold entries, in one round
    /// trip (a sweep then reads only those: usually none).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn with_deltas(
        &self,
        partitions: &[u16],
    ) -> Result<(Vec<u16>, Vec<u16>), StoreError> {
        if partitions.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.xlen(self.keys().stats_keys().outbox(p))
                .xlen(self.keys().stats_keys().inbox(p));
        }
        let lens: Vec<u64> = pipe.query_async(&mut conn).await?;
        let mut outbox = Vec::new();
        let mut inbox = Vec::new();
        for (&p, pair) in partitions.iter().zip(lens.chunks(2)) {
            if pair.first().is_some_and(|n| *n > 0) {
                outbox.push(p);
            }
            if pair.get(1).is_some_and(|n| *n > 0) {
                inbox.push(p);
            }
        }
        Ok((outbox, inbox))
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
        self.deltas_of(self.keys().stats_keys().outbox(partition), count)
            .await
    }

    async fn deltas_of(
        &self,
        key: String,
        count: usize,
    ) -> Result<Vec<(String, Delta)>, StoreError> {
        let mut conn = self.conn();
        let reply: redis::streams::StreamRangeReply =
            conn.xrange_count(key, "-", "+", count).await?;
        let mut out = Vec::new();
        for e in reply.ids {
            let raw: Option<String> = e.get("delta");
            let delta = raw
                .as_deref()
                .map(serde_json::from_str::<Delta>)
                .transpose()
                .map_err(|err| StoreError::Corrupt(format!("delta entry {}: {err}", e.id)))?;
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
            .hgetall(self.keys().stats_keys().customer_stats(customer_id))
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
        let ckey = keys.stats_keys().customer_contributions(customer_id);
        let skey = keys.stats_keys().customer_stats(customer_id);
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
        pipe.sadd(
            keys.stats_keys().customers(keys.partition(customer_id)),
            customer_id,
        )
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
            .zrange(self.keys().order_keys().customer_orders(customer_id), 0, -1)
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
            .zrem(self.keys().order_keys().customer_orders(customer_id), ids)
            .await?;
        // Each gone order's id from its partition's index too.
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.zrem(
                self.keys().order_keys().orders(self.keys().partition(id)),
                id,
            );
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
                .arg(self.keys().stats_keys().customers(p))
                .arg(each);
        }
        let rows: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut sample: Vec<String> = rows.into_iter().flatten().collect();
        sample.truncate(count);
        Ok(sample)
    }
}
