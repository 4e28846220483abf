//! The admin client used by `recur admin` and the integration tests: publishes requests on
//! `<prefix>:admin` and waits for the reply on its own channel, re-publishing the same id until
//! one comes (pub/sub is at-most-once); appends requests to the durable `<prefix>:commands`
//! stream; and follows the `<prefix>:events` channel.
//!
//! Each entry point has a `_to` form that takes a [`RedisAddress`], for a Redis Cluster
//! (`redis.cluster`): commands then go through the cluster client, subscriptions to the first
//! seed node that answers (a PUBLISH on any node of a cluster reaches every node's subscribers).
//!
//! One client serves concurrent requests: a background task reads the reply channel and hands
//! each reply to the request waiting for its id.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::{ConnectionManagerConfig, PubSubStream};
use redis::AsyncCommands;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use uuid::Uuid;

use crate::store::keys::{Keys, DEFAULT_PARTITIONS};
use crate::store::{ConnectError, RedisAddress, RedisConn, RedisNodes};
use crate::telemetry::mask_secrets;
use crate::wire::{Reply, Request};

/// How long one attempt waits for a reply before the request is published again.
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 2_000;
/// How long a request keeps trying before it gives up.
pub const DEFAULT_TOTAL_TIMEOUT_MS: u64 = 30_000;
/// The application name a request carries unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "cli";
/// First pause before retrying a request answered UNAVAILABLE or INTERNAL (doubles each time).
pub const TRANSIENT_BACKOFF_MIN_MS: u64 = 100;
/// Longest pause before retrying a request answered UNAVAILABLE or INTERNAL.
pub const TRANSIENT_BACKOFF_MAX_MS: u64 = 1_000;
/// How long connecting and subscribing may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How many replies nobody waits for (yet) are kept for [`AdminClient::wait_reply`].
pub const UNCLAIMED_REPLIES_MAX: usize = 256;

const RESUBSCRIBE_MIN_DELAY_MS: u64 = 50;
const RESUBSCRIBE_MAX_DELAY_MS: u64 = 2_000;
const COMMAND_TIMEOUT_MS: u64 = 5_000;
const RECONNECT_RETRIES: usize = 2;
/// How often `watch` polls the partitions' streams on a cluster while they have nothing new
/// (one blocking XREAD over every stream would be CROSSSLOT there).
const CLUSTER_POLL_MS: u64 = 100;

/// Why an admin request could not be sent or answered. A reply with `ok: false` is not an
/// error here: it is returned as a [`Reply`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The Redis URL cannot be parsed.
    #[error("invalid Redis URL `{}`: {source}", mask_secrets(url))]
    InvalidUrl {
        /// The URL given (printed masked).
        url: String,
        /// What the redis crate said.
        #[source]
        source: redis::RedisError,
    },
    /// Connecting to Redis failed at the first attempt: which server (masked), and what
    /// (certificate, handshake, NOAUTH / WRONGPASS, unreachable).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Connecting or subscribing did not finish in time.
    #[error("cannot connect to Redis at `{url}` within {waited:?}")]
    ConnectTimeout {
        /// The URL (masked).
        url: String,
        /// How long it was given.
        waited: Duration,
    },
    /// A Redis command failed (connection refused or lost, or an error reply).
    #[error("redis error: {}", mask_secrets(&.0.to_string()))]
    Redis(#[from] redis::RedisError),
    /// No reply came before the total timeout.
    #[error(
        "no reply to request `{id}` within {waited:?}{}",
        if *subscribers == Some(0) {
            " (nothing is subscribed to the admin channel: is `recur serve` running with the same \
             prefix?)"
        } else {
            ""
        }
    )]
    Timeout {
        /// The request id (retry with it to get the same reply).
        id: String,
        /// How long the client waited.
        waited: Duration,
        /// How many subscribers received the last publish (0: no daemon is listening). None
        /// on a cluster, where PUBLISH counts only the subscribers of the node that took it.
        subscribers: Option<usize>,
    },
    /// A request or an event could not be encoded or decoded.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The task that reads replies has stopped; the client cannot receive replies any more.
    #[error("the reply reader has stopped")]
    Closed,
}

/// Which names a client sends its requests on and takes its replies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `<prefix>:admin` and `<prefix>:commands`; replies on `<prefix>:replies:<uuid>`
    /// (`admin.identity = "declared"`).
    Admin,
    /// The channel's own names, `<prefix>:admin:<channel>` and `<prefix>:commands:<channel>`;
    /// replies on `<prefix>:reply:<channel>:<uuid>` (`admin.identity = "enforced"`).
    Channel(String),
    /// `<prefix>:forward`, where daemons hand requests to each other (a daemon's own use).
    Forward,
}

/// How [`AdminClient::request_with`] sends one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOptions {
    /// The request id; `None` = a new UUID v4. Retried attempts always reuse it.
    pub id: Option<String>,
    /// The calling application, sent as the request's `channel`.
    pub channel: String,
    /// How long one attempt waits for a reply before the request is published again.
    pub attempt_timeout: Duration,
    /// How long to keep trying before giving up with [`ClientError::Timeout`].
    pub total_timeout: Duration,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            id: None,
            channel: DEFAULT_CHANNEL.to_string(),
            attempt_timeout: Duration::from_millis(DEFAULT_ATTEMPT_TIMEOUT_MS),
            total_timeout: Duration::from_millis(DEFAULT_TOTAL_TIMEOUT_MS),
        }
    }
}

/// A connection to a recur daemon's admin interface, through Redis.
///
/// Cheap to share by reference across tasks: every method takes `&self`. Dropping the client
/// stops its reply reader and closes its connections.
pub struct AdminClient {
    keys: Keys,
    reply_channel: String,
    /// Where requests are published (`<prefix>:admin`, or a channel's own name).
    requests_channel: String,
    /// Where [`AdminClient::enqueue`] appends (`<prefix>:commands`, or a channel's own).
    commands_stream: String,
    conn: RedisConn,
    router: Arc<Mutex<ReplyRouter>>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("prefix", &self.keys.prefix())
            .field("reply_channel", &self.reply_channel)
            .finish_non_exhaustive()
    }
}

impl Drop for AdminClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl AdminClient {
    /// Connects to Redis and subscribes to a new reply channel `<prefix>:replies:<uuid>`.
    /// Returns once the subscription is confirmed, so no reply can be missed.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for a malformed URL, [`ClientError::Connect`] when the first
    /// connection fails (refused, TLS, authentication: said on one line, the URL masked),
    /// [`ClientError::Redis`] when Redis fails after that, [`ClientError::ConnectTimeout`]
    /// when it does not answer.
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<AdminClient, ClientError> {
        Self::connect_to(&RedisAddress::single(redis_url.to_string()), prefix).await
    }

    /// [`AdminClient::connect`] to one server or a Redis Cluster.
    ///
    /// # Errors
    /// As [`AdminClient::connect`].
    pub async fn connect_to(
        redis: &RedisAddress,
        prefix: &str,
    ) -> Result<AdminClient, ClientError> {
        Self::connect_via(redis, prefix, &Via::Admin).await
    }

    /// [`AdminClient::connect_to`], sending on the names `via` says (SPEC 11.4: an
    /// application's own names when identities are enforced).
    ///
    /// # Errors
    /// As [`AdminClient::connect`].
    pub async fn connect_via(
        redis: &RedisAddress,
        prefix: &str,
        via: &Via,
    ) -> Result<AdminClient, ClientError> {
        check_urls(redis)?;
        redis.check().await?;
        let keys = Keys::new(prefix, DEFAULT_PARTITIONS);
        let (reply_channel, requests_channel, commands_stream) = match via {
            Via::Admin => (
                format!("{prefix}:replies:{}", Uuid::new_v4()),
                keys.admin_keys().admin_channel(),
                keys.admin_keys().commands(),
            ),
            Via::Channel(channel) => (
                format!(
                    "{}{}",
                    keys.admin_keys().reply_namespace(channel),
                    Uuid::new_v4()
                ),
                keys.admin_keys().admin_channel_of(channel),
                keys.admin_keys().commands_of(channel),
            ),
            Via::Forward => (
                format!("{prefix}:replies:{}", Uuid::new_v4()),
                keys.admin_keys().forward_channel(),
                keys.admin_keys().commands(),
            ),
        };
        let connect = async {
            let conn = command_conn(redis).await?;
            let replies = subscribe(redis, &reply_channel).await?;
            Ok::<_, redis::RedisError>((conn, replies))
        };
        let (conn, replies) = with_connect_timeout(redis, connect).await?;
        let router = Arc::new(Mutex::new(ReplyRouter::default()));
        let reader = tokio::spawn(route_replies(
            redis.clone(),
            reply_channel.clone(),
            replies,
            Arc::clone(&router),
        ));
        tracing::debug!(%reply_channel, "admin client connected");
        Ok(AdminClient {
            keys,
            reply_channel,
            requests_channel,
            commands_stream,
            conn,
            router,
            reader,
        })
    }

    /// The channel this client receives its replies on (`<prefix>:replies:<uuid>`).
    pub fn reply_channel(&self) -> &str {
        &self.reply_channel
    }

    /// The key names of this client's prefix.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A request from this client: a new id, `replyTo` = [`AdminClient::reply_channel`],
    /// channel `cli`. For [`AdminClient::enqueue`] and hand-made variations.
    pub fn new_request(&self, command: &str, args: Value) -> Request {
        Request {
            id: Uuid::new_v4().to_string(),
            reply_to: Some(self.reply_channel.clone()),
            channel: DEFAULT_CHANNEL.to_string(),
            command: command.to_string(),
            args,
            resolved_order_id: None,
        }
    }

    /// Sends `command` with `args` and the default [`RequestOptions`] (new id, channel `cli`,
    /// 2 s per attempt, 30 s in all).
    ///
    /// # Errors
    /// As [`AdminClient::request_with`].
    pub async fn request(&self, command: &str, args: Value) -> Result<Reply, ClientError> {
        self.request_with(RequestOptions::default(), command, args)
            .await
    }

    /// Sends a request on the admin channel and returns its reply, `ok` or not.
    ///
    /// The same request (same id) is published again whenever `attempt_timeout` passes without
    /// a reply, and after a short backoff when the reply is UNAVAILABLE or INTERNAL (the daemon
    /// keeps neither, so the retry is safe), until `total_timeout`. If the last reply was
    /// transient, it is returned when time runs out.
    ///
    /// # Errors
    /// [`ClientError::Timeout`] when no reply came in time; [`ClientError::Redis`] when
    /// publishing failed until the end; [`ClientError::Json`] if `args` cannot be encoded.
    #[tracing::instrument(skip_all, fields(command = %command))]
    pub async fn request_with(
        &self,
        options: RequestOptions,
        command: &str,
        args: Value,
    ) -> Result<Reply, ClientError> {
        let id = options.id.unwrap_or_else(|| Uuid::new_v4().to_string());
        let request = Request {
            id: id.clone(),
            reply_to: Some(self.reply_channel.clone()),
            channel: options.channel,
            command: command.to_string(),
            args,
            resolved_order_id: None,
        };
        let payload = serde_json::to_string(&request)?;
        let key = Some(id.clone());
        let _cleanup = WaiterCleanup {
            router: &self.router,
            id: key.clone(),
        };

        let started = Instant::now();
        let deadline = started + options.total_timeout;
        let mut reply_rx = self.lock_router().register(key.clone());
        let mut backoff = Duration::from_millis(TRANSIENT_BACKOFF_MIN_MS);
        let mut last_transient = None;
        let mut last_publish_error = None;
        let mut subscribers = None;
        let mut attempt = 0u32;
        while Instant::now() < deadline {
            attempt += 1;
            match self.publish(&payload).await {
                Ok(count) => {
                    // On a cluster the count covers one node's subscribers only.
                    subscribers = (!self.conn.is_cluster()).then_some(count);
                    last_publish_error = None;
                }
                Err(e) => {
                    tracing::warn!(request_id = %id, attempt, error = %e, "cannot publish request");
                    last_publish_error = Some(e);
                }
            }
            let wait = options
                .attempt_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            match timeout(wait, &mut reply_rx).await {
                Ok(Ok(reply)) if is_transient(&reply) => {
                    tracing::debug!(request_id = %id, attempt, "transient error reply; retrying");
                    last_transient = Some(reply);
                    reply_rx = self.lock_router().register(key.clone());
                    sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                    backoff = (backoff * 2).min(Duration::from_millis(TRANSIENT_BACKOFF_MAX_MS));
                }
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(_)) => return Err(ClientError::Closed),
                Err(_) => {
                    tracing::debug!(request_id = %id, attempt, "no reply yet; publishing again");
                }
            }
        }
        if let Some(reply) = last_transient {
            return Ok(reply);
        }
        if let Some(e) = last_publish_error {
            return Err(ClientError::Redis(e));
        }
        Err(ClientError::Timeout {
            id,
            waited: started.elapsed(),
            subscribers,
        })
    }

    /// Publishes `payload` as it is on the admin channel (e.g. malformed JSON, for tests);
    /// returns how many subscribers received it. Pair with [`AdminClient::wait_reply`].
    ///
    /// # Errors
    /// [`ClientError::Redis`] when the publish fails.
    pub async fn send_raw(&self, payload: &str) -> Result<usize, ClientError> {
        Ok(self.publish(payload).await?)
    }

    /// Waits up to `wait` for a reply with this id on the reply channel (`None` matches a reply
    /// whose id is null), including one that arrived before the call and nobody took. Each
    /// reply is returned once. Does not publish anything.
    pub async fn wait_reply(&self, id: Option<&str>, wait: Duration) -> Option<Reply> {
        let key = id.map(str::to_string);
        let reply_rx = {
            let mut router = self.lock_router();
            if let Some(reply) = router.take_unclaimed(&key) {
                return Some(reply);
            }
            router.register(key.clone())
        };
        let _cleanup = WaiterCleanup {
            router: &self.router,
            id: key,
        };
        timeout(wait, reply_rx).await.ok()?.ok()
    }

    /// Appends `request` to the durable stream `<prefix>:commands` (field `request`) and
    /// returns the entry id. The reply comes on the request's `replyTo` (use
    /// [`AdminClient::new_request`] so that is this client, then
    /// [`AdminClient::wait_reply`]) and is also kept at `<prefix>:reply:<id>`.
    ///
    /// # Errors
    /// [`ClientError::Redis`] when XADD fails.
    pub async fn enqueue(&self, request: &Request) -> Result<String, ClientError> {
        let payload = serde_json::to_string(request)?;
        let mut conn = self.conn.clone();
        let entry_id: String = conn
            .xadd(&self.commands_stream, "*", &[("request", payload)])
            .await?;
        Ok(entry_id)
    }

    async fn publish(&self, payload: &str) -> redis::RedisResult<usize> {
        let mut conn = self.conn.clone();
        conn.publish(&self.requests_channel, payload).await
    }

    fn lock_router(&self) -> std::sync::MutexGuard<'_, ReplyRouter> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Subscribes to `<prefix>:events` and yields each event of each change published there, with
/// the change's entity attached, as JSON.
///
/// Returns once the subscription is confirmed, so every change published afterwards is seen.
/// The channel is best effort (the partitions' streams are the record, see [`watch_streams`]):
/// changes published while the connection is down are missed.
///
/// # Errors
/// As [`AdminClient::connect`].
pub async fn subscribe_events(
    redis_url: &str,
    prefix: &str,
) -> Result<EventSubscriber, ClientError> {
    subscribe_events_to(&RedisAddress::single(redis_url.to_string()), prefix).await
}

/// [`subscribe_events`] on one server or a Redis Cluster.
///
/// # Errors
/// As [`AdminClient::connect`].
pub async fn subscribe_events_to(
    redis: &RedisAddress,
    prefix: &str,
) -> Result<EventSubscriber, ClientError> {
    check_urls(redis)?;
    redis.check().await?;
    let channel = Keys::new(prefix, DEFAULT_PARTITIONS)
        .order_keys()
        .events_channel();
    let messages = with_connect_timeout(redis, subscribe(redis, &channel)).await?;
    Ok(EventSubscriber {
        channel,
        messages,
        pending: VecDeque::new(),
    })
}

/// Follows every partition's event stream (`<prefix>:{p<N>}:events`) from now, or from the
/// oldest entry kept with `from_start`: nothing committed while it runs is missed, even when
/// the events channel drops a message. Order holds per order (per partition stream); across
/// partitions entries are merged by stream id, as a best effort.
///
/// # Errors
/// As [`AdminClient::connect`].
pub async fn watch_streams(
    redis_url: &str,
    prefix: &str,
    from_start: bool,
) -> Result<StreamWatcher, ClientError> {
    watch_streams_to(
        &RedisAddress::single(redis_url.to_string()),
        prefix,
        from_start,
    )
    .await
}

/// [`watch_streams`] on one server or a Redis Cluster. On a cluster each partition's stream is
/// read on its own (an XREAD of many partitions' streams is CROSSSLOT there), by polling.
///
/// # Errors
/// As [`AdminClient::connect`].
pub async fn watch_streams_to(
    redis: &RedisAddress,
    prefix: &str,
    from_start: bool,
) -> Result<StreamWatcher, ClientError> {
    check_urls(redis)?;
    redis.check().await?;
    // XREAD BLOCK waits up to a second: the reply may take longer than a normal command's.
    let mut conn = with_connect_timeout(redis, redis.connect(Duration::from_secs(10))).await?;
    // The data's partition count (none recorded yet: new data gets the default).
    let partitions: Option<u16> = conn.hget(format!("{prefix}:meta"), "partitions").await?;
    let keys = Keys::new(prefix, partitions.unwrap_or(DEFAULT_PARTITIONS));
    let streams: Vec<String> = (0..keys.partitions())
        .map(|p| keys.order_keys().events(p))
        .collect();
    let mut ids = Vec::with_capacity(streams.len());
    for stream in &streams {
        let last = if from_start {
            None
        } else {
            let newest: redis::streams::StreamRangeReply =
                conn.xrevrange_count(stream, "+", "-", 1).await?;
            newest.ids.into_iter().next().map(|e| e.id)
        };
        ids.push(last.unwrap_or_else(|| "0-0".to_string()));
    }
    Ok(StreamWatcher {
        conn,
        streams,
        ids,
        pending: VecDeque::new(),
    })
}

/// The events of every partition's stream, from [`watch_streams`].
pub struct StreamWatcher {
    conn: RedisConn,
    streams: Vec<String>,
    /// The last id read from each stream.
    ids: Vec<String>,
    pending: VecDeque<Value>,
}

impl StreamWatcher {
    /// The next event (with its change's entity); waits for one.
    ///
    /// # Errors
    /// [`ClientError`] when Redis fails.
    pub async fn next(&mut self) -> Result<Value, ClientError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let read = if self.conn.is_cluster() {
                self.poll_each().await?
            } else {
                let opts = redis::streams::StreamReadOptions::default()
                    .count(256)
                    .block(1000);
                let read: Option<redis::streams::StreamReadReply> = self
                    .conn
                    .xread_options(&self.streams, &self.ids, &opts)
                    .await?;
                read.map(|r| r.keys).unwrap_or_default()
            };
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in read {
                let Some(i) = self.streams.iter().position(|s| *s == key.key) else {
                    continue;
                };
                for entry in key.ids {
                    self.ids[i].clone_from(&entry.id);
                    let raw: Option<String> = entry.get("change");
                    match raw.as_deref().map(serde_json::from_str::<Value>) {
                        Some(Ok(change)) => entries.push((entry.id, change)),
                        _ => {
                            tracing::warn!(stream = %key.key, entry = %entry.id, "skipping an entry that is not a change")
                        }
                    }
                }
            }
            entries.sort_by(|a, b| stream_id_order(&a.0, &b.0));
            for (_, change) in entries {
                self.pending.extend(crate::wire::change_events(&change));
            }
        }
    }

    /// On a cluster: one XREAD per partition's stream (each in its own hash slot), in one
    /// pipeline that the connection splits by slot; a pause first when the last poll found
    /// nothing.
    async fn poll_each(&mut self) -> Result<Vec<redis::streams::StreamKey>, ClientError> {
        let mut pipe = redis::pipe();
        for (stream, id) in self.streams.iter().zip(&self.ids) {
            pipe.cmd("XREAD")
                .arg("COUNT")
                .arg(256)
                .arg("STREAMS")
                .arg(stream)
                .arg(id);
        }
        let read: Vec<Option<redis::streams::StreamReadReply>> =
            pipe.query_async(&mut self.conn).await?;
        let keys: Vec<redis::streams::StreamKey> =
            read.into_iter().flatten().flat_map(|r| r.keys).collect();
        if keys.is_empty() {
            sleep(Duration::from_millis(CLUSTER_POLL_MS)).await;
        }
        Ok(keys)
    }
}

/// Stream ids compared by time, then sequence (`<ms>-<seq>`).
fn stream_id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parts(a).cmp(&parts(b))
}

/// The events published on `<prefix>:events`, from [`subscribe_events`]. Also a
/// [`Stream`] of the same values.
pub struct EventSubscriber {
    channel: String,
    messages: PubSubStream,
    /// Events of a change already received, not yet handed out.
    pending: VecDeque<Value>,
}

impl std::fmt::Debug for EventSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSubscriber")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl EventSubscriber {
    /// The next event; `None` when the connection is lost. Payloads that are not JSON are
    /// skipped with a warning.
    pub async fn next(&mut self) -> Option<Value> {
        StreamExt::next(self).await
    }
}

impl Stream for EventSubscriber {
    type Item = Value;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.pending.pop_front() {
                return Poll::Ready(Some(e));
            }
            let Some(msg) = std::task::ready!(this.messages.poll_next_unpin(cx)) else {
                return Poll::Ready(None);
            };
            match serde_json::from_slice::<Value>(msg.get_payload_bytes()) {
                Ok(change) => this.pending.extend(crate::wire::change_events(&change)),
                Err(e) => {
                    tracing::warn!(channel = %this.channel, error = %e, "skipping a non-JSON change");
                }
            }
        }
    }
}

/// Replies waiting to be handed to the requests that wait for them, by request id.
#[derive(Debug, Default)]
struct ReplyRouter {
    waiters: HashMap<Option<String>, Vec<oneshot::Sender<Reply>>>,
    /// Replies that arrived when nobody waited for their id, oldest first.
    unclaimed: VecDeque<Reply>,
}

impl ReplyRouter {
    /// A receiver for the next reply with this id.
    fn register(&mut self, id: Option<String>) -> oneshot::Receiver<Reply> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let senders = self.waiters.entry(id).or_default();
        senders.retain(|s| !s.is_closed());
        senders.push(reply_tx);
        reply_rx
    }

    /// Hands `reply` to everyone waiting for its id, or keeps it for a later `wait_reply`.
    fn deliver(&mut self, reply: Reply) {
        let mut delivered = false;
        for reply_tx in self.waiters.remove(&reply.id).unwrap_or_default() {
            delivered |= reply_tx.send(reply.clone()).is_ok();
        }
        if !delivered {
            if self.unclaimed.len() == UNCLAIMED_REPLIES_MAX {
                self.unclaimed.pop_front();
            }
            self.unclaimed.push_back(reply);
        }
    }

    fn take_unclaimed(&mut self, id: &Option<String>) -> Option<Reply> {
        let at = self.unclaimed.iter().position(|r| &r.id == id)?;
        self.unclaimed.remove(at)
    }

    /// Forgets the waiters of `id` that stopped waiting.
    fn prune(&mut self, id: &Option<String>) {
        if let Some(senders) = self.waiters.get_mut(id) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                self.waiters.remove(id);
            }
        }
    }
}

/// Removes a finished request's waiters when it returns, however it returns.
struct WaiterCleanup<'a> {
    router: &'a Mutex<ReplyRouter>,
    id: Option<String>,
}

impl Drop for WaiterCleanup<'_> {
    fn drop(&mut self) {
        // The receiver is dropped before this guard (declared later), so its sender is closed.
        self.router
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .prune(&self.id);
    }
}

fn is_transient(reply: &Reply) -> bool {
    reply.error.as_ref().is_some_and(|e| e.code.is_transient())
}

/// Every URL of `redis` parses ([`ClientError::InvalidUrl`] for the first that does not).
fn check_urls(redis: &RedisAddress) -> Result<(), ClientError> {
    for url in redis.urls() {
        redis::IntoConnectionInfo::into_connection_info(url).map_err(|source| {
            ClientError::InvalidUrl {
                url: url.to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// The connection requests are published and enqueued on: short timeouts, few reconnection
/// attempts (a client that cannot reach Redis says so quickly).
async fn command_conn(redis: &RedisAddress) -> redis::RedisResult<RedisConn> {
    match redis.nodes() {
        RedisNodes::Single(url) => {
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(RECONNECT_RETRIES)
                .set_max_delay(Duration::from_millis(RESUBSCRIBE_MAX_DELAY_MS))
                .set_connection_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
                .set_response_timeout(Some(Duration::from_millis(COMMAND_TIMEOUT_MS)));
            let client = redis.client(url)?;
            Ok(RedisConn::new(
                client.get_connection_manager_with_config(config).await?,
            ))
        }
        RedisNodes::Cluster(_) | RedisNodes::Sentinel(_) => {
            redis
                .connect(Duration::from_millis(COMMAND_TIMEOUT_MS))
                .await
        }
    }
}

async fn with_connect_timeout<T>(
    redis: &RedisAddress,
    connect: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClientError> {
    let waited = Duration::from_millis(CONNECT_TIMEOUT_MS);
    match timeout(waited, connect).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClientError::ConnectTimeout {
            url: redis.to_string(),
            waited,
        }),
    }
}

async fn subscribe(redis: &RedisAddress, channel: &str) -> redis::RedisResult<PubSubStream> {
    let mut pubsub = redis.pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message())
}

/// Reads the reply channel into the router for as long as the client lives, subscribing again
/// when the connection is lost (requests re-publish meanwhile, so nothing is lost for good).
async fn route_replies(
    redis: RedisAddress,
    channel: String,
    mut messages: PubSubStream,
    router: Arc<Mutex<ReplyRouter>>,
) {
    loop {
        while let Some(msg) = messages.next().await {
            match serde_json::from_slice::<Reply>(msg.get_payload_bytes()) {
                Ok(reply) => router
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .deliver(reply),
                Err(e) => tracing::warn!(%channel, error = %e, "ignoring a malformed reply"),
            }
        }
        tracing::warn!(%channel, "reply subscription lost; subscribing again");
        let mut delay = Duration::from_millis(RESUBSCRIBE_MIN_DELAY_MS);
        messages = loop {
            sleep(delay).await;
            match timeout(
                Duration::from_millis(CONNECT_TIMEOUT_MS),
                subscribe(&redis, &channel),
            )
            .await
            {
                Ok(Ok(messages)) => break messages,
                Ok(Err(e)) => tracing::debug!(%channel, error = %e, "cannot subscribe yet"),
                Err(_) => tracing::debug!(%channel, "subscribing timed out"),
            }
            delay = (delay * 2).min(Duration::from_millis(RESUBSCRIBE_MAX_DELAY_MS));
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use crate::domain::ErrorCode;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedRedis};

    const PREFIX: &str = "t";

    async fn start_redis(dir: &Path) -> EmbeddedRedis {
        crate::telemetry::init_for_tests();
        EmbeddedRedis::start(&EmbeddedOptions {
            binary: "redis-server".into(),
            data_dir: dir.join("redis"),
            appendonly: false,
        })
        .await
        .expect("redis-server starts")
    }

    /// A stand-in daemon: reads requests from the admin channel and answers each with
    /// `answer(request, how many requests came before it)`; `None` = stay silent.
    async fn fake_server<F>(url: &str, answer: F) -> (JoinHandle<()>, Arc<AtomicUsize>)
    where
        F: Fn(&Request, usize) -> Option<Reply> + Send + 'static,
    {
        let client = redis::Client::open(url).expect("url");
        let mut requests = subscribe(
            &RedisAddress::single(url.to_string()),
            &Keys::new(PREFIX, DEFAULT_PARTITIONS)
                .admin_keys()
                .admin_channel(),
        )
        .await
        .expect("subscribes");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let Ok(request) = serde_json::from_slice::<Request>(msg.get_payload_bytes()) else {
                    continue;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if let (Some(reply), Some(reply_to)) = (answer(&request, n), &request.reply_to) {
                    let payload = serde_json::to_string(&reply).expect("encodes");
                    let _: usize = conn.publish(reply_to, payload).await.expect("publishes");
                }
            }
        });
        (task, seen)
    }

    /// Short timeouts. Tests that count publishes give an attempt long enough that a loaded
    /// machine does not cause an extra retry.
    fn quick(attempt_ms: u64, total_ms: u64) -> RequestOptions {
        RequestOptions {
            attempt_timeout: Duration::from_millis(attempt_ms),
            total_timeout: Duration::from_millis(total_ms),
            ..RequestOptions::default()
        }
    }

    #[tokio::test]
    async fn a_lost_request_is_published_again_with_the_same_id() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let ids = Arc::new(Mutex::new(Vec::new()));
        let seen_ids = Arc::clone(&ids);
        // Answers only the second publish, as if the first were lost.
        let (server, seen) = fake_server(&redis.url(), move |request, n| {
            seen_ids.lock().unwrap().push(request.id.clone());
            (n == 1).then(|| Reply::ok(Some(request.id.clone()), json!({"pong": true})))
        })
        .await;
        let client = AdminClient::connect(&redis.url(), PREFIX)
            .await
            .expect("connects");

        let options = RequestOptions {
            id: Some("req-1".into()),
            channel: "web".into(),
            ..quick(500, 10_000)
        };
        let reply = client
            .request_with(options, "ping", json!({}))
            .await
            .expect("replied");
        assert_eq!(
            reply,
            Reply::ok(Some("req-1".into()), json!({"pong": true}))
        );
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(*ids.lock().unwrap(), vec!["req-1", "req-1"]);

        server.abort();
        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_replies() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let (server, _) = fake_server(&redis.url(), |request, _| {
            Some(Reply::ok(Some(request.id.clone()), request.args.clone()))
        })
        .await;
        let client = Arc::new(
            AdminClient::connect(&redis.url(), PREFIX)
                .await
                .expect("connects"),
        );

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let client = Arc::clone(&client);
            tasks.spawn(async move {
                let reply = client
                    .request_with(quick(2_000, 10_000), "getOrder", json!({"orderId": i}))
                    .await
                    .expect("replied");
                (i, reply)
            });
        }
        let mut answered = 0;
        while let Some(joined) = tasks.join_next().await {
            let (i, reply) = joined.expect("task ran");
            assert!(reply.ok);
            assert_eq!(reply.result, Some(json!({"orderId": i})));
            answered += 1;
        }
        assert_eq!(answered, 20);
        assert!(client.lock_router().waiters.is_empty(), "no waiter left");

        server.abort();
        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn unavailable_and_internal_are_retried_other_errors_are_returned() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let (server, seen) = fake_server(&redis.url(), |request, n| {
            let id = Some(request.id.clone());
            Some(match (request.command.as_str(), n) {
                ("ping", 0) => Reply::error(id, ErrorCode::Unavailable, "shutting down"),
                ("ping", 1) => Reply::error(id, ErrorCode::Internal, "oops"),
                ("ping", _) => Reply::ok(id, json!({"pong": true})),
                _ => Reply::error(id, ErrorCode::NotFound, "no such order"),
            })
        })
        .await;
        let client = AdminClient::connect(&redis.url(), PREFIX)
            .await
            .expect("connects");

        let reply = client
            .request_with(quick(2_000, 10_000), "ping", json!({}))
            .await
            .expect("replied");
        assert!(reply.ok, "{reply:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 3);

        let reply = client
            .request_with(quick(2_000, 10_000), "getOrder", json!({"orderId": "nope"}))
            .await
            .expect("replied");
        assert_eq!(reply.error.expect("an error").code, ErrorCode::NotFound);
        assert_eq!(seen.load(Ordering::SeqCst), 4, "not retried");

        server.abort();
        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn a_request_nobody_answers_times_out_after_the_total_timeout() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let (server, seen) = fake_server(&redis.url(), |_, _| None).await;
        let client = AdminClient::connect(&redis.url(), PREFIX)
            .await
            .expect("connects");

        let started = Instant::now();
        let options = RequestOptions {
            id: Some("lost".into()),
            ..quick(150, 700)
        };
        let error = client
            .request_with(options, "ping", json!({}))
            .await
            .expect_err("times out");
        let waited = started.elapsed();
        assert!(
            matches!(&error, ClientError::Timeout { id, subscribers: Some(1), .. } if id == "lost"),
            "{error:?}"
        );
        assert!(waited >= Duration::from_millis(700), "{waited:?}");
        assert!(waited < Duration::from_millis(2_000), "{waited:?}");
        assert!(
            seen.load(Ordering::SeqCst) >= 4,
            "re-published every attempt"
        );

        server.abort();
        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn timeout_says_when_no_daemon_listens() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let client = AdminClient::connect(&redis.url(), PREFIX)
            .await
            .expect("connects");
        let error = client
            .request_with(quick(100, 300), "ping", json!({}))
            .await
            .expect_err("times out");
        assert!(
            matches!(
                error,
                ClientError::Timeout {
                    subscribers: Some(0),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("recur serve"), "{error}");
        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn raw_payloads_and_replies_for_other_ids() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let client = AdminClient::connect(&redis.url(), PREFIX)
            .await
            .expect("connects");
        // A stand-in daemon that answers malformed JSON with a null id, as the spec says.
        let url = redis.url();
        let reply_to = client.reply_channel().to_string();
        let server = {
            let client = redis::Client::open(url.as_str()).expect("url");
            let mut requests = subscribe(
                &RedisAddress::single(url.clone()),
                &Keys::new(PREFIX, DEFAULT_PARTITIONS)
                    .admin_keys()
                    .admin_channel(),
            )
            .await
            .expect("subscribes");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("connects");
            tokio::spawn(async move {
                while requests.next().await.is_some() {
                    for reply in [
                        Reply::ok(Some("someone-else".into()), json!({})),
                        Reply::error(None, ErrorCode::InvalidRequest, "not JSON"),
                    ] {
                        let payload = serde_json::to_string(&reply).expect("encodes");
                        let _: usize = conn.publish(&reply_to, payload).await.expect("publishes");
                    }
                }
            })
        };

        assert_eq!(client.send_raw("{not json").await.expect("published"), 1);
        let reply = client
            .wait_reply(None, Duration::from_secs(5))
            .await
            .expect("a reply with a null id");
        assert_eq!(
            reply.error.expect("an error").code,
            ErrorCode::InvalidRequest
        );
        // The reply for another id arrived first and is kept for whoever asks for it.
        let other = client
            .wait_reply(Some("someone-else"), Duration::from_millis(10))
            .await
            .expect("kept");
        assert!(other.ok);
        assert_eq!(
            client
                .wait_reply(Some("someone-else"), Duration::from_millis(50))
                .await,
            None,
            "each reply is returned once"
        );

        server.abort();
        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn enqueue_appends_to_the_command_stream_and_events_are_followed() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = start_redis(tmp.path()).await;
        let client = AdminClient::connect(&redis.url(), PREFIX)
            .await
            .expect("connects");
        let request = client.new_request("ping", json!({}));
        let entry_id = client.enqueue(&request).await.expect("appended");

        let mut conn = redis::Client::open(redis.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let entries: redis::streams::StreamRangeReply = conn
            .xrange_all(
                Keys::new(PREFIX, DEFAULT_PARTITIONS)
                    .admin_keys()
                    .commands(),
            )
            .await
            .expect("XRANGE");
        assert_eq!(entries.ids.len(), 1);
        assert_eq!(entries.ids[0].id, entry_id);
        let stored: String = entries.ids[0].get("request").expect("field `request`");
        let stored: Request = serde_json::from_str(&stored).expect("a request");
        assert_eq!(stored, request);
        assert_eq!(stored.reply_to.as_deref(), Some(client.reply_channel()));

        let mut events = subscribe_events(&redis.url(), PREFIX)
            .await
            .expect("subscribes");
        let events_channel = Keys::new(PREFIX, DEFAULT_PARTITIONS)
            .order_keys()
            .events_channel();
        let _: usize = conn
            .publish(&events_channel, "not json")
            .await
            .expect("publishes");
        let change = json!({"orderId": "o1", "version": 1, "entity": {"id": "o1"}, "events": [
            {"id": "e1", "type": "orderCreated", "sequence": 1},
            {"id": "e2", "type": "orderStarted", "sequence": 2},
        ]});
        let _: usize = conn
            .publish(&events_channel, change.to_string())
            .await
            .expect("publishes");
        let mut received = Vec::new();
        for _ in 0..2 {
            let e = timeout(Duration::from_secs(5), events.next())
                .await
                .expect("in time")
                .expect("an event");
            received.push(e);
        }
        assert_eq!(
            received,
            vec![
                json!({"id": "e1", "type": "orderCreated", "sequence": 1, "entity": {"id": "o1"}}),
                json!({"id": "e2", "type": "orderStarted", "sequence": 2, "entity": {"id": "o1"}}),
            ],
            "the non-JSON payload is skipped; a change gives its events with its entity"
        );

        drop(client);
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn connecting_to_nothing_fails_fast() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let url = crate::store::embedded::unix_socket_url(&tmp.path().join("none.sock"));
        let error = AdminClient::connect(&url, PREFIX)
            .await
            .expect_err("no server");
        assert!(
            matches!(
                &error,
                ClientError::Connect(ConnectError {
                    problem: crate::store::access::Problem::Unreachable(_),
                    ..
                })
            ),
            "{error:?}"
        );
        assert!(matches!(
            AdminClient::connect("http://nope", PREFIX).await,
            Err(ClientError::InvalidUrl { .. })
        ));
    }
}
