//! The admin commands' part of Redis: request claims and kept replies (exactly once), the
//! reply channels, and the command streams with their consumer groups and dead letters.

use std::time::Duration;

use redis::AsyncCommands;

use super::{scripts, Confirmer, Keys, RedisConn, Store, StoreError};

/// The admin commands' part of Redis. A narrow handle (the admin connection and the key
/// names), made by [`Store::command_store`].
#[derive(Clone)]
pub struct CommandStore {
    conn: RedisConn,
    keys: Keys,
    /// Until when (Unix ms) replies kept by revision 1 are read too.
    legacy_replies_until: Option<i64>,
    writes: Confirmer,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn command_store(&self) -> CommandStore {
        CommandStore {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            legacy_replies_until: self.legacy_replies_until,
            writes: self.writes.clone(),
        }
    }
}

impl CommandStore {
    /// The replication confirmations this handle's writes and reads go with.
    pub fn confirmer(&self) -> &Confirmer {
        &self.writes
    }

    /// Claims `request_id` for the request body `body_hash` (SET NX, `ttl_secs`, in the id's
    /// own partition) and reads the reply kept for it in `partition`, in one round trip.
    /// Returns the hash of an earlier claim with another body, if any, and the kept reply's
    /// JSON, if any.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn claim_request(
        &self,
        partition: u16,
        request_id: &str,
        body_hash: &str,
        ttl_secs: u64,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let mut conn = self.conn.clone();
        let claim = self.keys.admin_keys().request_claim(request_id);
        let (_set, claimed, kept): (Option<String>, Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(&claim)
            .arg(body_hash)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs)
            .get(&claim)
            .get(self.keys.admin_keys().reply(partition, request_id))
            .query_async(&mut conn)
            .await?;
        let other = claimed.filter(|h| h != body_hash);
        let legacy = self
            .legacy_replies_until
            .is_some_and(|until| chrono::Utc::now().timestamp_millis() < until);
        if kept.is_none() && legacy {
            let old: Option<String> = conn
                .get(self.keys.admin_keys().legacy_reply(request_id))
                .await?;
            return Ok((other, old));
        }
        Ok((other, kept))
    }

    /// Keeps a reply that no order commit carried (reads, clock, refusals before any order).
    /// Never overwrites a reply already kept.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn keep_reply(
        &self,
        partition: u16,
        request_id: &str,
        json: &str,
        ttl_secs: u64,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let kept: i64 = scripts::KEEP_REPLY
            .script()
            .key(self.keys.admin_keys().reply(partition, request_id))
            .key(self.keys.lease(partition))
            .arg(token)
            .arg(json)
            .arg(ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        if kept == 0 {
            return Err(StoreError::Fenced { partition });
        }
        Ok(())
    }

    /// Publishes `message` on `channel` (admin replies).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _receivers: u64 = conn.publish(channel, message).await?;
        Ok(())
    }

    /// Appends an unreadable command-stream entry to `<prefix>:commands:dead`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn dead_letter_command(&self, fields: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _id: String = conn
            .xadd(self.keys.admin_keys().commands_dead(), "*", fields)
            .await?;
        Ok(())
    }

    /// Acknowledges a command-stream entry for `group`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn ack_command(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _acked: u64 = conn.xack(stream, group, &[entry_id]).await?;
        Ok(())
    }

    /// Claims for `consumer` the command-stream entries another consumer of `group` has left
    /// pending for at least `idle` (XAUTOCLAIM); returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn claim_idle_commands(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        idle: Duration,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let mut start = "0-0".to_string();
        let mut claimed = 0;
        loop {
            let (next, entries, _deleted): (String, Vec<redis::Value>, redis::Value) =
                redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(group)
                    .arg(consumer)
                    .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
                    .arg(&start)
                    .arg("COUNT")
                    .arg(256)
                    .arg("JUSTID")
                    .query_async(&mut conn)
                    .await?;
            claimed += entries.len();
            if next == "0-0" {
                return Ok(claimed);
            }
            start = next;
        }
    }

    /// The command-stream entries `consumer` of `group` holds pending, oldest first, at most
    /// `count`: each id with how many times it has been delivered (XPENDING; reading this
    /// delivers nothing).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn pending_commands(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamPendingCountReply = conn
            .xpending_consumer_count(stream, group, "-", "+", count, consumer)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    /// Delivers the pending command-stream entries `ids` to `consumer` again (XCLAIM with no
    /// idle minimum, which counts a delivery); entries deleted meanwhile are left out.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn redeliver_commands(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<redis::streams::StreamId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamClaimReply =
            conn.xclaim(stream, group, consumer, 0, ids).await?;
        Ok(reply.ids)
    }

    /// The command-stream entry `entry_id`, if the stream still has it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn command_entry(
        &self,
        stream: &str,
        entry_id: &str,
    ) -> Result<Option<redis::streams::StreamId>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrange_count(stream, entry_id, entry_id, 1).await?;
        Ok(reply.ids.into_iter().next())
    }

    /// Creates the consumer group `group` of the command stream (and the stream) if it is
    /// missing, reading from `from` (`$`: new entries only; `0`: every entry the stream has).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails (an existing group is not an error).
    pub async fn ensure_command_group(
        &self,
        stream: &str,
        group: &str,
        from: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let created: Result<(), redis::RedisError> =
            conn.xgroup_create_mkstream(stream, group, from).await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }
}
