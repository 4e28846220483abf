//! `http`: the HTTP API against pub/sub (issue 27): requests per second and latency of
//! createOrder and getOrder over `POST /v1/orders` and `GET /v1/orders/{id}`, with 64
//! concurrent keep-alive HTTP/1.1 connections, and of the same commands over pub/sub through
//! the admin client with 64 requests in flight.
//!
//! A private redis-server (unix socket, append-only) and the real `recur serve` on the system
//! clock, its HTTP listener on a free loopback port with one bearer token of scope write (so
//! every request is authenticated as in production). The orders start in 30 days: no timer
//! fires while the bench runs, so the requests are all the daemon does.
//!
//! Phases, each on fresh connections (opened before its clock starts), the append-only file
//! rewritten before each (so that Redis's automatic rewrite, a fork, lands in none of them):
//! 1. warm-up: a few createOrders over each way (not measured);
//! 2. closed loop: 64 workers, each sending its next request when the last one is answered
//!    (one HTTP connection each, or one request in flight each on the shared admin client):
//!    N createOrders (each a new order, with its own `Idempotency-Key` / request id) over
//!    HTTP then pub/sub, then N getOrders of those orders over pub/sub then HTTP (which way
//!    goes first alternates: the later one runs on a bigger Redis and daemon heap).
//!    Both clients read every reply into the wire `Reply` and count it answered when `ok`
//!    (over HTTP, with status 201 / 200), so that they do the same work.
//!    Requests/s = N / (last answer − start);
//! 3. fixed rate (open loop): N requests at R per second, request i due at start + i / R;
//!    a request waits for a free worker when all 64 are busy, and its latency runs from its
//!    due instant, not from when it could be sent (so queueing is not hidden: no coordinated
//!    omission). getOrder over HTTP then pub/sub, then createOrder over pub/sub then HTTP.
//!
//! Each phase reports requests/s, p50 / p99 / max, the daemon's CPU time per request, and the
//! CPU the bench client, the daemon, Redis and everything else on the machine used (% of one
//! core): the client shares the machine's cores with the daemon and Redis.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant as WallInstant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    aof_rewrites, cpu_time, free_port, mb, monthly_args, ms, quantile, ready_client, settle_aof,
    setup, BenchError, BenchRedis, CpuSplit, DaemonClock, DaemonProcess, TempDir,
};
use recur::admin::client::{AdminClient, RequestOptions};
use recur::domain::time::{format_instant, truncate_ms};
use recur::wire::Reply;

/// Requests per command, way and phase.
pub const REQUESTS: usize = 20_000;
/// Concurrent keep-alive HTTP connections, and requests in flight over pub/sub.
pub const CONNECTIONS: usize = 64;
/// Requests per second of the fixed-rate phases.
pub const RATE: u32 = 5_000;
/// The channel of the bench's requests, both ways (the token's channel over HTTP).
pub const CHANNEL: &str = "bench";

/// Options of the http scenario.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Requests per command, way and phase.
    pub requests: usize,
    /// HTTP connections (and pub/sub requests in flight).
    pub connections: usize,
    /// Requests per second of the fixed-rate phases.
    pub rate: u32,
    /// createOrders over each way before measuring.
    pub warmup: usize,
    pub binary: PathBuf,
}

impl HttpOptions {
    /// `requests` per command, way and phase, 64 connections, 5,000 per second.
    pub fn new(requests: usize, binary: &Path) -> HttpOptions {
        HttpOptions {
            requests,
            connections: CONNECTIONS,
            rate: RATE,
            warmup: (requests / 10).clamp(CONNECTIONS, 2_000),
            binary: binary.to_path_buf(),
        }
    }
}

/// The two ways into the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Http,
    PubSub,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Http => "http",
            Way::PubSub => "pubsub",
        }
    }

    /// The first letter of the orders this way creates.
    fn letter(self) -> char {
        match self {
            Way::Http => 'h',
            Way::PubSub => 'p',
        }
    }
}

/// The two commands measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    CreateOrder,
    GetOrder,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::CreateOrder => "createOrder",
            Cmd::GetOrder => "getOrder",
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct Phase {
    pub cmd: Cmd,
    pub way: Way,
    /// The fixed rate (requests per second), or `None` for the closed loop.
    pub rate: Option<u32>,
    /// Workers, each with one request in flight at most (one HTTP connection each).
    pub in_flight: usize,
    pub sent: usize,
    /// Requests answered as expected (201 / 200, or an `ok` reply).
    pub ok: usize,
    /// Latencies, sorted.
    pub latencies: Vec<Duration>,
    /// From the start to the last answer.
    pub wall: Duration,
    /// HTTP connections opened for the phase (before it started), and opened again during it
    /// because one was closed.
    pub connections: usize,
    pub reconnects: usize,
    /// CPU of the bench client, the daemon and Redis, % of one core over `wall`.
    pub client_cpu_pct: f64,
    pub daemon_cpu_pct: f64,
    pub redis_cpu_pct: f64,
    /// The daemon's CPU time per request, in µs (less sensitive to other work on the
    /// machine than requests/s).
    pub daemon_us_per_request: f64,
    /// CPU every other process of the machine used meanwhile, % of one core (other work on a
    /// shared machine), when /proc/stat can be read.
    pub other_cpu_pct: Option<f64>,
    /// AOF rewrites Redis started during the phase.
    pub aof_rewrites: u64,
}

impl Phase {
    /// Requests answered per second.
    pub fn per_s(&self) -> f64 {
        self.sent as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn p50(&self) -> Duration {
        quantile(&self.latencies, 0.50)
    }

    pub fn p99(&self) -> Duration {
        quantile(&self.latencies, 0.99)
    }

    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    fn mode(&self) -> String {
        match self.rate {
            None => format!("closed, {} in flight", self.in_flight),
            Some(r) => format!("fixed {r}/s"),
        }
    }
}

/// What the http scenario measured.
#[derive(Debug, Clone)]
pub struct HttpReport {
    pub requests: usize,
    pub connections: usize,
    pub rate: u32,
    pub phases: Vec<Phase>,
    pub daemon_peak_rss_kb: Option<u64>,
    pub redis: &'static str,
}

impl HttpReport {
    /// The phase of `cmd` over `way`, closed loop (`paced` false) or at the fixed rate.
    pub fn phase(&self, cmd: Cmd, way: Way, paced: bool) -> Option<&Phase> {
        self.phases
            .iter()
            .find(|p| p.cmd == cmd && p.way == way && p.rate.is_some() == paced)
    }

    /// HTTP's requests/s over pub/sub's, closed loop.
    pub fn ratio(&self, cmd: Cmd) -> f64 {
        match (
            self.phase(cmd, Way::Http, false),
            self.phase(cmd, Way::PubSub, false),
        ) {
            (Some(h), Some(p)) => h.per_s() / p.per_s().max(1e-9),
            _ => 0.0,
        }
    }

    /// Requests not answered as expected, over every phase.
    pub fn errors(&self) -> usize {
        self.phases.iter().map(|p| p.sent - p.ok).sum()
    }

    /// HTTP connections opened again during a phase (a connection the server closed).
    pub fn reconnects(&self) -> usize {
        self.phases.iter().map(|p| p.reconnects).sum()
    }

    /// The table, then the one line of figures.
    pub fn text(&self) -> String {
        let mut out = format!(
            "http: {} requests per command, way and phase; {} keep-alive HTTP/1.1 connections \
             (bearer token) / {} pub/sub requests in flight; fixed rate {}/s; redis {}; the \
             client shares the cores with the daemon and Redis\n",
            self.requests, self.connections, self.connections, self.rate, self.redis
        );
        out.push_str(&format!(
            "{:<12} {:<7} {:<21} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10}  {}\n",
            "command",
            "way",
            "mode",
            "sent",
            "ok",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "daemon µs",
            "cpu % client/daemon/redis/other"
        ));
        for p in &self.phases {
            out.push_str(&format!(
                "{:<12} {:<7} {:<21} {:>7} {:>7} {:>8.0} {:>8} {:>8} {:>8} {:>10.0}  {:.0}/{:.0}/{:.0}/{}{}\n",
                p.cmd.name(),
                p.way.name(),
                p.mode(),
                p.sent,
                p.ok,
                p.per_s(),
                ms(p.p50()),
                ms(p.p99()),
                ms(p.max()),
                p.daemon_us_per_request,
                p.client_cpu_pct,
                p.daemon_cpu_pct,
                p.redis_cpu_pct,
                p.other_cpu_pct
                    .map_or_else(|| "n/a".to_string(), |o| format!("{o:.0}")),
                if p.aof_rewrites > 0 {
                    format!(" (AOF rewrite x{})", p.aof_rewrites)
                } else {
                    String::new()
                },
            ));
        }
        out.push_str(&format!(
            "http / pubsub requests/s (closed loop): createOrder {:.2}, getOrder {:.2}\n",
            self.ratio(Cmd::CreateOrder),
            self.ratio(Cmd::GetOrder)
        ));
        out.push_str(&self.line());
        out
    }

    /// The one line of figures.
    pub fn line(&self) -> String {
        let mut line = format!(
            "http requests={} connections={} rate={} redis={}",
            self.requests, self.connections, self.rate, self.redis
        );
        for p in &self.phases {
            let key = format!(
                "{}_{}{}",
                match p.cmd {
                    Cmd::CreateOrder => "create",
                    Cmd::GetOrder => "get",
                },
                p.way.name(),
                if p.rate.is_some() { "_paced" } else { "" }
            );
            line.push_str(&format!(
                " {key}_per_s={:.0} {key}_p50_ms={} {key}_p99_ms={} {key}_daemon_us={:.0}",
                p.per_s(),
                ms(p.p50()),
                ms(p.p99()),
                p.daemon_us_per_request
            ));
        }
        line.push_str(&format!(
            " create_ratio={:.2} get_ratio={:.2} errors={} reconnects={} daemon_peak_rss_mb={}",
            self.ratio(Cmd::CreateOrder),
            self.ratio(Cmd::GetOrder),
            self.errors(),
            self.reconnects(),
            mb(self.daemon_peak_rss_kb)
        ));
        line
    }
}

/// Runs the http scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &HttpOptions) -> Result<HttpReport, BenchError> {
    if opts.requests == 0 || opts.connections == 0 || opts.rate == 0 {
        return Err(BenchError::Setup(
            "--requests, --connections and --rate must be at least 1".into(),
        ));
    }
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();

    // A fresh token for this run only, never printed; the daemon knows its digest.
    let secret = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let digest = format!("{:x}", Sha256::digest(secret.as_bytes()));
    let tokens =
        format!(r#"[{{name="bench", sha256="{digest}", channel="{CHANNEL}", scope="write"}}]"#);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?)
        .parse()
        .map_err(setup("address"))?;
    let listen = addr.to_string();
    let daemon = DaemonProcess::start_with(
        &opts.binary,
        &url,
        DaemonClock::System,
        &[
            ("RECUR_HTTP__LISTEN", listen.as_str()),
            ("RECUR_HTTP__TOKENS", tokens.as_str()),
        ],
    )?;
    let client = ready_client(&url).await?;
    let api = Api {
        addr,
        authorization: format!("Bearer {secret}"),
        host: listen.clone(),
        start_date: format_instant(&truncate_ms(
            chrono::Utc::now() + chrono::Duration::days(30),
        )),
    };
    api.wait_served().await?;

    let bench = Bench {
        api: &api,
        client: &client,
        daemon: &daemon,
        redis: &redis,
        url: &url,
        connections: opts.connections,
    };
    // Warm-up (not reported): connections, the daemon's allocator, Redis's dictionaries.
    for way in [Way::Http, Way::PubSub] {
        let warm = bench
            .phase(Cmd::CreateOrder, way, None, opts.warmup, "w")
            .await?;
        if warm.ok != warm.sent {
            return Err(BenchError::Setup(format!(
                "warm-up: {} of {} createOrders over {} failed (see the log)",
                warm.sent - warm.ok,
                warm.sent,
                way.name()
            )));
        }
    }
    let n = opts.requests;
    let mut phases = Vec::new();
    // Each command over both ways one after the other, the first way alternating (the later
    // phase runs on a bigger Redis and daemon heap), and the append-only file rewritten
    // before each phase, so that Redis's automatic rewrite (a fork) lands in none of them.
    let closed = [
        (Cmd::CreateOrder, Way::Http),
        (Cmd::CreateOrder, Way::PubSub),
        (Cmd::GetOrder, Way::PubSub),
        (Cmd::GetOrder, Way::Http),
    ];
    let paced = [
        (Cmd::GetOrder, Way::Http),
        (Cmd::GetOrder, Way::PubSub),
        (Cmd::CreateOrder, Way::PubSub),
        (Cmd::CreateOrder, Way::Http),
    ];
    for (cmd, way, rate, tag) in closed
        .iter()
        .map(|&(c, w)| (c, w, None, ""))
        .chain(paced.iter().map(|&(c, w)| (c, w, Some(opts.rate), "r")))
    {
        settle_aof(&url).await?;
        phases.push(bench.phase(cmd, way, rate, n, tag).await?);
    }

    let daemon_peak_rss_kb = daemon.peak_rss_kb();
    let kind = redis.kind();
    drop(client);
    daemon.stop().await;
    redis.stop().await;
    Ok(HttpReport {
        requests: n,
        connections: opts.connections,
        rate: opts.rate,
        phases,
        daemon_peak_rss_kb,
        redis: kind,
    })
}

/// Where and how the API is called.
struct Api {
    addr: SocketAddr,
    /// `Bearer <token>`.
    authorization: String,
    host: String,
    /// Every order's startDate: a month ahead, so no timer fires during the bench.
    start_date: String,
}

impl Api {
    /// Until the API answers a command (it is served a moment after the admin server
    /// answers ping).
    async fn wait_served(&self) -> Result<(), BenchError> {
        let deadline = WallInstant::now() + Duration::from_secs(60);
        loop {
            let answered = async {
                let mut conn = HttpConn::open(self.addr).await.ok()?;
                let request = self.request(Method::GET, "/v1/clock", None, None);
                conn.send(request).await.ok().map(|(status, _)| status)
            }
            .await;
            if answered == Some(StatusCode::OK) {
                return Ok(());
            }
            if WallInstant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "the HTTP API on {} did not answer GET /v1/clock with 200 within 60 s (last: {answered:?})",
                    self.addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, &self.authorization);
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body))
            }
            None => Full::new(Bytes::new()),
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Request::new(Full::default()))
    }

    /// createOrder's args for order `id`.
    fn create_args(&self, id: &str, i: usize) -> Value {
        let mut args = monthly_args(&format!("c{}", i % 1_000), "OFFLINE", 12);
        args["orderId"] = json!(id);
        args["startDate"] = json!(self.start_date);
        args
    }
}

/// One HTTP/1.1 connection, kept alive for a whole phase.
struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl HttpConn {
    async fn open(addr: SocketAddr) -> Result<HttpConn, BenchError> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(setup("connect to the HTTP API"))?;
        stream.set_nodelay(true).map_err(setup("TCP_NODELAY"))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(setup("HTTP handshake"))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "bench HTTP connection closed");
            }
        });
        Ok(HttpConn { sender, driver })
    }

    /// Sends `request` and reads the whole answer: its status and body.
    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Hands out request indices to the workers: at once (closed loop), or each at its due
/// instant (fixed rate).
struct Pacer {
    next: AtomicUsize,
    n: usize,
    start: WallInstant,
    /// Nanoseconds between two due instants (fixed rate).
    period_ns: Option<u128>,
}

impl Pacer {
    /// The next request's index and the instant its latency runs from.
    async fn next(&self) -> Option<(usize, WallInstant)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.n {
            return None;
        }
        match self.period_ns {
            None => Some((i, WallInstant::now())),
            Some(period) => {
                let offset = u64::try_from(period * i as u128).unwrap_or(u64::MAX);
                let due = self.start + Duration::from_nanos(offset);
                tokio::time::sleep_until(due.into()).await;
                Some((i, due))
            }
        }
    }
}

/// CPU time every core of the machine has been busy so far (all processes), from /proc/stat.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    let total: u64 = ticks.iter().take(8).sum();
    let busy = total.checked_sub(ticks.get(3)? + ticks.get(4)?)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(busy as f64 / hz as f64))
}

struct Sample {
    latency: Duration,
    done: WallInstant,
    ok: bool,
}

impl Sample {
    /// A request due at `from` answered now.
    fn answered_now(from: WallInstant, ok: bool) -> Sample {
        let done = WallInstant::now();
        Sample {
            latency: done.saturating_duration_since(from),
            done,
            ok,
        }
    }
}

/// What every phase runs against.
struct Bench<'a> {
    api: &'a Api,
    client: &'a AdminClient,
    daemon: &'a DaemonProcess,
    redis: &'a BenchRedis,
    url: &'a str,
    connections: usize,
}

impl Bench<'_> {
    /// The id of order `i` created over `way` in the phases tagged `tag`.
    fn order(way: Way, tag: &str, i: usize) -> String {
        format!("{}{tag}{i:07}", way.letter())
    }

    /// Runs `n` requests of `cmd` over `way`: closed loop, or at `rate` per second. Creates
    /// are tagged `tag` (their ids); getOrder reads the orders the closed loop created over
    /// the same way.
    async fn phase(
        &self,
        cmd: Cmd,
        way: Way,
        rate: Option<u32>,
        n: usize,
        tag: &str,
    ) -> Result<Phase, BenchError> {
        let mut conns = Vec::new();
        if way == Way::Http {
            for _ in 0..self.connections {
                conns.push(HttpConn::open(self.api.addr).await?);
            }
        }
        let opened = conns.len();
        let rewrites = aof_rewrites(self.url).await?;
        let busy_before = machine_busy();
        let client_before = cpu_time(std::process::id()).unwrap_or_default();
        let before = CpuSplit::now(self.daemon, self.redis);
        let start = WallInstant::now();
        let pacer = Pacer {
            next: AtomicUsize::new(0),
            n,
            start,
            period_ns: rate.map(|r| 1_000_000_000u128 / u128::from(r.max(1))),
        };
        let reconnects = AtomicUsize::new(0);
        let samples: Vec<Sample> = match way {
            Way::Http => {
                let workers = conns
                    .iter_mut()
                    .map(|conn| self.http_worker(conn, &pacer, cmd, tag, &reconnects));
                futures_util::future::join_all(workers)
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
            Way::PubSub => {
                let workers = (0..self.connections).map(|_| self.pubsub_worker(&pacer, cmd, tag));
                futures_util::future::join_all(workers)
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
        };
        let end = samples.iter().map(|s| s.done).max().unwrap_or(start);
        let wall = end.saturating_duration_since(start);
        let after = CpuSplit::now(self.daemon, self.redis);
        let client_after = cpu_time(std::process::id()).unwrap_or_default();
        let busy_after = machine_busy();
        let aof = aof_rewrites(self.url).await?.saturating_sub(rewrites);
        drop(conns);
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        let ours = client_after.saturating_sub(client_before)
            + after.daemon.saturating_sub(before.daemon)
            + after.redis.saturating_sub(before.redis);
        let other = match (busy_before, busy_after) {
            (Some(b), Some(a)) => Some(pct(a.saturating_sub(b).saturating_sub(ours))),
            _ => None,
        };
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort();
        Ok(Phase {
            cmd,
            way,
            rate,
            in_flight: self.connections,
            sent: samples.len(),
            ok: samples.iter().filter(|s| s.ok).count(),
            latencies,
            wall,
            connections: opened,
            reconnects: reconnects.into_inner(),
            client_cpu_pct: pct(client_after.saturating_sub(client_before)),
            daemon_cpu_pct: pct(after.daemon.saturating_sub(before.daemon)),
            redis_cpu_pct: pct(after.redis.saturating_sub(before.redis)),
            daemon_us_per_request: after.daemon.saturating_sub(before.daemon).as_secs_f64() * 1e6
                / samples.len().max(1) as f64,
            other_cpu_pct: other,
            aof_rewrites: aof,
        })
    }

    async fn http_worker(
        &self,
        conn: &mut HttpConn,
        pacer: &Pacer,
        cmd: Cmd,
        tag: &str,
        reconnects: &AtomicUsize,
    ) -> Vec<Sample> {
        let mut samples = Vec::new();
        while let Some((i, from)) = pacer.next().await {
            let build = || match cmd {
                Cmd::CreateOrder => {
                    let id = Self::order(Way::Http, tag, i);
                    let body = self.api.create_args(&id, i).to_string();
                    self.api
                        .request(Method::POST, "/v1/orders", Some(&id), Some(body))
                }
                Cmd::GetOrder => {
                    let id = Self::order(Way::Http, "", i % pacer.n);
                    self.api
                        .request(Method::GET, &format!("/v1/orders/{id}"), None, None)
                }
            };
            let expected = match cmd {
                Cmd::CreateOrder => StatusCode::CREATED,
                Cmd::GetOrder => StatusCode::OK,
            };
            let mut answer = conn.send(build()).await;
            if let Err(e) = &answer {
                // The server closed the connection: a new one, and the same request again
                // (the same Idempotency-Key: a create is not made twice).
                tracing::warn!(error = %e, "bench HTTP request failed; reconnecting");
                reconnects.fetch_add(1, Ordering::Relaxed);
                if let Ok(fresh) = HttpConn::open(self.api.addr).await {
                    *conn = fresh;
                    answer = conn.send(build()).await;
                }
            }
            // The reply is read as the admin client reads its replies over pub/sub, so that
            // both clients do the same work.
            let reply = answer.as_ref().map(|(status, body)| {
                (*status, serde_json::from_slice::<Reply>(body).map(|r| r.ok))
            });
            let ok = matches!(reply, Ok((status, Ok(true))) if status == expected);
            if !ok {
                tracing::warn!(command = cmd.name(), reply = ?reply, "bench HTTP request not answered as expected");
            }
            samples.push(Sample::answered_now(from, ok));
        }
        samples
    }

    async fn pubsub_worker(&self, pacer: &Pacer, cmd: Cmd, tag: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        while let Some((i, from)) = pacer.next().await {
            let (id, args) = match cmd {
                Cmd::CreateOrder => {
                    let id = Self::order(Way::PubSub, tag, i);
                    let args = self.api.create_args(&id, i);
                    (id, args)
                }
                Cmd::GetOrder => {
                    let id = Self::order(Way::PubSub, "", i % pacer.n);
                    (id.clone(), json!({ "orderId": id }))
                }
            };
            let options = RequestOptions {
                // As the HTTP create's Idempotency-Key: the order id.
                id: (cmd == Cmd::CreateOrder).then_some(id),
                channel: CHANNEL.to_string(),
                attempt_timeout: Duration::from_secs(10),
                total_timeout: Duration::from_secs(60),
            };
            let reply = self.client.request_with(options, cmd.name(), args).await;
            let ok = matches!(&reply, Ok(r) if r.ok);
            if !ok {
                tracing::warn!(command = cmd.name(), reply = ?reply.as_ref().map(|r| r.error.clone()), "bench pub/sub request failed");
            }
            samples.push(Sample::answered_now(from, ok));
        }
        samples
    }
}
