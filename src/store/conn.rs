//! [`RedisConn`]: the store's connection. A reconnecting connection manager that also retries a
//! call which failed only because the connection dropped under it (Redis restarted, a network
//! blip), with a short bounded backoff, once the manager has reconnected. Such a failure is not
//! the caller's problem; retrying is safe because every commit is guarded by the order's version
//! and the request id, and every other call is a read or an idempotent write.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// The first pause before a retry; each further one doubles, up to [`RETRY_LAST_MS`].
pub const RETRY_FIRST_MS: u64 = 50;
/// The longest pause: with 50 ms doubling, a call is tried 6 times over about 1.5 s.
pub const RETRY_LAST_MS: u64 = 800;

/// A connection manager whose calls survive a dropped connection. Cheap to clone (clones share
/// the connection).
#[derive(Clone)]
pub struct RedisConn {
    inner: ConnectionManager,
}

impl RedisConn {
    /// Wraps a connection manager.
    pub fn new(inner: ConnectionManager) -> RedisConn {
        RedisConn { inner }
    }
}

/// Whether `e` means the connection was lost (or not back yet), not that Redis refused the
/// command: then the same call may succeed on the reconnected connection.
pub fn is_reconnectable(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_connection_refusal()
}

/// The pauses between attempts: 50, 100, 200, 400, 800 ms.
pub fn retry_pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(RETRY_FIRST_MS), |ms| Some(ms * 2))
        .take_while(|ms| *ms <= RETRY_LAST_MS)
        .map(Duration::from_millis)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut pauses = retry_pauses();
            loop {
                match self.inner.req_packed_command(cmd).await {
                    Err(e) if is_reconnectable(&e) => match pauses.next() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Err(e),
                    },
                    result => return result,
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut pauses = retry_pauses();
            loop {
                match self
                    .inner
                    .req_packed_commands(pipeline, offset, count)
                    .await
                {
                    Err(e) if is_reconnectable(&e) => match pauses.next() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Err(e),
                    },
                    result => return result,
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_and_back_off() {
        let pauses: Vec<u64> = retry_pauses().map(|d| d.as_millis() as u64).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800]);
        assert!(pauses.iter().sum::<u64>() < 2_000);
    }

    #[test]
    fn only_lost_connections_are_retried() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
        assert!(is_reconnectable(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(is_reconnectable(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(is_reconnectable(&io(std::io::ErrorKind::ConnectionRefused)));
        let unreadable = RedisError::from((redis::ErrorKind::Parse, "bad reply"));
        assert!(!is_reconnectable(&unreadable));
    }
}
