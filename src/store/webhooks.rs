//! What webhook delivery keeps in Redis (SPEC 9, 10): per partition and endpoint a progress
//! hash (`cursor` = the last stream entry whose deliveries are all finished, `n` = its ordinal
//! in the stream, `d:<key>` deliveries finished above the cursor, `r:<key>` retry state,
//! `x:<dead id>` dead letters queued again, `rq` the last retryDeadWebhooks request applied),
//! the partition's dead-letter stream, and partition 0's stream of retryDeadWebhooks
//! requests. Every write goes through `webhook.lua`, fenced by the partition's lease.

use std::collections::HashMap;

use redis::Value;

use super::{scripts, Confirmer, Keys, RedisConn, Store, StoreError};

/// One endpoint's progress in one partition, as Redis holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// `None`: the endpoint never ran on this partition (it starts at the stream's end).
    pub cursor: Option<(String, u64)>,
    /// Delivery keys finished above the cursor.
    pub done: Vec<String>,
    /// Delivery key → retry state JSON.
    pub retrying: HashMap<String, String>,
    /// Dead-letter id → the dead entry's fields as JSON, to deliver again.
    pub requeued: HashMap<String, String>,
}

/// The outcomes of deliveries in one partition, written at once (sets first, then the
/// cursor, the deletes and the dead letters).
#[derive(Debug, Clone, Default)]
pub struct Apply {
    /// Fields to set (`d:<key>` done, `r:<key>` retry state) with their values.
    pub set: Vec<(String, String)>,
    /// The new cursor and its ordinal.
    pub cursor: Option<(String, u64)>,
    /// Fields to delete (done keys now at or below the cursor, a finished retry or requeue).
    pub delete: Vec<String>,
    /// Dead-letter entries to add, each as field/value pairs.
    pub dead: Vec<Vec<(String, String)>>,
}

impl Apply {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.cursor.is_none()
            && self.delete.is_empty()
            && self.dead.is_empty()
    }

    /// Adds `later`'s writes after these.
    pub fn merge(&mut self, later: Apply) {
        self.set.extend(later.set);
        if later.cursor.is_some() {
            self.cursor = later.cursor;
        }
        self.delete.extend(later.delete);
        self.dead.extend(later.dead);
    }

    fn args(&self) -> Vec<String> {
        let (cursor, n) = self
            .cursor
            .clone()
            .map_or((String::new(), String::new()), |(c, n)| (c, n.to_string()));
        let mut args = vec!["apply".to_string(), self.set.len().to_string()];
        for (k, v) in &self.set {
            args.push(k.clone());
            args.push(v.clone());
        }
        args.push(cursor);
        args.push(n);
        args.push(self.delete.len().to_string());
        args.extend(self.delete.iter().cloned());
        for entry in &self.dead {
            args.push(entry.len().to_string());
            for (k, v) in entry {
                args.push(k.clone());
                args.push(v.clone());
            }
        }
        args
    }
}

/// The stream's position: the last entry's id and how many entries were ever added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    pub last_id: String,
    pub added: u64,
}

/// The webhooks' part of Redis: each endpoint's progress per partition, the dead letters and the redelivery requests (SPEC 11.2). A narrow handle (a connection and the key names), made by
/// [`Store::webhook_store`].
#[derive(Clone)]
pub struct WebhookStore {
    conn: RedisConn,
    keys: Keys,
    writes: Confirmer,
}

impl Store {
    /// The handle of this part of Redis.
    pub fn webhook_store(&self) -> WebhookStore {
        WebhookStore {
            conn: self.webhook_conn(),
            keys: self.keys().clone(),
            writes: self.writes.clone(),
        }
    }
}

impl WebhookStore {
    /// The replication confirmations this handle's writes and reads go with.
    pub fn confirmer(&self) -> &Confirmer {
        &self.writes
    }

    async fn run_webhook_script(
        &self,
        partition: u16,
        endpoint: &str,
        token: &str,
        args: Vec<String>,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let keys = &self.keys;
        let r: i64 = scripts::WEBHOOK
            .script()
            .key(keys.webhook_keys().webhook_progress(partition, endpoint))
            .key(keys.lease(partition))
            .key(keys.webhook_keys().webhooks_dead(partition))
            .arg(token)
            .arg(args)
            .invoke_async(&mut conn)
            .await?;
        if r == -1 {
            return Err(StoreError::Fenced { partition });
        }
        Ok(r)
    }

    /// The endpoint's progress in `partition`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn webhook_progress(
        &self,
        partition: u16,
        endpoint: &str,
    ) -> Result<Progress, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(
                self.keys
                    .webhook_keys()
                    .webhook_progress(partition, endpoint),
            )
            .query_async(&mut conn)
            .await?;
        let mut p = Progress::default();
        if let (Some(c), Some(n)) = (fields.get("cursor"), fields.get("n")) {
            p.cursor = Some((c.clone(), n.parse().unwrap_or(0)));
        }
        for (k, v) in fields {
            if let Some(key) = k.strip_prefix("d:") {
                p.done.push(key.to_string());
            } else if let Some(key) = k.strip_prefix("r:") {
                p.retrying.insert(key.to_string(), v);
            } else if let Some(id) = k.strip_prefix("x:") {
                p.requeued.insert(id.to_string(), v);
            }
        }
        Ok(p)
    }

    /// Where the partition's event stream ends now (`0-0`, 0 when it has none).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn stream_end(&self, partition: u16) -> Result<StreamEnd, StoreError> {
        let mut conn = self.conn.clone();
        let info: Result<Value, redis::RedisError> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(self.keys.order_keys().events(partition))
            .query_async(&mut conn)
            .await;
        let info = match info {
            Ok(v) => v,
            // No stream yet.
            Err(e) if e.to_string().contains("no such key") => {
                return Ok(StreamEnd {
                    last_id: "0-0".into(),
                    added: 0,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let mut end = StreamEnd {
            last_id: "0-0".into(),
            added: 0,
        };
        let pairs: Vec<Value> = match info {
            Value::Array(a) => a,
            Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let k: String = redis::from_redis_value(k).unwrap_or_default();
            match k.as_str() {
                "last-generated-id" => {
                    end.last_id = redis::from_redis_value(v).unwrap_or_else(|_| "0-0".into())
                }
                "entries-added" => end.added = redis::from_redis_value(v).unwrap_or(0),
                _ => {}
            }
        }
        Ok(end)
    }

    /// Up to `count` change entries of the partition's stream after `after`: (id, change JSON).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn entries_after(
        &self,
        partition: u16,
        after: &str,
        count: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(self.keys.order_keys().events(partition))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, fields)| {
                let change = fields
                    .into_iter()
                    .find(|(k, _)| k == "change")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                (id, change)
            })
            .collect())
    }

    /// Records where a new endpoint starts (unless it has a cursor already); whether it did.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the partition's lease is another daemon's.
    pub async fn webhook_init(
        &self,
        partition: u16,
        endpoint: &str,
        token: &str,
        cursor: &str,
        n: u64,
    ) -> Result<bool, StoreError> {
        let args = vec!["init".into(), cursor.to_string(), n.to_string()];
        Ok(self
            .run_webhook_script(partition, endpoint, token, args)
            .await?
            == 1)
    }

    /// Writes the outcomes of several partitions' deliveries in one round trip: per write,
    /// `Ok` or the error (a fenced partition: [`StoreError::Fenced`]).
    ///
    /// # Errors
    /// [`StoreError`] when the round trip fails (nothing is known to be written).
    pub async fn webhook_apply_many(
        &self,
        endpoint: &str,
        writes: &[(u16, String, Apply)],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let keys = &self.keys;
        // EVALSHA: the script's text is not sent (and hashed by Redis) with every write.
        let sha = scripts::WEBHOOK.sha();
        let mut pipe = redis::pipe();
        for (p, token, apply) in writes {
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(3)
                .arg(keys.webhook_keys().webhook_progress(*p, endpoint))
                .arg(keys.lease(*p))
                .arg(keys.webhook_keys().webhooks_dead(*p))
                .arg(token)
                .arg(apply.args());
        }
        let results: Vec<i64> = match pipe.query_async(&mut conn).await {
            Err(e) if scripts::is_noscript_error(&e) => {
                // A restarted Redis forgot it: load them, then the same writes again.
                scripts::load_all(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        Ok(writes
            .iter()
            .zip(results)
            .map(|((p, _, _), r)| {
                if r == -1 {
                    Err(StoreError::Fenced { partition: *p })
                } else {
                    Ok(())
                }
            })
            .collect())
    }

    /// Queues the endpoint's dead letters of `partition` for delivery again (once per
    /// request id); how many.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the partition's lease is another daemon's.
    pub async fn webhook_requeue(
        &self,
        partition: u16,
        endpoint: &str,
        token: &str,
        request: &str,
    ) -> Result<u64, StoreError> {
        let args = vec![
            "requeue".to_string(),
            endpoint.to_string(),
            request.to_string(),
        ];
        let moved = self
            .run_webhook_script(partition, endpoint, token, args)
            .await?;
        Ok(u64::try_from(moved).unwrap_or(0))
    }

    /// How many dead letters each of `endpoints` has in each partition (all partitions).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn count_dead(&self, endpoints: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let mut out: HashMap<String, u64> = endpoints.iter().map(|e| (e.to_string(), 0)).collect();
        let mut conn = self.conn.clone();
        for p in 0..self.keys.partitions() {
            let rows: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(self.keys.webhook_keys().webhooks_dead(p))
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await?;
            for (_, fields) in rows {
                if let Some(n) = fields.get("endpoint").and_then(|e| out.get_mut(e)) {
                    *n += 1;
                }
            }
        }
        Ok(out)
    }

    /// Appends a retryDeadWebhooks request (fenced by partition 0's lease); its id.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when partition 0's lease is another daemon's.
    pub async fn add_redeliver_request(
        &self,
        token: &str,
        endpoints: &[&str],
    ) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let keys = &self.keys;
        let id: Option<String> = scripts::REDELIVER_REQUEST
            .script()
            .key(keys.webhook_keys().webhooks_redeliver())
            .key(keys.lease(0))
            .arg(token)
            .arg(endpoints.join(" "))
            .invoke_async(&mut conn)
            .await?;
        id.ok_or(StoreError::Fenced { partition: 0 })
    }

    /// retryDeadWebhooks requests after `after`: (id, endpoint ids).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn redeliver_requests(
        &self,
        after: &str,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut conn = self.conn.clone();
        let rows: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.keys.webhook_keys().webhooks_redeliver())
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(100)
            .query_async(&mut conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, f)| {
                let eps = f
                    .get("endpoints")
                    .map(|e| e.split(' ').map(str::to_string).collect())
                    .unwrap_or_default();
                (id, eps)
            })
            .collect())
    }
}

impl WebhookStore {
    /// Trims each of `partitions`' event streams to `max_len` change entries (exactly, so tests
    /// can rely on it), keeping every entry one of the webhook `endpoints` has not finished
    /// with (SPEC 10); returns how many entries went.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn trim_events(
        &self,
        held: &[(u16, String)],
        max_len: u64,
        endpoints: &[String],
    ) -> Result<u64, StoreError> {
        if held.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (p, token) in held {
            // Fenced: only the partition's owner trims its stream (-1 when it is not).
            pipe.cmd("EVAL")
                .arg(scripts::FENCED_TRIM.source())
                .arg(2 + endpoints.len())
                .arg(self.keys.order_keys().events(*p))
                .arg(self.keys.lease(*p));
            for e in endpoints {
                pipe.arg(self.keys.webhook_keys().webhook_progress(*p, e));
            }
            pipe.arg(token).arg(max_len);
        }
        let removed: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(removed
            .into_iter()
            .filter_map(|r| u64::try_from(r).ok())
            .sum())
    }
}
