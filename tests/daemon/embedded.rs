//! The embedded Redis as `recur serve` runs it: what a `kill -9` of recur leaves (nothing: the
//! server dies with recur; or, if one was left behind, the next start stops it and starts
//! afresh), with the data intact, and the HTTP probes answering before Redis is up.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};

use recur::admin::client::AdminClient;
use recur::store::embedded::EmbeddedRedis;

use crate::support::*;

const PREFIX: &str = "e";

/// `recur serve` on the embedded Redis of `data_dir`, its log (info) piped to the test.
fn serve(data_dir: &Path, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.args([
        "serve",
        "--prefix",
        PREFIX,
        "--clock",
        "simulated",
        "--clock-start",
        START,
    ])
    .env_remove("RUST_LOG")
    .env_remove("RECUR_REDIS__URL")
    .env("RECUR_REDIS__EMBEDDED__DATA_DIR", data_dir)
    .env("RECUR_LOG__LEVEL", "info")
    .env("RECUR_CLUSTER__LEASE_TTL", "2s")
    .env("RECUR_HTTP__LISTEN", "")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn recur serve")
}

/// A client of the daemon on `data_dir`, once it answers a ping.
async fn client_when_ready(data_dir: &Path) -> AdminClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(url) = EmbeddedRedis::running_url(data_dir) {
            break url;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the embedded Redis never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The socket may not answer yet (a restart reloads the data): connect until it does.
    let client = loop {
        match AdminClient::connect(&url, PREFIX).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "client: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let pong = client.request("ping", json!({})).await.expect("a reply");
    assert!(pong.ok, "{:?}", pong.error);
    client
}

/// SIGTERM, then its exit and log.
async fn stop(child: Child) -> Output {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops within 30 s")
        .expect("its output")
}

async fn sigkill(mut child: Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

/// The live (not zombie) processes whose working directory is `data_dir`: a redis-server
/// works in its `--dir`.
fn processes_in(data_dir: &Path) -> Vec<u32> {
    let data_dir = data_dir.canonicalize().expect("data dir");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let in_dir = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data_dir);
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X');
        if in_dir && !zombie {
            found.push(pid);
        }
    }
    found
}

async fn wait_no_process_in(data_dir: &Path, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = processes_in(data_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes still running in {}: {left:?}",
            data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_order(client: &AdminClient, id: &str) {
    let r = client
        .request("createOrder", monthly(id, "OFFLINE", 3, "5.00"))
        .await
        .expect("a reply");
    assert!(r.ok, "{:?}", r.error);
}

async fn assert_order_there(client: &AdminClient, id: &str) {
    let r = client
        .request("getOrder", json!({ "orderId": id }))
        .await
        .expect("a reply");
    assert!(r.ok, "{id} is gone: {:?}", r.error);
    assert_eq!(r.result.expect("an order")["id"], id);
}

fn data_dir_in(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("redis")
}

/// `kill -9` of `recur serve`: its redis-server gets the death signal and exits on its own
/// (flushing its append-only file), and the next `recur serve` on the same data directory
/// starts, says how much data it loads, and has the order made before the kill.
#[tokio::test]
async fn recur_killed_with_sigkill_restarts_on_its_data_dir_with_the_data_intact() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = data_dir_in(&tmp);
    let first = serve(&data_dir, &[]);
    let client = client_when_ready(&data_dir).await;
    create_order(&client, "o1").await;
    drop(client);
    assert!(!processes_in(&data_dir).is_empty(), "redis-server runs");

    sigkill(first).await;
    // Nobody stops it but the kernel's death signal.
    wait_no_process_in(&data_dir, Duration::from_secs(10)).await;

    let second = serve(&data_dir, &[]);
    let client = client_when_ready(&data_dir).await;
    assert_order_there(&client, "o1").await;
    drop(client);
    let out = stop(second).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("embedded redis-server loading") && log.contains("MB of data"),
        "{log}"
    );
    wait_no_process_in(&data_dir, Duration::from_secs(1)).await;
    assert_eq!(EmbeddedRedis::running_url(&data_dir), None);
}

/// A redis-server that escaped the death signal (here: started through a shell that runs it in
/// the background, as an older recur or another platform would leave it) is still running after
/// `kill -9` of recur. The next start recognises it as its data directory's, stops it with
/// SHUTDOWN (which flushes it) and starts a fresh one, with the data intact.
#[tokio::test]
async fn a_redis_server_left_behind_by_a_killed_recur_is_taken_over() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = data_dir_in(&tmp);
    let wrapper = tmp.path().join("redis-in-background");
    std::fs::write(&wrapper, "#!/bin/sh\nredis-server \"$@\" &\nwait\n").expect("script");
    make_executable(&wrapper);
    let first = serve(
        &data_dir,
        &[(
            "RECUR_REDIS__EMBEDDED__BINARY",
            wrapper.to_str().expect("utf-8"),
        )],
    );
    let client = client_when_ready(&data_dir).await;
    create_order(&client, "o1").await;
    drop(client);

    sigkill(first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = processes_in(&data_dir);
    assert_eq!(left.len(), 1, "one redis-server left behind: {left:?}");

    let second = serve(&data_dir, &[]);
    let client = client_when_ready(&data_dir).await;
    assert_order_there(&client, "o1").await;
    assert!(
        !processes_in(&data_dir).contains(&left[0]),
        "the left-behind server {} was stopped",
        left[0]
    );
    drop(client);
    let out = stop(second).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("left behind"), "{log}");
    wait_no_process_in(&data_dir, Duration::from_secs(1)).await;
}

/// /healthz answers while the embedded Redis is not up yet (here it takes 3 s to start, as a
/// large append-only file takes to load), and /readyz says why it is not ready.
#[tokio::test]
async fn healthz_answers_before_the_embedded_redis_is_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = data_dir_in(&tmp);
    let wrapper = tmp.path().join("slow-redis");
    std::fs::write(&wrapper, "#!/bin/sh\nsleep 3\nexec redis-server \"$@\"\n").expect("script");
    make_executable(&wrapper);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let listen = addr.to_string();
    let child = serve(
        &data_dir,
        &[
            (
                "RECUR_REDIS__EMBEDDED__BINARY",
                wrapper.to_str().expect("utf-8"),
            ),
            ("RECUR_HTTP__LISTEN", &listen),
        ],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "HTTP did not listen before Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = http_get(addr, "/healthz").await;
    let (ready_status, ready_body) = http_get(addr, "/readyz").await;
    assert_eq!(
        EmbeddedRedis::running_url(&data_dir),
        None,
        "answered before Redis was up"
    );
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(ready_status, 503, "{ready_body}");
    assert!(ready_body.contains("waiting for Redis"), "{ready_body}");

    let client = client_when_ready(&data_dir).await;
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http_get(addr, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = stop(child).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_no_process_in(&data_dir, Duration::from_secs(1)).await;
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path).expect("metadata").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms).expect("chmod");
}
