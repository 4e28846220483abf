//! Partition leases (SPEC 6): `<prefix>:{p<N>}:lease` holds `<daemon id>:<epoch>` with a TTL,
//! the epoch from `INCR <prefix>:{p<N>}:epoch` at each acquisition. Every script here touches
//! one partition's keys only. The token a daemon got is its fencing token: the commit script
//! refuses a write whose token is not the lease's current value, so a daemon that lost a lease
//! can never write to that partition again.

use redis::AsyncCommands;

use super::{scripts, Keys, RedisConn, Store, StoreError};

/// Why a daemon may not join the live ones.
#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    #[error(
        "the daemons running on this data ({live:?}) have other behaviour settings \
         (partitions, lifecycle, status_manager, promo_codes: fingerprint {stored} in {meta}) \
         than this one ({configured}); start it with the same settings, or stop the others first"
    )]
    Mismatch {
        meta: String,
        stored: String,
        configured: String,
        live: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A held lease: the partition and the token that fences its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    pub partition: u16,
    /// `<daemon id>:<epoch>`, the lease key's value.
    pub token: String,
    /// At acquisition: until when (Unix ms) the previous holder had the lease, if it was ever
    /// held.
    pub previous_until: Option<i64>,
}

/// Partition leases and the daemons' heartbeats (SPEC 6). A narrow handle (a connection and the key names), made by
/// [`Store::lease_store`].
#[derive(Clone)]
pub struct LeaseStore {
    conn: RedisConn,
    keys: Keys,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn lease_store(&self) -> LeaseStore {
        LeaseStore {
            conn: self.conn(),
            keys: self.keys().clone(),
        }
    }
}

impl LeaseStore {
    /// Acquires partition `p`'s lease for `daemon_id` if it is free.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn acquire_lease(
        &self,
        p: u16,
        daemon_id: &str,
        ttl_ms: u64,
    ) -> Result<Option<LeaseToken>, StoreError> {
        let mut conn = self.conn.clone();
        let until = chrono::Utc::now().timestamp_millis() + i64::try_from(ttl_ms).unwrap_or(0);
        let acquired: Option<(u64, String)> = scripts::LEASE_ACQUIRE
            .script()
            .key(self.keys.lease(p))
            .key(self.keys.epoch(p))
            .key(self.keys.held_until(p))
            .arg(daemon_id)
            .arg(ttl_ms)
            .arg(until)
            .invoke_async(&mut conn)
            .await?;
        Ok(acquired.map(|(e, previous)| LeaseToken {
            partition: p,
            token: format!("{daemon_id}:{e}"),
            previous_until: previous.parse().ok(),
        }))
    }

    /// Of `partitions`, those whose lease nobody holds right now (one pipeline of EXISTS, one
    /// key each, so it works on a cluster too).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn free_leases(&self, partitions: &[u16]) -> Result<Vec<u16>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.exists(self.keys.lease(p));
        }
        let held: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(partitions
            .iter()
            .zip(held)
            .filter(|(_, h)| !h)
            .map(|(p, _)| *p)
            .collect())
    }

    /// Renews each held lease (one pipeline); returns, in order, whether each still holds.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails (then nothing is known about the leases).
    pub async fn renew_leases(
        &self,
        held: &[LeaseToken],
        ttl_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let until = chrono::Utc::now().timestamp_millis() + i64::try_from(ttl_ms).unwrap_or(0);
        let mut pipe = redis::pipe();
        for l in held {
            pipe.cmd("EVAL")
                .arg(scripts::LEASE_RENEW.source())
                .arg(2)
                .arg(self.keys.lease(l.partition))
                .arg(self.keys.held_until(l.partition))
                .arg(&l.token)
                .arg(ttl_ms)
                .arg(until);
        }
        let renewed: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(renewed.into_iter().map(|r| r == 1).collect())
    }

    /// Releases a held lease (compare-and-delete); false when it was no longer held.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn release_lease(&self, lease: &LeaseToken) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let released: i64 = scripts::LEASE_RELEASE
            .script()
            .key(self.keys.lease(lease.partition))
            .arg(&lease.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }

    /// Records that `daemon_id` is alive now (`<prefix>:daemons`, score = last beat in Unix
    /// ms) and drops daemons silent for longer than `ttl_ms`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn heartbeat(&self, daemon_id: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let silent = now - i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        let key = self.keys.daemons();
        let _: (i64, i64) = redis::pipe()
            .zadd(&key, daemon_id, now)
            .zrembyscore(&key, "-inf", silent)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Records the group's behaviour fingerprint in meta (`behaviour`), or refuses one that
    /// differs from the recorded one while another daemon is live (SPEC 10). Returns the
    /// fingerprint recorded before, when it differed and no daemon was live (replaced).
    ///
    /// # Errors
    /// [`BehaviourError::Mismatch`] when live daemons run with another fingerprint.
    pub async fn settle_behaviour(
        &self,
        fingerprint: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>, BehaviourError> {
        let mut conn = self.conn.clone();
        let meta = self.keys.meta();
        let stored: Option<String> = conn
            .hget(&meta, "behaviour")
            .await
            .map_err(StoreError::from)?;
        if stored.as_deref() == Some(fingerprint) {
            return Ok(None);
        }
        let live = self.live_daemons(ttl_ms).await?;
        if let (Some(stored), false) = (&stored, live.is_empty()) {
            return Err(BehaviourError::Mismatch {
                meta,
                stored: stored.clone(),
                configured: fingerprint.to_string(),
                live: live.into_iter().map(|(id, _)| id).collect(),
            });
        }
        let _: () = conn
            .hset(&meta, "behaviour", fingerprint)
            .await
            .map_err(StoreError::from)?;
        Ok(stored)
    }

    /// Removes `daemon_id`'s heartbeat (a clean shutdown).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn leave(&self, daemon_id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::AsyncCommands::zrem(&mut conn, self.keys.daemons(), daemon_id).await?;
        Ok(())
    }

    /// The daemons that beat within the last `ttl_ms`, by id, with their last beat (Unix ms).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn live_daemons(&self, ttl_ms: u64) -> Result<Vec<(String, i64)>, StoreError> {
        let mut conn = self.conn.clone();
        let since =
            chrono::Utc::now().timestamp_millis() - i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        Ok(redis::AsyncCommands::zrangebyscore_withscores(
            &mut conn,
            self.keys.daemons(),
            since,
            "+inf",
        )
        .await?)
    }

    /// The current value of partition `p`'s lease, if held (for tests and operators).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn lease_holder(&self, p: u16) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::AsyncCommands::get(&mut conn, self.keys.lease(p)).await?)
    }
}
