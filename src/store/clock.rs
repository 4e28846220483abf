//! The shared simulated clock in Redis (SPEC 6, 10): `<prefix>:{p0}:clock` holds `{mode, now}`
//! and, while an advance runs, its `target`, request id (`advance`) and body hash (`hash`);
//! each partition keeps `{pN}:fired`, how far its owner has fired. Partition 0's owner begins
//! and completes advances; every owner fires its own partitions up to the target. Every write
//! here is fenced by the writer's lease of the key's partition.

use redis::AsyncCommands;

use super::{scripts, Keys, RedisConn, Store, StoreError};
use crate::domain::time::{from_millis, to_millis, Instant};

/// The shared clock as partition 0 keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockRecord {
    /// `simulated` or `system`, once recorded.
    pub mode: Option<String>,
    /// The simulated time every owner has fired up to.
    pub now: Option<Instant>,
    /// The advance under way, if any.
    pub advance: Option<Advance>,
}

/// An advance under way: where to, and the request that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    pub target: Instant,
    pub request_id: String,
    pub body_hash: String,
}

/// What beginning an advance found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// Recorded (or it was this request's advance already).
    Begun,
    /// Another request's advance is under way.
    Busy,
    /// The writer does not hold partition 0's lease.
    Fenced,
}

/// The shared simulated clock as partition 0 keeps it, and the partitions' fired marks (SPEC 6, 10). A narrow handle (a connection and the key names), made by
/// [`Store::clock_store`].
#[derive(Clone)]
pub struct ClockStore {
    conn: RedisConn,
    keys: Keys,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn clock_store(&self) -> ClockStore {
        ClockStore {
            conn: self.conn(),
            keys: self.keys().clone(),
        }
    }
}

impl ClockStore {
    /// The shared clock.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or a field cannot be read.
    pub async fn clock_state(&self) -> Result<ClockRecord, StoreError> {
        let mut conn = self.conn.clone();
        type Fields = (
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let (mode, now, target, request_id, body_hash): Fields = redis::cmd("HMGET")
            .arg(self.keys.clock_keys().clock())
            .arg(&["mode", "now", "target", "advance", "hash"])
            .query_async(&mut conn)
            .await?;
        let advance = match (target.and_then(from_millis), request_id) {
            (Some(target), Some(request_id)) => Some(Advance {
                target,
                request_id,
                body_hash: body_hash.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(ClockRecord {
            mode,
            now: now.and_then(from_millis),
            advance,
        })
    }

    /// Records an advance to `target` for request `request_id` (partition 0's owner).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn begin_advance(
        &self,
        token: &str,
        target: Instant,
        request_id: &str,
        body_hash: &str,
    ) -> Result<Begun, StoreError> {
        let mut conn = self.conn.clone();
        let r: String = scripts::CLOCK_BEGIN
            .script()
            .key(self.keys.clock_keys().clock())
            .key(self.keys.lease(0))
            .arg(token)
            .arg(to_millis(&target))
            .arg(request_id)
            .arg(body_hash)
            .invoke_async(&mut conn)
            .await?;
        match r.as_str() {
            "OK" => Ok(Begun::Begun),
            "BUSY" => Ok(Begun::Busy),
            "FENCED" => Ok(Begun::Fenced),
            other => Err(StoreError::UnexpectedReply(other.to_string())),
        }
    }

    /// Records that each `(partition, token)` has fired up to `at` (one pipeline); returns the
    /// partitions whose lease was no longer the writer's (nothing written there).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn mark_fired(
        &self,
        held: &[(u16, String)],
        at: Instant,
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
                .arg(self.keys.clock_keys().fired(*p))
                .arg(self.keys.lease(*p))
                .arg(token)
                .arg(to_millis(&at));
        }
        let marked: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(held
            .iter()
            .zip(marked)
            .filter(|(_, m)| *m == 0)
            .map(|((p, _), _)| *p)
            .collect())
    }

    /// Of `partitions`, those that have not fired up to `at` yet (one pipeline of GETs, one key
    /// each, so it works on a cluster too).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn not_fired(&self, partitions: &[u16], at: Instant) -> Result<Vec<u16>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.get(self.keys.clock_keys().fired(p));
        }
        let fired: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        let at = to_millis(&at);
        Ok(partitions
            .iter()
            .zip(fired)
            .filter(|(_, f)| f.is_none_or(|f| f < at))
            .map(|(p, _)| *p)
            .collect())
    }

    /// Completes the advance of `request_id` to `target` and keeps its reply.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the writer no longer holds partition 0; otherwise when
    /// Redis fails. Ok(false) when that advance is no longer under way (another owner
    /// completed it).
    pub async fn finish_advance(
        &self,
        token: &str,
        target: Instant,
        request_id: &str,
        reply_json: &str,
        reply_ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let r: String = scripts::CLOCK_FINISH
            .script()
            .key(self.keys.clock_keys().clock())
            .key(self.keys.lease(0))
            .key(self.keys.admin_keys().reply(0, request_id))
            .arg(token)
            .arg(to_millis(&target))
            .arg(request_id)
            .arg(reply_json)
            .arg(reply_ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        match r.as_str() {
            "OK" => Ok(true),
            "GONE" => Ok(false),
            "FENCED" => Err(StoreError::Fenced { partition: 0 }),
            other => Err(StoreError::UnexpectedReply(other.to_string())),
        }
    }

    /// The reply kept for `request_id` in partition `p`, if any.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn kept_reply(&self, p: u16, request_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(
            redis::AsyncCommands::get(&mut conn, self.keys.admin_keys().reply(p, request_id))
                .await?,
        )
    }

    /// Tells every daemon that partition 0's owner ran cron job `name` (`<prefix>:cron`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_cron(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 =
            redis::AsyncCommands::publish(&mut conn, self.keys.clock_keys().cron_channel(), name)
                .await?;
        Ok(())
    }

    /// Tells every daemon the shared clock changed (`<prefix>:clock`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_clock(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::AsyncCommands::publish(
            &mut conn,
            self.keys.clock_keys().clock_channel(),
            "moved",
        )
        .await?;
        Ok(())
    }
}

impl ClockStore {
    /// The clock mode and simulated time the data was made with, if recorded.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn clock_record(&self) -> Result<(Option<String>, Option<Instant>), StoreError> {
        let mut conn = self.conn.clone();
        let (mode, now): (Option<String>, Option<i64>) = redis::pipe()
            .hget(self.keys.clock_keys().clock(), "mode")
            .hget(self.keys.clock_keys().clock(), "now")
            .query_async(&mut conn)
            .await?;
        Ok((mode, now.and_then(from_millis)))
    }

    /// Records the clock mode and (simulated) start instant unless recorded already (HSETNX
    /// each, so of daemons starting together the first one's win).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn record_clock_if_new(
        &self,
        mode: &str,
        now: Option<Instant>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.hset_nx(self.keys.clock_keys().clock(), "mode", mode);
        if let Some(now) = now {
            pipe.hset_nx(self.keys.clock_keys().clock(), "now", to_millis(&now));
        }
        let _: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Records the clock mode (and the simulated time, when given).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn save_clock(&self, mode: &str, now: Option<Instant>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.hset(self.keys.clock_keys().clock(), "mode", mode);
        if let Some(now) = now {
            pipe.hset(self.keys.clock_keys().clock(), "now", to_millis(&now));
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// When the cron job `name` last ran (None: never).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the record is not an instant.
    pub async fn cron_last_run(&self, name: &str) -> Result<Option<Instant>, StoreError> {
        let mut conn = self.conn.clone();
        let last: Option<i64> = conn.hget(self.keys.clock_keys().cron(), name).await?;
        last.map(|ms| {
            from_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("cron record {name}: {ms}")))
        })
        .transpose()
    }

    /// Records that the cron job `name` ran at `at`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn record_cron_run(
        &self,
        name: &str,
        at: Instant,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = scripts::FENCED_HSET
            .script()
            .key(self.keys.clock_keys().cron())
            .key(self.keys.lease(0))
            .arg(token)
            .arg(name)
            .arg(to_millis(&at))
            .invoke_async(&mut conn)
            .await?;
        if done == 0 {
            return Err(StoreError::Fenced { partition: 0 });
        }
        Ok(())
    }
}
