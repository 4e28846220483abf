//! The shared simulated clock in Redis (SPEC 6, 10): `<prefix>:{p0}:clock` holds `{mode, now}`
//! and, while an advance runs, its `target`, request id (`advance`) and body hash (`hash`);
//! each partition keeps `{pN}:fired`, how far its owner has fired. Partition 0's owner begins
//! and completes advances; every owner fires its own partitions up to the target. Every write
//! here is fenced by the writer's lease of the key's partition.

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
            .arg(self.keys.clock())
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
            .key(self.keys.clock())
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
                .arg(self.keys.fired(*p))
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
            pipe.get(self.keys.fired(p));
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
            .key(self.keys.clock())
            .key(self.keys.lease(0))
            .key(self.keys.reply(0, request_id))
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
        Ok(redis::AsyncCommands::get(&mut conn, self.keys.reply(p, request_id)).await?)
    }

    /// Tells every daemon that partition 0's owner ran cron job `name` (`<prefix>:cron`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_cron(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 =
            redis::AsyncCommands::publish(&mut conn, self.keys.cron_channel(), name).await?;
        Ok(())
    }

    /// Tells every daemon the shared clock changed (`<prefix>:clock`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_clock(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 =
            redis::AsyncCommands::publish(&mut conn, self.keys.clock_channel(), "moved").await?;
        Ok(())
    }
}
