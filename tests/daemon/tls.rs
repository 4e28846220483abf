//! Redis as production runs it (SPEC 11.1): TLS (`rediss://`) with a CA of its own and a client
//! certificate, ACL users with a password from the environment, clear refusals at start-up,
//! and no password in anything the daemon prints. Real TLS-only redis-servers.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;

use recur::admin::client::AdminClient;
use recur::store::RedisAddress;

use crate::support::*;

/// How long a refused start-up may take to stop (one connection attempt, no retry loop).
const REFUSED_WITHIN: Duration = Duration::from_secs(20);

/// Runs `recur serve` on `url` with `env` until it stops by itself: its exit status and its
/// whole stderr.
async fn serve_until_exit(url: &str, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = ChildDaemon::command(url, "t", &[], env);
    cmd.stderr(Stdio::piped());
    let out = tokio::time::timeout(REFUSED_WITHIN, cmd.output())
        .await
        .expect("recur serve stops by itself, without a retry loop")
        .expect("recur runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `recur admin <args>` on `url` with `env`: exit status, stdout, stderr.
async fn admin(url: &str, env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.arg("admin")
        .args(args)
        .args(["--redis-url", url, "--prefix", "t", "--timeout", "10s"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("recur admin stops")
        .expect("recur runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A refusal is one line on stderr, `error: cannot connect to Redis at <url>: <what>: ...`.
fn assert_one_line_refusal(stderr: &str, url: &str, what: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not: {stderr}");
    let line = lines[0];
    println!("refused: {line}");
    assert!(
        line.starts_with(&format!("error: cannot connect to Redis at {url}: {what}")),
        "{line}"
    );
}

fn env_of<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn round_trip(client: &AdminClient, order_id: &str) {
    let created = client
        .request("createOrder", monthly(order_id, "OFFLINE", 3, "9.90"))
        .await
        .expect("a reply");
    assert!(created.ok, "{created:?}");
    let got = client
        .request("getOrder", json!({ "orderId": order_id }))
        .await
        .expect("a reply");
    assert!(got.ok, "{got:?}");
    let order = got.result.expect("the order");
    assert_eq!(order["id"], order_id, "{order}");
    assert_eq!(order["status"], "ACTIVE", "{order}");
}

#[tokio::test]
async fn the_daemon_serves_over_tls_with_its_own_ca() {
    let h = Harness::start_on(TlsRedis::start(false).await, |_| {}).await;
    round_trip(&h.client, "o-tls").await;
    // The change is in the streams, read over TLS too.
    let timeline = h.timeline("o-tls").await;
    let types = types(&timeline);
    assert_eq!(types[0], "orderCreated", "{timeline:?}");
    assert!(types.contains(&"orderStarted"), "{timeline:?}");
    let mut h = h;
    h.stop().await;
}

#[tokio::test]
async fn a_client_certificate_is_refused_without_one_and_used_with_it() {
    let redis = TlsRedis::start(true).await;
    // The CA alone: the server wants a certificate from the client.
    let ca = redis.certs.ca.display().to_string();
    let (status, stderr) =
        serve_until_exit(&redis.url, &[("RECUR_REDIS__TLS__CA_FILE", &ca)]).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert_one_line_refusal(&stderr, &redis.url, "");
    assert!(
        stderr.contains("redis.tls.cert_file") || stderr.contains("client certificate"),
        "says what to set: {stderr}"
    );
    // With it, commands go through, in the daemon and in `recur admin`.
    let env = redis.env();
    let h = Harness::start_on(redis, |_| {}).await;
    round_trip(&h.client, "o-mtls").await;
    let (status, stdout, stderr) = admin(
        &h.redis.url,
        &env_of(&env),
        &["getOrder", "--order-id", "o-mtls"],
    )
    .await;
    assert!(status.success(), "{status}: {stdout} {stderr}");
    assert!(stdout.contains("o-mtls"), "{stdout}");
    let mut h = h;
    h.stop().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_at_start_up() {
    let redis = TlsRedis::start(false).await;
    let other = redis.certs.other_ca.display().to_string();
    let env = [("RECUR_REDIS__TLS__CA_FILE", other.as_str())];
    let (status, stderr) = serve_until_exit(&redis.url, &env).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert_one_line_refusal(&stderr, &redis.url, "TLS certificate refused");
    assert!(stderr.contains("redis.tls.ca_file"), "{stderr}");
    // `recur admin` refuses the same way (exit 2: no reply).
    let (status, _, stderr) = admin(&redis.url, &env, &["getOrder", "--order-id", "x"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_one_line_refusal(&stderr, &redis.url, "TLS certificate refused");
    // Without a CA file, the bundled Mozilla roots do not know the test CA either.
    let (status, stderr) = serve_until_exit(&redis.url, &[]).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert_one_line_refusal(&stderr, &redis.url, "TLS certificate refused");
    // A CA file that does not exist is said so.
    let (status, stderr) = serve_until_exit(
        &redis.url,
        &[("RECUR_REDIS__TLS__CA_FILE", "/nonexistent/ca.pem")],
    )
    .await;
    assert!(!status.success(), "{status}: {stderr}");
    assert_one_line_refusal(&stderr, &redis.url, "configuration");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

#[tokio::test]
async fn insecure_skips_verification_and_warns_at_start() {
    let redis = TlsRedis::start(false).await;
    let mut daemon =
        ChildDaemon::start_logged(&redis.url, "t", &[("RECUR_REDIS__TLS__INSECURE", "true")]).await;
    let mut stderr = daemon.child.stderr.take().expect("piped stderr");
    let mut access = recur::store::RedisAccess::default();
    access.tls.insecure = true;
    let client = AdminClient::connect_to(
        &RedisAddress::single(redis.url.clone()).with_access(access),
        "t",
    )
    .await
    .expect("a client that does not verify either");
    round_trip(&client, "o-insecure").await;
    daemon.kill().await;
    let mut log = String::new();
    stderr.read_to_string(&mut log).await.expect("the log");
    assert!(
        log.contains("WARN") && log.contains("redis.tls.insecure = true"),
        "{log}"
    );
}

/// Sends SIGTERM and waits for the child to stop.
async fn terminate(daemon: &mut ChildDaemon) {
    let pid = daemon.child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), daemon.child.wait())
        .await
        .expect("stops on SIGTERM")
        .expect("waits");
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn an_acl_user_gets_in_with_the_password_from_the_environment_and_no_log_shows_it() {
    const PASSWORD: &str = "s3cret-Pa55word";
    const URL_PASSWORD: &str = "url-Pa55word-overridden";
    let redis = TlsRedis::start(false).await;
    // The rights docs/OPERATIONS.md recommends: recur's keys and channels, no dangerous
    // command.
    redis
        .add_user(
            "recur-app",
            PASSWORD,
            &["~t:*", "&t:*", "+@all", "-@dangerous"],
        )
        .await;
    // The URL's password is wrong: RECUR_REDIS__PASSWORD wins over it.
    let url = format!("rediss://recur-app:{URL_PASSWORD}@127.0.0.1:{}", redis.port);
    let tls = redis.env();
    let mut env = env_of(&tls);
    env.push(("RECUR_REDIS__PASSWORD", PASSWORD));
    // Everything the daemon logs at debug, as JSON and as text.
    let mut daemon = ChildDaemon::start_logged(
        &url,
        "t",
        &[&env[..], &[("RECUR_LOG__LEVEL", "debug")]].concat(),
    )
    .await;
    let mut stderr = daemon.child.stderr.take().expect("piped stderr");
    let log = tokio::spawn(async move {
        let mut log = String::new();
        stderr.read_to_string(&mut log).await.expect("the log");
        log
    });

    let mut access = redis.access();
    access.username = Some("recur-app".to_string());
    access.password = Some(PASSWORD.to_string());
    let client = AdminClient::connect_to(
        &RedisAddress::single(redis.url.clone()).with_access(access),
        "t",
    )
    .await
    .expect("the ACL user gets in");
    round_trip(&client, "o-acl").await;
    // `recur admin` takes the same settings.
    let (status, stdout, stderr_admin) =
        admin(&url, &env, &["getOrder", "--order-id", "o-acl"]).await;
    assert!(status.success(), "{status}: {stdout} {stderr_admin}");
    assert!(stdout.contains("o-acl"), "{stdout}");
    let metrics = client
        .request("getMetrics", json!({}))
        .await
        .expect("a reply");
    assert!(metrics.ok, "{metrics:?}");
    let metrics = serde_json::to_string(&metrics).unwrap();
    terminate(&mut daemon).await;
    let log = log.await.expect("the log reader");

    // The daemon logged its Redis, the user's password masked; no password anywhere.
    assert!(
        log.contains(&format!("rediss://recur-app:***@127.0.0.1:{}", redis.port)),
        "{log}"
    );
    // The restricted user was enough for everything the daemon did.
    assert!(!log.contains("NOPERM"), "{log}");
    for printed in [&log, &stdout, &stderr_admin, &metrics] {
        assert!(!printed.contains(PASSWORD), "{printed}");
        assert!(!printed.contains(URL_PASSWORD), "{printed}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_clearly() {
    const WRONG: &str = "not-the-Pa55word";
    let redis = TlsRedis::start(false).await;
    redis
        .add_user("recur-app", "the-right-Pa55word", &["~*", "&*", "+@all"])
        .await;
    let url = format!("rediss://recur-app@127.0.0.1:{}", redis.port);
    let tls = redis.env();
    let mut env = env_of(&tls);
    env.push(("RECUR_REDIS__PASSWORD", WRONG));
    let (status, stderr) = serve_until_exit(&url, &env).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert_one_line_refusal(&stderr, &url, "authentication failed: WRONGPASS");
    assert!(!stderr.contains(WRONG), "{stderr}");
    let (status, stdout, stderr) = admin(&url, &env, &["getOrder", "--order-id", "x"]).await;
    assert_eq!(status.code(), Some(2), "{stdout} {stderr}");
    assert_one_line_refusal(&stderr, &url, "authentication failed: WRONGPASS");
    assert!(!stderr.contains(WRONG), "{stderr}");
    // The same password in the URL: masked in the line.
    let in_url = format!("rediss://recur-app:{WRONG}@127.0.0.1:{}", redis.port);
    let (status, stderr) = serve_until_exit(&in_url, &env_of(&tls)).await;
    assert!(!status.success(), "{status}: {stderr}");
    let masked = format!("rediss://recur-app:***@127.0.0.1:{}", redis.port);
    assert_one_line_refusal(&stderr, &masked, "authentication failed: WRONGPASS");
    assert!(!stderr.contains(WRONG), "{stderr}");
}

#[tokio::test]
async fn a_tls_cluster_serves_orders_on_every_master() {
    let cluster = TestCluster::start_tls().await;
    assert!(cluster.seeds.starts_with("rediss://"), "{}", cluster.seeds);
    let mut h = Harness::start_on(cluster, |_| {}).await;
    // Orders land on partitions of every master: the slot map's nodes (TLS ports) are reached
    // with the same CA.
    let ids: Vec<String> = (0..8).map(|i| format!("o-tls-cluster-{i}")).collect();
    for id in &ids {
        round_trip(&h.client, id).await;
    }
    let mut listed = h.list_pages(100).await;
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    // Timers fire on every partition through the cluster connections.
    h.advance("2026-02-01T00:00:00Z").await;
    for id in &ids {
        let cycles = h
            .timeline(id)
            .await
            .into_iter()
            .filter(|(t, _)| t == "orderCycleStarted")
            .count();
        assert_eq!(cycles, 2, "{id}");
    }
    h.stop().await;
}

#[tokio::test]
async fn help_shows_no_configured_secret() {
    for args in [&["--help"][..], &["serve", "--help"], &["admin", "--help"]] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(args)
            .env("RECUR_REDIS__PASSWORD", "s3cret-in-env")
            .env("RECUR_REDIS__URL", "rediss://app:s3cret-in-url@127.0.0.1:1")
            .output()
            .await
            .expect("recur runs");
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("s3cret"), "{args:?}: {text}");
    }
}
