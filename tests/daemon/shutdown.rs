//! Stopping a daemon in the middle of an advance: prompt, leases released at once, and the
//! advance finished by the next owner of partition 0 when the client retries its request id.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::json;

use recur::admin::client::{AdminClient, RequestOptions};
use recur_bench::{monthly_args, order_id, seed, SeedOptions, SeedOrder, PREFIX};

use crate::support::*;

const ORDERS: usize = 2_000;
const DAYS: i64 = 90;

#[tokio::test]
async fn sigterm_during_an_advance_stops_promptly_and_the_next_owner_finishes_it() {
    let redis = TestRedis::start().await;
    // Daily OFFLINE orders (paid at purchase, never asked again): 90 days are 180,000 cycle
    // starts, seconds of work for a debug build, so the advance is under way when the signal
    // comes.
    seed_daily_book(&redis).await;
    // Leases live 30 s: released leases are gone at once, expired ones would take 30 s.
    let env = [
        ("RECUR_CLUSTER__LEASE_TTL", "30s"),
        ("RECUR_LOG__LEVEL", "info"),
    ];
    let mut first = ChildDaemon::start_logged(&redis.url, PREFIX, &env).await;
    let log = collect_stderr(&mut first);
    let client = AdminClient::connect(&redis.url, PREFIX).await.unwrap();
    wait_ready(&client).await;

    let target = at(recur_bench::BENCH_START) + chrono::Duration::days(DAYS);
    let to = recur::domain::time::format_instant(&target);
    let advance = {
        let client = AdminClient::connect(&redis.url, PREFIX).await.unwrap();
        let to = to.clone();
        tokio::spawn(async move {
            let options = RequestOptions {
                id: Some("advance-1".into()),
                total_timeout: Duration::from_secs(240),
                ..RequestOptions::default()
            };
            client
                .request_with(options, "advanceClock", json!({ "to": to }))
                .await
        })
    };
    // Under way: some cycle starts are in the streams, the shared clock has not reached `to`.
    let mut conn = redis.conn().await;
    wait_until(Duration::from_secs(60), || async {
        events_len(&redis).await > ORDERS * 5
    })
    .await;
    let stopping = Instant::now();
    let pid = first.child.id().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(30), first.child.wait())
        .await
        .expect("the daemon stops within its grace")
        .unwrap();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    let log = log.await.unwrap();
    assert!(
        log.contains("stopped") && !log.contains("released=0"),
        "leases released: {log}"
    );
    let partitions = partitions(&redis, PREFIX).await;
    let keys = recur::store::Keys::new(PREFIX, partitions);
    for p in 0..partitions {
        let lease: Option<String> = conn.get(keys.lease(p)).await.unwrap();
        assert_eq!(lease, None, "partition {p}'s lease released at once");
    }
    let mid: i64 = events_len(&redis).await as i64;
    assert!(
        mid < (ORDERS as i64) * (DAYS + 1),
        "the advance was interrupted (it had {mid} changes)"
    );

    // The next daemon takes partition 0 and finishes the advance; the retried id gets its reply.
    let second = ChildDaemon::start(&redis.url, PREFIX, &env).await;
    let reply = advance.await.unwrap().expect("a reply");
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.result.unwrap()["now"], to.as_str());
    // Every order fired every day exactly once: cycle 91 on day 90, sequence without repeats.
    let mut seen = 0;
    let mut cursor = serde_json::Value::Null;
    loop {
        let mut args = json!({"limit": 500});
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = client.request("listOrders", args).await.unwrap();
        let page = page.result.unwrap();
        for o in page["orders"].as_array().unwrap() {
            assert_eq!(o["currentCycle"]["index"], DAYS + 1, "{}", o["id"]);
            seen += 1;
        }
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, ORDERS);
    eprintln!(
        "stopped in {took:?} mid-advance ({mid} of {} changes)",
        ORDERS as i64 * (DAYS + 1)
    );
    second.kill().await;
}

/// Change entries in every partition's stream (creation included).
/// ORDERS daily OFFLINE orders bought at the bench's start.
async fn seed_daily_book(redis: &TestRedis) {
    seed(&redis.url, ORDERS, &SeedOptions::simulated(), |i| {
        let mut args = monthly_args(&format!("c{}", i % 97), "OFFLINE", 0);
        args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1, "unit": "DAY"});
        SeedOrder {
            id: order_id(i),
            args,
            created: at(recur_bench::BENCH_START),
            payment: None,
        }
    })
    .await
    .unwrap();
}

async fn events_len(redis: &TestRedis) -> usize {
    stream_len(redis, PREFIX).await
}

async fn wait_ready(client: &AdminClient) {
    for _ in 0..300 {
        if let Ok(r) = client.request("ping", json!({})).await {
            if r.ok {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon never answered");
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not reached within {limit:?}");
}

/// Reads the daemon's stderr as it comes (so its pipe never fills), to the end.
fn collect_stderr(d: &mut ChildDaemon) -> tokio::task::JoinHandle<String> {
    use tokio::io::AsyncReadExt;
    let mut err = d.child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut out = String::new();
        err.read_to_string(&mut out).await.unwrap();
        out
    })
}

/// A long advance: `recur admin advanceClock` waits as long as the clock moves (beyond its
/// `--timeout`), printing progress on stderr; getClock is answered meanwhile.
#[tokio::test]
async fn a_long_advance_is_waited_for_with_progress_and_reads_are_answered_meanwhile() {
    let redis = TestRedis::start().await;
    seed_daily_book(&redis).await;
    let daemon = Daemon::start(settings(&redis.url, PREFIX)).await;
    let client = AdminClient::connect(&redis.url, PREFIX).await.unwrap();
    let target = at(recur_bench::BENCH_START) + chrono::Duration::days(DAYS);
    let to = recur::domain::time::format_instant(&target);
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["admin", "--redis-url", &redis.url, "--prefix", PREFIX])
        .args(["advanceClock", "--to", &to, "--timeout", "2s"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // getClock answers during the advance, with how far it has got.
    let mut seen_advance = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let options = RequestOptions {
            total_timeout: Duration::from_secs(5),
            ..RequestOptions::default()
        };
        let reply = client
            .request_with(options, "getClock", json!({}))
            .await
            .expect("getClock is answered during the advance");
        if let Some(a) = reply.result.as_ref().and_then(|r| r.get("advance")) {
            seen_advance = Some(a.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let advance = seen_advance.expect("an advance seen by getClock");
    assert_eq!(advance["to"], to.as_str());
    let out = cli.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(&to), "{stdout}");
    assert!(
        stderr.contains("advancing to"),
        "progress on stderr: {stderr}"
    );
    daemon.stop().await;
}
