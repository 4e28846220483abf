//! Test clocks in Redis (SPEC 11.5). A clock is a hash in its own partition
//! (`<prefix>:{pC}:tc:<id>`: `name`, `frozen`, `created`), listed in that partition's
//! `testclocks` index. Its orders keep their timers and index entries in per-partition keys of
//! the clock (`{pN}:tc:<id>:timers`, `{pN}:tc:<id>:orders`), which the live scheduler never
//! reads.
//!
//! A job on a clock (an advance or a deletion) is recorded in the clock's hash (`job`,
//! `target`, `req`, `hash`, and `seq`, a number per job) and in partition C's `tc:jobs` set by
//! the owner of partition C; every owner does the job over its partitions and records it in
//! `{pN}:tc:<id>:done` (= the job's seq, fenced by its lease), and partition C's owner completes
//! it once every partition has (the clock's frozen time moves, or the clock is gone) and keeps
//! its reply. Like the shared clock's advance (`store/clock.rs`), so a job survives the death
//! of any daemon: the partitions' next owners do their part and a retried request id gets the
//! kept reply.

use super::{scripts, Keys, RedisConn, Store, StoreError};
use crate::domain::time::{from_millis, to_millis, Instant};

/// A test clock as Redis keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestClock {
    pub id: String,
    pub name: Option<String>,
    /// The clock's time: what every command on its orders sees.
    pub frozen: Instant,
    pub created: Instant,
    /// The job under way, if any.
    pub job: Option<TestClockJob>,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Fires every timer of the clock's orders due up to the target.
    Advance,
    /// Deletes the clock's orders, customers and the clock.
    Delete,
}

impl JobKind {
    fn as_str(self) -> &'static str {
        match self {
            JobKind::Advance => "advance",
            JobKind::Delete => "delete",
        }
    }
}

/// A job under way on a clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestClockJob {
    pub kind: JobKind,
    pub target: Instant,
    pub request_id: String,
    pub body_hash: String,
    /// The job's number: a partition has done it when its done key holds at least this.
    pub seq: u64,
    /// A deletion's counts, taken when it began.
    pub orders: u64,
    pub customers: u64,
}

/// What beginning a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobBegun {
    Begun,
    /// Another request's job is under way.
    Busy,
    Missing,
    /// An advance to before the clock's time.
    Backwards,
    Fenced,
}

impl TestClock {
    /// The clock as replies show it.
    pub fn json(&self) -> serde_json::Value {
        use crate::domain::time::format_instant;
        serde_json::json!({
            "testClockId": self.id,
            "name": self.name,
            "frozenTime": format_instant(&self.frozen),
            "status": if self.job.is_some() { "ADVANCING" } else { "READY" },
            "createdDate": format_instant(&self.created),
        })
    }
}

/// The test clocks' part of Redis (SPEC 11.5): clocks, their jobs and the customers bound to
/// them. A narrow handle (a connection and the key names), made by [`Store::test_clock_store`].
#[derive(Clone)]
pub struct TestClockStore {
    conn: RedisConn,
    keys: Keys,
}

impl Store {
    /// The test clocks' handle, over the store's admin connection.
    pub fn test_clock_store(&self) -> TestClockStore {
        TestClockStore {
            conn: self.conn(),
            keys: self.keys().clone(),
        }
    }
}

impl TestClockStore {
    /// Creates a test clock (fenced by its partition's lease). Ok(false) when it exists.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the writer lost the partition; otherwise Redis.
    pub async fn create_test_clock(
        &self,
        token: &str,
        clock: &TestClock,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let p = self.keys.partition(&clock.id);
        let r: String = scripts::TEST_CLOCK_CREATE
            .script()
            .key(self.keys.test_clock_keys().test_clock(&clock.id))
            .key(self.keys.lease(p))
            .key(self.keys.test_clock_keys().test_clocks(p))
            .arg(token)
            .arg(&clock.id)
            .arg(clock.name.as_deref().unwrap_or(""))
            .arg(to_millis(&clock.frozen))
            .arg(to_millis(&clock.created))
            .invoke_async(&mut conn)
            .await?;
        match r.as_str() {
            "OK" => Ok(true),
            "EXISTS" => Ok(false),
            "FENCED" => Err(StoreError::Fenced { partition: p }),
            other => Err(StoreError::UnexpectedReply(other.to_string())),
        }
    }

    /// A test clock, if it exists.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or a field cannot be read.
    pub async fn test_clock(&self, id: &str) -> Result<Option<TestClock>, StoreError> {
        Ok(self
            .test_clocks_by_id(&[id.to_string()])
            .await?
            .pop()
            .flatten())
    }

    /// Test clocks by id (None for those that do not exist), in one round trip.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or a field cannot be read.
    pub async fn test_clocks_by_id(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<TestClock>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        const FIELDS: [&str; 10] = [
            "name",
            "frozen",
            "created",
            "job",
            "target",
            "req",
            "hash",
            "seq",
            "orders",
            "customers",
        ];
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.test_clock_keys().test_clock(id))
                .arg(&FIELDS);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut conn).await?;
        ids.iter()
            .zip(rows)
            .map(|(id, f)| parse_clock(id, &f))
            .collect()
    }

    /// A page of test clocks, newest first, after `cursor` (creation ms, id); whether there
    /// may be more.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn list_test_clocks(
        &self,
        cursor: Option<&(i64, String)>,
        count: usize,
    ) -> Result<(Vec<TestClock>, Option<(i64, String)>), StoreError> {
        let keys = (0..self.keys.partitions())
            .map(|p| self.keys.test_clock_keys().test_clocks(p))
            .collect();
        let (rows, more) = super::index_page(self.conn.clone(), keys, cursor, count).await?;
        let ids: Vec<String> = rows.iter().map(|(_, id)| id.clone()).collect();
        let clocks = self.test_clocks_by_id(&ids).await?;
        let next = if more { rows.last().cloned() } else { None };
        Ok((clocks.into_iter().flatten().collect(), next))
    }

    /// Begins job `kind` of request `request_id` on a clock (its partition's owner).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin_test_clock_job(
        &self,
        token: &str,
        clock: &str,
        kind: JobKind,
        target: Instant,
        request_id: &str,
        body_hash: &str,
        counts: (u64, u64),
    ) -> Result<JobBegun, StoreError> {
        let mut conn = self.conn.clone();
        let p = self.keys.partition(clock);
        let r: String = scripts::TEST_CLOCK_BEGIN
            .script()
            .key(self.keys.test_clock_keys().test_clock(clock))
            .key(self.keys.lease(p))
            .key(self.keys.test_clock_keys().test_clock_jobs(p))
            .arg(token)
            .arg(clock)
            .arg(kind.as_str())
            .arg(to_millis(&target))
            .arg(request_id)
            .arg(body_hash)
            .arg(counts.0)
            .arg(counts.1)
            .invoke_async(&mut conn)
            .await?;
        Ok(match r.as_str() {
            "OK" => JobBegun::Begun,
            "BUSY" => JobBegun::Busy,
            "MISSING" => JobBegun::Missing,
            "BACKWARDS" => JobBegun::Backwards,
            "FENCED" => JobBegun::Fenced,
            other => return Err(StoreError::UnexpectedReply(other.to_string())),
        })
    }

    /// The clocks with a job under way, over every partition (one pipeline).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn test_clock_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            pipe.smembers(self.keys.test_clock_keys().test_clock_jobs(p));
        }
        let sets: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        Ok(sets.into_iter().flatten().collect())
    }

    /// Records that each `(partition, token)` did job `seq` of `clock`; returns the partitions
    /// whose lease was no longer the writer's (nothing written there).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn mark_test_clock_done(
        &self,
        held: &[(u16, String)],
        clock: &str,
        seq: u64,
    ) -> Result<Vec<u16>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (p, token) in held {
            pipe.cmd("EVAL")
                .arg(scripts::MARK_UPTO.source())
                .arg(2)
                .arg(self.keys.test_clock_keys().test_clock_done(*p, clock))
                .arg(self.keys.lease(*p))
                .arg(token)
                .arg(seq);
        }
        let marked: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(held
            .iter()
            .zip(marked)
            .filter(|(_, m)| *m == 0)
            .map(|((p, _), _)| *p)
            .collect())
    }

    /// Of `partitions`, those that have not done job `seq` of `clock` yet.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn test_clock_not_done(
        &self,
        partitions: &[u16],
        clock: &str,
        seq: u64,
    ) -> Result<Vec<u16>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.get(self.keys.test_clock_keys().test_clock_done(p, clock));
        }
        let done: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        Ok(partitions
            .iter()
            .zip(done)
            .filter(|(_, d)| d.is_none_or(|d| d < seq))
            .map(|(p, _)| *p)
            .collect())
    }

    /// Completes the job of `request_id` on `clock` and keeps its reply (in the clock's
    /// partition). Ok(false) when that job is no longer under way.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the writer lost the clock's partition; otherwise Redis.
    pub async fn finish_test_clock_job(
        &self,
        token: &str,
        clock: &str,
        request_id: &str,
        reply_json: &str,
        reply_ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let p = self.keys.partition(clock);
        let r: String = scripts::TEST_CLOCK_FINISH
            .script()
            .key(self.keys.test_clock_keys().test_clock(clock))
            .key(self.keys.lease(p))
            .key(self.keys.admin_keys().reply(p, request_id))
            .key(self.keys.test_clock_keys().test_clock_jobs(p))
            .key(self.keys.test_clock_keys().test_clocks(p))
            .arg(token)
            .arg(clock)
            .arg(request_id)
            .arg(reply_json)
            .arg(reply_ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        match r.as_str() {
            "OK" => Ok(true),
            "GONE" => Ok(false),
            "FENCED" => Err(StoreError::Fenced { partition: p }),
            other => Err(StoreError::UnexpectedReply(other.to_string())),
        }
    }

    /// The test clock `customer_id` belongs to, if any.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn customer_clock(&self, customer_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::AsyncCommands::get(
            &mut conn,
            self.keys.test_clock_keys().customer_clock(customer_id),
        )
        .await?)
    }

    /// Binds a customer to `clock` (unless bound already): Ok(None) when the customer is the
    /// clock's, else what it is: Some("LIVE") (orders of its own and no clock) or the other
    /// clock's id.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn bind_customer_clock(
        &self,
        customer_id: &str,
        clock: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let p = self.keys.partition(customer_id);
        let r: String = scripts::TEST_CLOCK_BIND
            .script()
            .key(self.keys.test_clock_keys().customer_clock(customer_id))
            .key(self.keys.order_keys().customer_orders(customer_id))
            .key(self.keys.test_clock_keys().test_clock_customers(p, clock))
            .arg(clock)
            .arg(customer_id)
            .invoke_async(&mut conn)
            .await?;
        Ok((r != "OK").then_some(r))
    }

    /// How many orders and customers a clock has (the counts of its deletion).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn test_clock_counts(&self, clock: &str) -> Result<(u64, u64), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for p in 0..self.keys.partitions() {
            pipe.zcard(self.keys.order_keys().orders_of(p, Some(clock)))
                .scard(self.keys.test_clock_keys().test_clock_customers(p, clock));
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        let orders = counts.iter().step_by(2).sum();
        let customers = counts.iter().skip(1).step_by(2).sum();
        Ok((orders, customers))
    }

    /// Removes what a deleted clock leaves once its orders are deleted: its customers'
    /// statistics, contributions, order indexes and bindings, and its per-partition keys.
    /// Returns how many customers were removed.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails (a retry removes the rest).
    pub async fn remove_test_clock_rest(&self, clock: &str) -> Result<u64, StoreError> {
        let keys = &self.keys;
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for p in 0..keys.partitions() {
            pipe.smembers(keys.test_clock_keys().test_clock_customers(p, clock));
        }
        let sets: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        let mut removed = 0;
        let mut pipe = redis::pipe();
        for (p, customers) in (0..keys.partitions()).zip(&sets) {
            for c in customers {
                removed += 1;
                // One customer's keys share its partition: one atomic DEL.
                pipe.del(&[
                    keys.stats_keys().customer_stats(c),
                    keys.stats_keys().customer_contributions(c),
                    keys.order_keys().customer_orders(c),
                    keys.test_clock_keys().customer_clock(c),
                ])
                .ignore();
                pipe.srem(keys.stats_keys().customers(p), c).ignore();
            }
            pipe.del(&[
                keys.test_clock_keys().test_clock_customers(p, clock),
                keys.order_keys().timers_of(p, Some(clock)),
                keys.order_keys().orders_of(p, Some(clock)),
                keys.test_clock_keys().test_clock_done(p, clock),
            ])
            .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(removed)
    }
}

impl TestClockStore {
    /// Tells every daemon a test clock job began, progressed or completed (payload `tc` on
    /// `<prefix>:clock`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_test_clocks(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 =
            redis::AsyncCommands::publish(&mut conn, self.keys.clock_keys().clock_channel(), "tc")
                .await?;
        Ok(())
    }

    /// Those of `partitions` whose index of the clock's (or the live) orders is empty.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn without_orders(
        &self,
        partitions: &[u16],
        test_clock: Option<&str>,
    ) -> Result<Vec<u16>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.zcard(self.keys.order_keys().orders_of(p, test_clock));
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(partitions
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n == 0)
            .map(|(p, _)| *p)
            .collect())
    }

    /// Drops an index entry whose order does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn drop_order_index_entry(
        &self,
        partition: u16,
        test_clock: Option<&str>,
        order_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::AsyncCommands::zrem(
            &mut conn,
            self.keys.order_keys().orders_of(partition, test_clock),
            order_id,
        )
        .await?;
        Ok(())
    }
}

fn parse_clock(id: &str, f: &[Option<String>]) -> Result<Option<TestClock>, StoreError> {
    let get = |i: usize| f.get(i).cloned().flatten();
    let ms = |i: usize, what: &str| {
        get(i)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(from_millis)
            .ok_or_else(|| StoreError::Corrupt(format!("test clock {id}: {what}")))
    };
    let Some(_) = get(1) else {
        return Ok(None);
    };
    let frozen = ms(1, "frozen")?;
    let created = ms(2, "created")?;
    let count = |i: usize| get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let job = match (get(3).as_deref(), get(5)) {
        (Some(kind), Some(request_id)) => Some(TestClockJob {
            kind: if kind == "delete" {
                JobKind::Delete
            } else {
                JobKind::Advance
            },
            target: ms(4, "target")?,
            request_id,
            body_hash: get(6).unwrap_or_default(),
            seq: count(7),
            orders: count(8),
            customers: count(9),
        }),
        _ => None,
    };
    Ok(Some(TestClock {
        id: id.to_string(),
        name: get(0).filter(|n| !n.is_empty()),
        frozen,
        created,
        job,
    }))
}
