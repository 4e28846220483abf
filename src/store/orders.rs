//! The orders' part of Redis: the per-order commit (through the batchers), loading orders one,
//! many or a round's worth at a time, and the order indexes (a customer's, a partition's).

use std::sync::Arc;

use redis::AsyncCommands;

use super::{
    index_page, lane_conn, Commit, CommitOutcome, Committer, Keys, Loaded, RedisConn, Store,
    StoreError,
};
use crate::domain::Order;
use crate::metrics::Metrics;

/// The orders' part of Redis. A narrow handle (the connections, the commit batchers and the
/// key names), made by [`Store::order_store`].
#[derive(Clone)]
pub struct OrderStore {
    conn: RedisConn,
    bulk: RedisConn,
    keys: Keys,
    committer: Committer,
    bulk_committer: Committer,
    test_clocks: Option<(RedisConn, Committer)>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn order_store(&self) -> OrderStore {
        OrderStore {
            conn: self.conn.clone(),
            bulk: self.bulk.clone(),
            keys: self.keys.clone(),
            committer: self.committer.clone(),
            bulk_committer: self.bulk_committer.clone(),
            test_clocks: self.test_clocks.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl OrderStore {
    /// Commits through the batcher and waits until Redis has it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.committer.commit(commit).await
    }

    /// [`OrderStore::commit`] for the scheduler: over the bulk connection.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn commit_bulk(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.bulk_committer.commit(commit).await
    }

    /// [`OrderStore::commit`] for a fired timer of a test clock's order: over the test clocks' own
    /// connection (the bulk one when there is none).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn commit_test_clock(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        match &self.test_clocks {
            Some((_, committer)) => committer.commit(commit).await,
            None => self.bulk_committer.commit(commit).await,
        }
    }

    /// Reads an order (and whether its id was deleted).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the stored JSON does not parse.
    pub async fn load(&self, order_id: &str) -> Result<Loaded, StoreError> {
        let mut conn = self.conn.clone();
        let (json, deleted): (Option<String>, bool) = redis::pipe()
            .hget(self.keys.order_keys().order(order_id), "d")
            .sismember(
                self.keys
                    .order_keys()
                    .deleted(self.keys.partition(order_id)),
                order_id,
            )
            .query_async(&mut conn)
            .await?;
        match json {
            Some(j) => serde_json::from_str(&j)
                .map(|o| Loaded::Present(Box::new(o)))
                .map_err(|e| StoreError::Corrupt(format!("order {order_id}: {e}"))),
            None if deleted => Ok(Loaded::Deleted),
            None => Ok(Loaded::Missing),
        }
    }

    /// Reads many orders at once (missing ones are skipped).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or stored JSON does not parse.
    pub async fn load_many(&self, ids: &[String]) -> Result<Vec<Order>, StoreError> {
        self.load_many_on(self.conn.clone(), ids).await
    }

    /// Ids of partition `partition`'s orders, oldest first, from rank `start`, at most `count`
    /// (a walk over every order, e.g. a forecast).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn partition_order_ids(
        &self,
        partition: u16,
        test_clock: Option<&str>,
        start: usize,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.bulk.clone();
        let end = isize::try_from(start + count).unwrap_or(isize::MAX) - 1;
        let start = isize::try_from(start).unwrap_or(isize::MAX);
        let key = self.keys.order_keys().orders_of(partition, test_clock);
        Ok(conn.zrange(key, start, end).await?)
    }

    /// Reads many orders at once for a listing: missing ones and ones that cannot be read are
    /// skipped, each unreadable one logged at error level and counted
    /// (`recur_orders_unreadable_total`), so one damaged order never fails a listing of others
    /// (reading it by id answers the error).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn load_readable(&self, ids: &[String]) -> Result<Vec<Order>, StoreError> {
        let rows = self.rows(self.conn.clone(), ids).await?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter_map(|(id, row)| {
                let json = row?;
                serde_json::from_str(&json)
                    .inspect_err(|e| self.unreadable(id, e))
                    .ok()
            })
            .collect())
    }

    /// The stored JSON of many orders, by id (None: missing), not parsed: for a walk over
    /// many orders that parses them off the daemon's own thread (the forecast). One that
    /// cannot be parsed is skipped and reported with [`OrderStore::unreadable`].
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn order_rows(&self, ids: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.rows(self.conn.clone(), ids).await
    }

    /// An order whose stored JSON cannot be read, skipped by a listing or a walk: logged at
    /// error level and counted (`recur_orders_unreadable_total`).
    pub fn unreadable(&self, order_id: &str, error: &dyn std::fmt::Display) {
        self.metrics.order_unreadable();
        tracing::error!(order_id = %order_id, error = %error, "stored order cannot be read; skipped");
    }

    async fn rows(
        &self,
        mut conn: RedisConn,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.order_keys().order(id), "d");
        }
        Ok(pipe.query_async(&mut conn).await?)
    }

    async fn load_many_on(
        &self,
        conn: RedisConn,
        ids: &[String],
    ) -> Result<Vec<Order>, StoreError> {
        let rows = self.rows(conn, ids).await?;
        ids.iter()
            .zip(rows)
            .filter_map(|(id, row)| row.map(|j| (id, j)))
            .map(|(id, j)| {
                serde_json::from_str(&j)
                    .map_err(|e| StoreError::Corrupt(format!("order {id}: {e}")))
            })
            .collect()
    }

    /// Reads many orders at once, by id (missing ones are absent from the map), over the bulk
    /// connection (the scheduler's round preload).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or stored JSON does not parse.
    pub async fn load_map(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Order>, StoreError> {
        Ok(self
            .load_many_on(self.bulk.clone(), ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect())
    }

    /// [`OrderStore::load_map`] over the connection of `test_clock`'s lane.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or stored JSON does not parse.
    pub async fn load_map_for(
        &self,
        ids: &[String],
        test_clock: Option<&str>,
    ) -> Result<std::collections::HashMap<String, Order>, StoreError> {
        Ok(self
            .load_many_on(
                lane_conn(
                    self.test_clocks.as_ref().map(|(c, _)| c),
                    &self.bulk,
                    test_clock,
                ),
                ids,
            )
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect())
    }

    /// A page of a customer's order ids, newest first, by position in its index.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn order_ids_page(
        &self,
        customer_id: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.order_keys().customer_orders(customer_id);
        let stop = start + count.max(1) - 1;
        Ok(conn.zrevrange(key, start as isize, stop as isize).await?)
    }

    /// Up to `count` orders of a customer's index (or, with None, of every partition's index,
    /// merged), newest first (ties by id, descending), strictly after `cursor` (the creation
    /// ms and id of the last one seen). The bool says whether the indexes may hold more.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn orders_before(
        &self,
        customer_id: Option<&str>,
        test_clock: Option<&str>,
        cursor: Option<&(i64, String)>,
        count: usize,
    ) -> Result<(Vec<(i64, String)>, bool), StoreError> {
        let keys: Vec<String> = match customer_id {
            Some(c) => vec![self.keys.order_keys().customer_orders(c)],
            None => (0..self.keys.partitions())
                .map(|p| self.keys.order_keys().orders_of(p, test_clock))
                .collect(),
        };
        self.index_before(keys, cursor, count).await
    }

    /// Up to `count` members of the sorted sets `keys` (scored by creation ms), merged newest
    /// first (ties by member, descending), strictly after `cursor`. The bool says whether the
    /// sets may hold more.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn index_before(
        &self,
        keys: Vec<String>,
        cursor: Option<&(i64, String)>,
        count: usize,
    ) -> Result<(Vec<(i64, String)>, bool), StoreError> {
        index_page(self.conn.clone(), keys, cursor, count).await
    }
}
