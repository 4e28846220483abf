//! The shared simulated clock in Redis (SPEC 6, 10): `<prefix>:{p0}:clock` holds `{mode, now}`
//! and, while an advance runs, its `target`, request id (`advance`) and body hash (`hash`);
//! each partition keeps `{pN}:fired`, how far its owner has fired. Partition 0's owner begins
//! and completes advances; every owner fires its own partitions up to the target. Every write
//! here is fenced by the writer's lease of the key's partition.

use std::sync::LazyLock;

use super::{Store, StoreError};
use crate::domain::time::{from_millis, to_millis, Instant};

/// Begins an advance: fenced by partition 0's lease; refused when another advance (another
/// request id) is under way. Returns 'OK', 'BUSY' or 'FENCED'.
///
/// KEYS: 1 clock hash, 2 partition 0's lease. ARGV: 1 token, 2 target ms, 3 request id,
/// 4 body hash.
static BEGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'FENCED' end
local running = redis.call('HGET', KEYS[1], 'advance')
if running and running ~= ARGV[3] then return 'BUSY' end
redis.call('HSET', KEYS[1], 'target', ARGV[2], 'advance', ARGV[3], 'hash', ARGV[4])
return 'OK'
",
    )
});

/// Records how far a partition has fired, if the writer still holds its lease (and never
/// backwards). 1, or 0 when fenced.
///
/// KEYS: 1 the partition's fired key, 2 its lease. ARGV: 1 token, 2 ms.
const MARK_FIRED: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local at = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[2]) > at then redis.call('SET', KEYS[1], ARGV[2]) end
return 1
";

/// Completes the advance of request id ARGV[3]: now = target, the advance fields gone, and its
/// reply kept (SET NX, the retention TTL), all in partition 0 and fenced by its lease. Returns
/// 'OK', 'GONE' (no such advance under way) or 'FENCED'.
///
/// KEYS: 1 clock hash, 2 partition 0's lease, 3 the reply key. ARGV: 1 token, 2 target ms,
/// 3 request id, 4 the kept reply JSON, 5 reply TTL seconds.
static FINISH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'FENCED' end
if redis.call('HGET', KEYS[1], 'advance') ~= ARGV[3] then return 'GONE' end
redis.call('HSET', KEYS[1], 'now', ARGV[2])
redis.call('HDEL', KEYS[1], 'target', 'advance', 'hash')
redis.call('SET', KEYS[3], ARGV[4], 'NX', 'EX', ARGV[5])
return 'OK'
",
    )
});

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

impl Store {
    /// The shared clock.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or a field cannot be read.
    pub async fn clock_state(&self) -> Result<ClockRecord, StoreError> {
        let mut conn = self.conn();
        type Fields = (
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let (mode, now, target, request_id, body_hash): Fields = redis::cmd("HMGET")
            .arg(self.keys().clock())
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
        let mut conn = self.conn();
        let r: String = BEGIN
            .key(self.keys().clock())
            .key(self.keys().lease(0))
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
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for (p, token) in held {
            pipe.cmd("EVAL")
                .arg(MARK_FIRED)
                .arg(2)
                .arg(self.keys().fired(*p))
                .arg(self.keys().lease(*p))
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
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.get(self.keys().fired(p));
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
        let mut conn = self.conn();
        let r: String = FINISH
            .key(self.keys().clock())
            .key(self.keys().lease(0))
            .key(self.keys().reply(0, request_id))
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
        let mut conn = self.conn();
        Ok(redis::AsyncCommands::get(&mut conn, self.keys().reply(p, request_id)).await?)
    }

    /// Tells every daemon that partition 0's owner ran cron job `name` (`<prefix>:cron`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_cron(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 =
            redis::AsyncCommands::publish(&mut conn, self.keys().cron_channel(), name).await?;
        Ok(())
    }

    /// Tells every daemon the shared clock changed (`<prefix>:clock`).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn announce_clock(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 =
            redis::AsyncCommands::publish(&mut conn, self.keys().clock_channel(), "moved").await?;
        Ok(())
    }
}
