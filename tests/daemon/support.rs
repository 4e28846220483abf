//! Test support: a private redis-server per test (temp dir, unix socket, never port 6379) or a
//! private 3-master Redis Cluster (free loopback ports, never 6379), the daemon in-process on its
//! own actix thread or as a real child process, and an admin client.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde_json::{json, Value};
use tempfile::TempDir;

use recur::admin::client::{AdminClient, RequestOptions};
use recur::clock::ClockMode;
use recur::config::Settings;
use recur::shutdown::Shutdown;
use recur::store::embedded::{EmbeddedOptions, EmbeddedRedis};
use recur::store::{RedisAddress, RedisConn};
use recur::wire::{Reply, ReplyError};
use recur_bench::cluster::LocalCluster;

pub const START: &str = "2026-01-01T00:00:00Z";

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A private redis-server in a temp dir, killed on drop.
pub struct TestRedis {
    pub server: Option<EmbeddedRedis>,
    pub url: String,
    pub dir: TempDir,
}

impl TestRedis {
    pub async fn start() -> TestRedis {
        recur::telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("temp dir");
        let server = EmbeddedRedis::start(&EmbeddedOptions {
            binary: PathBuf::from("redis-server"),
            data_dir: dir.path().join("redis"),
            appendonly: true,
        })
        .await
        .expect("redis-server starts (is it installed?)");
        let url = server.url();
        TestRedis {
            server: Some(server),
            url,
            dir,
        }
    }

    /// SIGKILLs the redis-server and, after `down`, starts a new one on the same data dir and
    /// socket (so the same URL), which reloads the append-only file.
    pub async fn kill_and_restart(&mut self, down: Duration) {
        self.kill();
        tokio::time::sleep(down).await;
        self.restart().await;
    }

    /// SIGKILLs the redis-server (see [`TestRedis::restart`]).
    pub fn kill(&mut self) {
        let server = self.server.take().expect("a running redis-server");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &server.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "redis-server killed");
        // Its exit is reaped by the launcher; dropping it only removes its URL file.
        drop(server);
    }

    /// Starts a new redis-server on the killed one's data dir and socket (so the same URL),
    /// which reloads the append-only file.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "killed first");
        let server = EmbeddedRedis::start(&EmbeddedOptions {
            binary: PathBuf::from("redis-server"),
            data_dir: self.dir.path().join("redis"),
            appendonly: true,
        })
        .await
        .expect("redis-server restarts");
        assert_eq!(server.url(), self.url, "same socket after the restart");
        self.server = Some(server);
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// A private Redis Cluster of 3 masters (no replicas) on free loopback ports, each node's data
/// (append-only) and nodes.conf in a temp dir; the servers are killed on drop.
pub struct TestCluster {
    pub cluster: LocalCluster,
    /// The seed nodes, comma-separated (`redis.url` with `redis.cluster = true`).
    pub seeds: String,
    pub dir: TempDir,
    /// The certificates of a TLS-only cluster.
    pub certs: Option<TestCerts>,
}

impl TestCluster {
    pub async fn start() -> TestCluster {
        recur::telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = LocalCluster::start(dir.path(), 3)
            .await
            .expect("a 3-master Redis Cluster starts (are redis-server and redis-cli installed?)");
        let seeds = cluster.seeds();
        TestCluster {
            cluster,
            seeds,
            dir,
            certs: None,
        }
    }

    /// A TLS-only cluster (clients, redirects and the cluster bus all over TLS), with the
    /// certificates of [`TestCerts`]: its seeds are `rediss://` URLs.
    pub async fn start_tls() -> TestCluster {
        recur::telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = TestCerts::generate();
        let tls = recur_bench::cluster::ClusterTls {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            ca: certs.ca.clone(),
        };
        let cluster = LocalCluster::start_tls(dir.path(), 3, tls)
            .await
            .expect("a 3-master TLS Redis Cluster starts");
        let seeds = cluster.seeds();
        TestCluster {
            cluster,
            seeds,
            dir,
            certs: Some(certs),
        }
    }

    /// A cluster connection (recur's own: pipelines are split by hash slot).
    pub async fn conn(&self) -> RedisConn {
        self.address()
            .connect(Duration::from_secs(10))
            .await
            .unwrap()
    }
}

/// A master and one replica (`--replicaof`), each a `redis-server` on a free loopback port
/// (never 6379) with its data in a temp dir; killed on drop. The daemon is pointed at the
/// master (SPEC 11.1's `redis.wait_replicas` needs a replica to wait for).
pub struct ReplicatedRedis {
    pub master: recur_bench::TcpRedis,
    /// `None` while it is killed.
    pub replica: Option<recur_bench::TcpRedis>,
    replica_port: u16,
    pub dir: TempDir,
}

impl ReplicatedRedis {
    /// Both servers, once the replica is synchronized.
    pub async fn start() -> ReplicatedRedis {
        recur::telemetry::init_for_tests();
        let dir = tempfile::tempdir().expect("temp dir");
        let master = recur_bench::TcpRedis::start_with(&dir.path().join("master"), true)
            .await
            .expect("the master starts (is redis-server installed?)");
        let replica =
            recur_bench::TcpRedis::start_replica(&dir.path().join("replica"), &master, true)
                .await
                .expect("the replica starts and synchronizes");
        ReplicatedRedis {
            master,
            replica_port: replica.port(),
            replica: Some(replica),
            dir,
        }
    }

    /// Stops the replica (SIGSTOP): the master still counts it connected, but it confirms
    /// nothing until [`ReplicatedRedis::resume_replica`].
    pub fn pause_replica(&self) {
        signal(self.replica.as_ref().expect("a replica").pid(), "-STOP");
    }

    /// SIGCONT for a paused replica.
    pub fn resume_replica(&self) {
        signal(self.replica.as_ref().expect("a replica").pid(), "-CONT");
    }

    /// SIGKILLs the replica.
    pub async fn kill_replica(&mut self) {
        self.replica.take().expect("a replica").kill().await;
    }

    /// Starts the killed replica again (same port and data dir) and waits until it is
    /// synchronized.
    pub async fn restart_replica(&mut self) {
        assert!(self.replica.is_none(), "killed first");
        let replica = recur_bench::TcpRedis::restart_replica(
            &self.dir.path().join("replica"),
            self.replica_port,
            &self.master,
            true,
        )
        .await
        .expect("the replica starts again and synchronizes");
        self.replica = Some(replica);
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, `-KILL`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

impl Drop for ReplicatedRedis {
    fn drop(&mut self) {
        // A paused replica would not die of the SIGKILL its drop sends until resumed.
        if let Some(r) = &self.replica {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &r.pid().to_string()])
                .status();
        }
    }
}

impl TestStore for ReplicatedRedis {
    fn address(&self) -> RedisAddress {
        RedisAddress::single(self.master.url())
    }

    fn settings(&self, prefix: &str) -> Settings {
        settings(&self.master.url(), prefix)
    }
}

/// What a test's Redis is: one server or a cluster. The helpers below read either.
pub trait TestStore {
    /// recur's address of it.
    fn address(&self) -> RedisAddress;

    /// A connection through recur's `RedisConn` (on a cluster, a cluster connection).
    async fn store_conn(&self) -> RedisConn {
        self.address()
            .connect(Duration::from_secs(10))
            .await
            .unwrap()
    }

    /// Settings for a test daemon on it (see [`settings`]).
    fn settings(&self, prefix: &str) -> Settings;
}

impl TestStore for TestRedis {
    fn address(&self) -> RedisAddress {
        RedisAddress::single(self.url.clone())
    }

    fn settings(&self, prefix: &str) -> Settings {
        settings(&self.url, prefix)
    }
}

impl TestStore for TestCluster {
    fn address(&self) -> RedisAddress {
        self.cluster.address()
    }

    fn settings(&self, prefix: &str) -> Settings {
        let mut s = cluster_settings(&self.seeds, prefix);
        s.redis.tls.ca_file = self.certs.as_ref().map(|c| c.ca.clone());
        s
    }
}

/// Settings for a test daemon: simulated clock from `START`, the given Redis and prefix.
pub fn settings(url: &str, prefix: &str) -> Settings {
    let mut s = Settings::defaults().expect("default settings");
    s.redis.url = Some(url.to_string());
    s.prefix = prefix.to_string();
    s.clock.mode = ClockMode::Simulated;
    s.clock.start = Some(at(START));
    // A daemon SIGKILLed by a test leaves its leases behind: a short TTL lets the next one take
    // over quickly (not too short: a test machine under load must still renew in time).
    s.cluster.lease_ttl = Duration::from_secs(2);
    // Parallel tests would race for the default address: tests that probe HTTP set port 0.
    s.http.listen = String::new();
    s
}

/// [`settings`] on a Redis Cluster: `seeds` comma-separated, `redis.cluster = true`.
pub fn cluster_settings(seeds: &str, prefix: &str) -> Settings {
    let mut s = settings(seeds, prefix);
    s.redis.cluster = true;
    s
}

/// The daemon running in-process on its own actix thread.
pub struct Daemon {
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// What the daemon reported once ready (its HTTP address among others).
    pub ready: recur::Ready,
}

impl Daemon {
    pub async fn start(settings: Settings) -> Daemon {
        let shutdown = Shutdown::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                recur::run_with(settings, stop, move |ready| {
                    let _ = ready_tx.send(ready.clone());
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        let ready = match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(ready)) => ready,
            _ => panic!("daemon did not start: {:?}", thread.join()),
        };
        Daemon {
            shutdown,
            thread: Some(thread),
            ready,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let thread = self.thread.take().unwrap();
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap();
        result
            .expect("daemon thread")
            .expect("daemon stops cleanly");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The real `recur` binary as a child process (for SIGKILL crash tests).
pub struct ChildDaemon {
    pub child: tokio::process::Child,
}

impl ChildDaemon {
    pub async fn start(url: &str, prefix: &str, extra_env: &[(&str, &str)]) -> ChildDaemon {
        Self::start_with_args(url, prefix, &[], extra_env).await
    }

    /// [`ChildDaemon::start`] with more `serve` flags (e.g. `--redis-cluster`).
    pub async fn start_with_args(
        url: &str,
        prefix: &str,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> ChildDaemon {
        let mut cmd = Self::command(url, prefix, extra_args, extra_env);
        cmd.stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        let child = cmd.spawn().expect("spawn recur");
        ChildDaemon { child }
    }

    /// [`ChildDaemon::start`] with its log lines (stderr) piped to the test.
    pub async fn start_logged(url: &str, prefix: &str, extra_env: &[(&str, &str)]) -> ChildDaemon {
        let mut cmd = Self::command(url, prefix, &[], extra_env);
        cmd.stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn recur");
        ChildDaemon { child }
    }

    /// The `recur serve` command these start (simulated clock from [`START`], warn logs, no
    /// HTTP listener, 2 s leases), with `extra_env` last.
    pub fn command(
        url: &str,
        prefix: &str,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"));
        cmd.arg("serve")
            .args(extra_args)
            .args([
                "--redis-url",
                url,
                "--prefix",
                prefix,
                "--clock",
                "simulated",
                "--clock-start",
                START,
            ])
            .env_remove("RUST_LOG")
            .env("RECUR_LOG__LEVEL", "warn")
            .env("RECUR_CLUSTER__LEASE_TTL", "2s")
            .env("RECUR_HTTP__LISTEN", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// One test's world: Redis (one server, or a cluster), a daemon, a client.
pub struct Harness<R: TestStore = TestRedis> {
    pub redis: R,
    pub daemon: Option<Daemon>,
    pub client: AdminClient,
    pub settings: Settings,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Harness {
        Harness::start_on(TestRedis::start().await, tweak).await
    }
}

impl Harness<TestCluster> {
    /// A harness on a private 3-master Redis Cluster.
    pub async fn start_on_cluster(tweak: impl FnOnce(&mut Settings)) -> Harness<TestCluster> {
        Harness::start_on(TestCluster::start().await, tweak).await
    }
}

impl<R: TestStore> Harness<R> {
    /// A daemon (prefix `t`, tweaked) and a client on `redis`.
    pub async fn start_on(redis: R, tweak: impl FnOnce(&mut Settings)) -> Harness<R> {
        let mut settings = redis.settings("t");
        tweak(&mut settings);
        let daemon = Daemon::start(settings.clone()).await;
        let client = AdminClient::connect_to(&redis.address(), &settings.prefix)
            .await
            .expect("client");
        Harness {
            redis,
            daemon: Some(daemon),
            client,
            settings,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.daemon = Some(Daemon::start(self.settings.clone()).await);
    }

    pub async fn reply(&self, command: &str, args: Value) -> Reply {
        self.client.request(command, args).await.expect("a reply")
    }

    pub async fn reply_with_id(&self, id: &str, command: &str, args: Value) -> Reply {
        let options = RequestOptions {
            id: Some(id.to_string()),
            ..RequestOptions::default()
        };
        self.client
            .request_with(options, command, args)
            .await
            .expect("a reply")
    }

    /// The result of a command that must succeed.
    /// Every order id listOrders over all orders gives, page by page (`limit` a page),
    /// following `nextCursor`.
    pub async fn list_pages(&self, limit: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..100 {
            let mut args = json!({ "limit": limit });
            if !cursor.is_null() {
                args["cursor"] = cursor.clone();
            }
            let page = self.ok("listOrders", args).await;
            seen.extend(
                page["orders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["id"].as_str().unwrap().to_string()),
            );
            cursor = page["nextCursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        seen
    }

    pub async fn ok(&self, command: &str, args: Value) -> Value {
        let r = self.reply(command, args.clone()).await;
        assert!(r.ok, "{command} {args} failed: {:?}", r.error);
        r.result.unwrap()
    }

    /// The error of a command that must fail.
    pub async fn err(&self, command: &str, args: Value) -> ReplyError {
        let r = self.reply(command, args.clone()).await;
        assert!(
            !r.ok,
            "{command} {args} should have failed but returned {:?}",
            r.result
        );
        r.error.unwrap()
    }

    pub async fn advance(&self, to: &str) -> Value {
        self.ok("advanceClock", json!({ "to": to })).await
    }

    /// Every event in the streams, in stream order.
    pub async fn events(&self) -> Vec<Value> {
        stream_events(&self.redis, &self.settings.prefix).await
    }

    /// Every change entry in the streams, in stream order.
    pub async fn changes(&self) -> Vec<Value> {
        stream_changes(&self.redis, &self.settings.prefix).await
    }

    /// The (type, eventTime) pairs of one order's events.
    pub async fn timeline(&self, order_id: &str) -> Vec<(String, String)> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e["entityId"] == order_id)
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["eventTime"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Every key under the test's prefix with its value dumped, for "nothing changed" checks.
    pub async fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        snapshot(&self.redis, &self.settings.prefix).await
    }
}

/// The data's partition count (from `<prefix>:meta`).
pub async fn partitions(redis: &impl TestStore, prefix: &str) -> u16 {
    let mut conn = redis.store_conn().await;
    let n: Option<u16> = conn
        .hget(format!("{prefix}:meta"), "partitions")
        .await
        .unwrap();
    n.expect("the daemon recorded its partitions")
}

/// Every change entry of every partition's event stream, merged by stream id.
pub async fn stream_changes(redis: &impl TestStore, prefix: &str) -> Vec<Value> {
    let mut conn = redis.store_conn().await;
    let mut all: Vec<((u64, u64), Value)> = Vec::new();
    for p in 0..partitions(redis, prefix).await {
        let rows: redis::streams::StreamRangeReply = conn
            .xrange_all(format!("{prefix}:{{p{p}}}:events"))
            .await
            .unwrap();
        for e in rows.ids {
            let raw: String = e.get("change").unwrap();
            let (ms, seq) = e.id.split_once('-').unwrap();
            all.push((
                (ms.parse().unwrap(), seq.parse().unwrap()),
                serde_json::from_str(&raw).unwrap(),
            ));
        }
    }
    all.sort_by_key(|(id, _)| *id);
    all.into_iter().map(|(_, c)| c).collect()
}

/// How many change entries the partitions' event streams hold.
pub async fn stream_len(redis: &impl TestStore, prefix: &str) -> usize {
    let mut conn = redis.store_conn().await;
    let mut pipe = redis::pipe();
    for p in 0..partitions(redis, prefix).await {
        pipe.xlen(format!("{prefix}:{{p{p}}}:events"));
    }
    let lens: Vec<usize> = pipe.query_async(&mut conn).await.unwrap();
    lens.into_iter().sum()
}

/// Every event of every change, each with its change's entity (as `recur admin watch` prints
/// them), in stream order.
pub async fn stream_events(redis: &impl TestStore, prefix: &str) -> Vec<Value> {
    stream_changes(redis, prefix)
        .await
        .iter()
        .flat_map(recur::wire::change_events)
        .collect()
}

/// The reply kept for `request_id` (in whichever partition answered it).
pub async fn kept_reply(redis: &impl TestStore, prefix: &str, request_id: &str) -> Option<String> {
    let mut conn = redis.store_conn().await;
    let keys: Vec<String> = conn
        .keys(format!("{prefix}:{{p*}}:reply:{request_id}"))
        .await
        .unwrap();
    assert!(keys.len() <= 1, "one kept reply per request id: {keys:?}");
    match keys.first() {
        Some(k) => conn.get(k).await.unwrap(),
        None => None,
    }
}

/// How many changes the events came in (one version of an order each).
pub fn change_count(events: &[Value]) -> usize {
    let versions: std::collections::HashSet<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["entityId"].as_str().unwrap().to_string(),
                e["entity"]["version"].as_u64().unwrap(),
            )
        })
        .collect();
    versions.len()
}

/// Keys and DUMPed values under `prefix`, sorted (kept replies, request claims and leases
/// excluded).
pub async fn snapshot(redis: &impl TestStore, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut conn = redis.store_conn().await;
    let mut keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    // Kept replies and request-id claims: reads and refusals keep them too. Leases, their
    // epochs, until when they are held and the heartbeats say who runs the data, not what it
    // is (a daemon starved of CPU may re-acquire; heartbeats and `heldUntil` move at every
    // renewal); the command stream is the input queue, whose consumer group registers the
    // reader when it first reads.
    let (daemons, commands) = (format!("{prefix}:daemons"), format!("{prefix}:commands"));
    keys.retain(|k| {
        !k.contains(":reply:")
            && !k.contains(":req:")
            && !k.ends_with(":lease")
            && !k.ends_with(":epoch")
            && !k.ends_with(":heldUntil")
            && *k != daemons
            && *k != commands
    });
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let v: Vec<u8> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.push((k, v));
    }
    out
}

/// createOrder args for a monthly plan.
pub fn monthly(order_id: &str, kind: &str, cycles: u32, amount: &str) -> Value {
    json!({
        "orderId": order_id,
        "customerId": "c1",
        "plan": {"id": "monthly", "name": "Monthly"},
        "type": kind,
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": cycles}},
        "prices": [{"cycleFrom": 1, "amount": amount}],
        "currency": "USD",
    })
}

pub fn types(t: &[(String, String)]) -> Vec<&str> {
    t.iter().map(|(ty, _)| ty.as_str()).collect()
}

/// One HTTP/1.1 GET over a fresh connection: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    // Small answers come with a Content-Length; a chunked one is decoded here.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// A CA, a server certificate for 127.0.0.1 / localhost and a client certificate signed by it,
/// and a second CA that signed neither (for refusals); PEM files in a temp dir.
pub struct TestCerts {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("recur test CA");
        let (other_ca_pem, _) = ca("another CA");
        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>, cn: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = usages;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            // The nodes of a TLS cluster present it to each other as clients too.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            "redis",
        );
        let (client_pem, client_key) = leaf(
            vec!["recur".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            "recur",
        );
        TestCerts {
            ca: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server_pem),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_pem),
            client_key: write("client.key", client_key),
            other_ca: write("other-ca.pem", other_ca_pem),
            dir,
        }
    }
}

/// A private TLS-only redis-server (`--port 0 --tls-port P`) on a free loopback port (never
/// 6379), with the certificates of [`TestCerts`]; killed on drop. With `client_certs`, it
/// requires a client certificate (`tls-auth-clients yes`).
pub struct TlsRedis {
    child: std::process::Child,
    pub port: u16,
    /// `rediss://127.0.0.1:<port>`.
    pub url: String,
    pub certs: TestCerts,
    pub client_certs: bool,
    pub dir: TempDir,
}

impl TlsRedis {
    pub async fn start(client_certs: bool) -> TlsRedis {
        recur::telemetry::init_for_tests();
        let certs = TestCerts::generate();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = std::process::Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .arg("--tls-cert-file")
                .arg(&certs.server_cert)
                .arg("--tls-key-file")
                .arg(&certs.server_key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca)
                .args([
                    "--tls-auth-clients",
                    if client_certs { "yes" } else { "no" },
                ])
                .arg("--dir")
                .arg(dir.path())
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (is it installed?)");
            let url = format!("rediss://127.0.0.1:{port}");
            let access = tls_access(&certs, client_certs);
            match wait_tls_ready(&mut child, &url, access, &dir.path().join("redis.log")).await {
                Ok(()) => {
                    return TlsRedis {
                        child,
                        port,
                        url,
                        certs,
                        client_certs,
                        dir,
                    }
                }
                Err(e) => {
                    // The port was taken meanwhile, say: try another.
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
            }
        }
        panic!("the TLS redis-server did not start: {last}");
    }

    /// What a client needs to get in: the CA, and the client certificate when required.
    pub fn access(&self) -> recur::store::RedisAccess {
        tls_access(&self.certs, self.client_certs)
    }

    /// A connection as the default user (no password), through recur's TLS set-up.
    pub async fn admin_conn(&self) -> redis::aio::MultiplexedConnection {
        RedisAddress::single(self.url.clone())
            .with_access(self.access())
            .client(&self.url)
            .expect("a client")
            .get_multiplexed_async_connection()
            .await
            .expect("a TLS connection")
    }

    /// Adds the ACL user `name` with `password` and the `rules` (`~t:*`, `+@all`, ...).
    pub async fn add_user(&self, name: &str, password: &str, rules: &[&str]) {
        let mut conn = self.admin_conn().await;
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg(rules)
            .query_async(&mut conn)
            .await
            .expect("ACL SETUSER");
    }

    /// The `serve` environment for these TLS settings (`RECUR_REDIS__TLS__CA_FILE` and the others of `[redis.tls]`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &PathBuf| p.display().to_string();
        let mut env = vec![("RECUR_REDIS__TLS__CA_FILE", path(&self.certs.ca))];
        if self.client_certs {
            env.push(("RECUR_REDIS__TLS__CERT_FILE", path(&self.certs.client_cert)));
            env.push(("RECUR_REDIS__TLS__KEY_FILE", path(&self.certs.client_key)));
        }
        env
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestStore for TlsRedis {
    fn address(&self) -> RedisAddress {
        RedisAddress::single(self.url.clone()).with_access(self.access())
    }

    fn settings(&self, prefix: &str) -> Settings {
        let mut s = settings(&self.url, prefix);
        let access = self.access();
        s.redis.tls.ca_file = access.tls.ca_file;
        s.redis.tls.cert_file = access.tls.cert_file;
        s.redis.tls.key_file = access.tls.key_file;
        s
    }
}

/// A free loopback TCP port, never 6379.
pub fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("its address").port();
        if port != 6379 {
            return port;
        }
    }
}

fn tls_access(certs: &TestCerts, client_certs: bool) -> recur::store::RedisAccess {
    let mut access = recur::store::RedisAccess::default();
    access.tls.ca_file = Some(certs.ca.clone());
    if client_certs {
        access.tls.cert_file = Some(certs.client_cert.clone());
        access.tls.key_file = Some(certs.client_key.clone());
    }
    access
}

/// Waits until the TLS server answers PING (through recur's own check).
async fn wait_tls_ready(
    child: &mut std::process::Child,
    url: &str,
    access: recur::store::RedisAccess,
    log: &std::path::Path,
) -> Result<(), String> {
    let address = RedisAddress::single(url).with_access(access);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("redis-server exited ({status}): {log}"));
        }
        match address.check().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!("no answer within 10 s: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
