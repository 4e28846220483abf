//! The timers' part of Redis: each partition's due set (`{pN}:timers`, a test clock's own
//! beside it), read by the scheduler's lanes and the metrics, repaired outside a commit.

use super::{lane_conn, scripts, Keys, RedisConn, Store, StoreError};

/// The timers' part of Redis. A narrow handle (the admin, bulk and test-clock connections and
/// the key names), made by [`Store::timer_store`].
#[derive(Clone)]
pub struct TimerStore {
    conn: RedisConn,
    bulk: RedisConn,
    keys: Keys,
    test_clocks: Option<RedisConn>,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn timer_store(&self) -> TimerStore {
        TimerStore {
            conn: self.conn.clone(),
            bulk: self.bulk.clone(),
            keys: self.keys.clone(),
            test_clocks: self.test_clocks.as_ref().map(|(c, _)| c.clone()),
        }
    }
}

impl TimerStore {
    /// The earliest due instant over `partitions`, if any timer is set there.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn earliest_due(&self, partitions: &[u16]) -> Result<Option<i64>, StoreError> {
        if partitions.is_empty() {
            return Ok(None);
        }
        let mut conn = self.bulk.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.cmd("ZRANGE")
                .arg(self.keys.order_keys().timers(p))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let rows: Vec<Vec<(String, i64)>> = pipe.query_async(&mut conn).await?;
        Ok(rows.into_iter().flatten().map(|(_, s)| s).min())
    }

    /// The timers of `partitions` for the metrics: how many are due at or before `now_ms`, and
    /// the earliest due instant (Unix ms), over the admin connection (a scrape never waits
    /// behind the scheduler's pipelines).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn timer_figures(
        &self,
        partitions: &[u16],
        now_ms: i64,
    ) -> Result<(u64, Option<i64>), StoreError> {
        if partitions.is_empty() {
            return Ok((0, None));
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            let key = self.keys.order_keys().timers(p);
            pipe.zcount(&key, "-inf", now_ms)
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let rows: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let (mut due, mut earliest) = (0, None::<i64>);
        let mut rows = rows.into_iter();
        while let (Some(count), Some(first)) = (rows.next(), rows.next()) {
            let corrupt = |e: redis::ParsingError| StoreError::Corrupt(format!("timers: {e}"));
            due += redis::from_redis_value::<u64>(count).map_err(corrupt)?;
            let first: Vec<(String, i64)> = redis::from_redis_value(first).map_err(corrupt)?;
            if let Some((_, at)) = first.first() {
                earliest = Some(earliest.map_or(*at, |e| e.min(*at)));
            }
        }
        Ok((due, earliest))
    }

    /// Those of `partitions` with no timer due at or before `until_ms`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn without_due(
        &self,
        partitions: &[u16],
        test_clock: Option<&str>,
        until_ms: i64,
    ) -> Result<Vec<u16>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = lane_conn(self.test_clocks.as_ref(), &self.bulk, test_clock);
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.zcount(
                self.keys.order_keys().timers_of(p, test_clock),
                "-inf",
                until_ms,
            );
        }
        let due: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(partitions
            .iter()
            .zip(due)
            .filter(|(_, n)| *n == 0)
            .map(|(p, _)| *p)
            .collect())
    }

    /// Order ids due at or before `until_ms` in `partitions` (a scheduler lane's share), sorted
    /// by (due, order id): up to `limit` per partition, cut so that nothing later than an entry
    /// left unread is returned (the result is always a prefix of those partitions' due order).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn due_in(
        &self,
        partitions: &[u16],
        test_clock: Option<&str>,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut conn = lane_conn(self.test_clocks.as_ref(), &self.bulk, test_clock);
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.cmd("ZRANGE")
                .arg(self.keys.order_keys().timers_of(p, test_clock))
                .arg("-inf")
                .arg(until_ms)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .arg("WITHSCORES");
        }
        let rows: Vec<Vec<(String, i64)>> = pipe.query_async(&mut conn).await?;
        let cutoff = rows
            .iter()
            .filter(|r| r.len() >= limit)
            .filter_map(|r| r.last().map(|(_, s)| *s))
            .min()
            .unwrap_or(i64::MAX);
        let mut due: Vec<(i64, String)> = rows
            .into_iter()
            .flatten()
            .filter(|(_, s)| *s <= cutoff)
            .map(|(id, s)| (s, id))
            .collect();
        due.sort();
        Ok(due)
    }

    /// Sets an order's timer outside a commit (repairs a timer that disagrees with its order),
    /// fenced by the writer's lease token like a commit.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease is not held by `lease`; [`StoreError`] when Redis
    /// fails.
    pub async fn set_timer(
        &self,
        order_id: &str,
        test_clock: Option<&str>,
        due_ms: Option<i64>,
        lease: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let p = self.keys.partition(order_id);
        let done: i64 = scripts::SET_TIMER
            .script()
            .key(self.keys.order_keys().timers_of(p, test_clock))
            .key(self.keys.lease(p))
            .arg(lease)
            .arg(order_id)
            .arg(due_ms.map(|d| d.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::Fenced { partition: p })
        }
    }
}
