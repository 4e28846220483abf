//! Channel identity over Redis (SPEC 11.4): with `admin.identity = "enforced"` a request's
//! channel is the one in the Redis name it came in on; a body naming another is FORBIDDEN, a
//! `replyTo` outside the channel's reply namespace is dropped, plain `<prefix>:admin` is not
//! read, `[admin.commands]` is enforced. And with the ACL file deploy/ ships, Redis itself keeps
//! one application out of another's channel and replies.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::json;

use recur::admin::client::{AdminClient, ClientError, RequestOptions, Via};
use recur::config::{Identity, Settings};
use recur::store::RedisAddress;
use recur::wire::{Reply, Request};

use crate::support::*;

fn enforced(s: &mut Settings) {
    s.admin.identity = Identity::Enforced;
    s.admin.channels = vec!["web".into(), "backoffice".into()];
}

fn as_channel(channel: &str) -> RequestOptions {
    RequestOptions {
        channel: channel.to_string(),
        attempt_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(20),
        ..RequestOptions::default()
    }
}

fn code(reply: &Reply) -> Option<&str> {
    reply.error.as_ref().map(|e| e.code.as_str())
}

async fn nothing_on(url: String, channel: &str, wait: Duration) -> Option<String> {
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    let mut messages = pubsub.into_on_message();
    match tokio::time::timeout(wait, messages.next()).await {
        Ok(Some(msg)) => Some(msg.get_payload::<String>().unwrap_or_default()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_identities_come_from_the_redis_name() {
    let h = Harness::start_with(|s| {
        enforced(s);
        s.admin.commands.insert(
            "web".into(),
            vec![
                "ping".into(),
                "createOrder".into(),
                "getOrder".into(),
                "updateOrder".into(),
            ],
        );
    })
    .await;
    let address = RedisAddress::single(h.redis.url.clone());
    let web = AdminClient::connect_via(&address, "t", &Via::Channel("web".into()))
        .await
        .unwrap();
    assert!(web.reply_channel().starts_with("t:reply:web:"));

    let reply = web
        .request_with(as_channel("web"), "ping", json!({}))
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");
    // A body naming another channel: FORBIDDEN, nothing run.
    let order = monthly("o-id-1", "OFFLINE", 3, "5.00");
    let reply = web
        .request_with(as_channel("backoffice"), "createOrder", order.clone())
        .await
        .unwrap();
    assert_eq!(code(&reply), Some("FORBIDDEN"), "{reply:?}");
    // Its own (or none): the order is the channel's.
    let reply = web
        .request_with(as_channel(""), "createOrder", order.clone())
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.result.unwrap()["channel"], "web");
    // [admin.commands]: web may not pause.
    let reply = web
        .request_with(
            as_channel("web"),
            "pauseOrder",
            json!({"orderId": "o-id-1"}),
        )
        .await
        .unwrap();
    assert_eq!(code(&reply), Some("FORBIDDEN"), "{reply:?}");
    // The status manager lists no transition for web.
    let pause = json!({"customerId": "c1", "id": "o-id-1", "status": "PAUSED"});
    let reply = web
        .request_with(as_channel("web"), "updateOrder", pause)
        .await
        .unwrap();
    assert_eq!(code(&reply), Some("FORBIDDEN_STATUS_CHANGE"), "{reply:?}");
    // backoffice is not restricted.
    let backoffice = AdminClient::connect_via(&address, "t", &Via::Channel("backoffice".into()))
        .await
        .unwrap();
    let reply = backoffice
        .request_with(
            as_channel("backoffice"),
            "getOrder",
            json!({"orderId": "o-id-1"}),
        )
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");

    // Plain <prefix>:admin is not read.
    let quick = RequestOptions {
        attempt_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_millis(900),
        ..as_channel("web")
    };
    let unread = h.client.request_with(quick, "ping", json!({})).await;
    assert!(
        matches!(
            unread,
            Err(ClientError::Timeout {
                subscribers: Some(0),
                ..
            })
        ),
        "{unread:?}"
    );

    // A replyTo outside web's namespace: dropped, nothing published there, nothing run.
    let forged = Request {
        id: "forged-reply".into(),
        reply_to: Some("t:reply:backoffice:stolen".into()),
        channel: "web".into(),
        command: "createOrder".into(),
        args: monthly("o-id-dropped", "OFFLINE", 3, "5.00"),
        resolved_order_id: None,
    };
    let listener = tokio::spawn(nothing_on(
        h.redis.url.clone(),
        "t:reply:backoffice:stolen",
        Duration::from_secs(2),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = h.redis.conn().await;
    let _: usize = conn
        .publish("t:admin:web", serde_json::to_string(&forged).unwrap())
        .await
        .unwrap();
    assert_eq!(
        listener.await.unwrap(),
        None,
        "nothing published on another's reply channel"
    );
    let reply = web
        .request_with(
            as_channel("web"),
            "getOrder",
            json!({"orderId": "o-id-dropped"}),
        )
        .await
        .unwrap();
    assert_eq!(code(&reply), Some("NOT_FOUND"), "{reply:?}");

    // The command stream of the channel: read with the channel's identity.
    let mut request = web.new_request("ping", json!({}));
    request.channel = "web".into();
    web.enqueue(&request).await.unwrap();
    let reply = web
        .wait_reply(Some(&request.id), Duration::from_secs(10))
        .await;
    assert!(reply.is_some_and(|r| r.ok));
    let mut request = web.new_request("getOrder", json!({"orderId": "o-id-1"}));
    request.channel = "backoffice".into();
    web.enqueue(&request).await.unwrap();
    let reply = web
        .wait_reply(Some(&request.id), Duration::from_secs(10))
        .await
        .expect("a reply");
    assert_eq!(code(&reply), Some("FORBIDDEN"), "{reply:?}");

    // `recur admin --channel web` sends on web's own names when the settings say enforced,
    // and gets no answer on the plain names otherwise.
    let admin = |identity: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args([
                "admin",
                "getOrder",
                "--order-id",
                "o-id-1",
                "--channel",
                "web",
            ])
            .args([
                "--redis-url",
                &h.redis.url,
                "--prefix",
                "t",
                "--timeout",
                "3s",
            ])
            .env_remove("RUST_LOG")
            .env("RECUR_ADMIN__IDENTITY", identity)
            .env("RECUR_ADMIN__CHANNELS", "[\"web\", \"backoffice\"]")
            .output()
            .expect("recur admin runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (status, out) = admin("enforced");
    assert_eq!(status, Some(0), "{out}");
    assert!(out.contains("o-id-1"), "{out}");
    let (status, _) = admin("declared");
    assert_eq!(status, Some(2), "plain recur:admin is not read");
}

/// A private redis-server started with deploy/redis/users.acl (prefix `recur`), on a unix
/// socket in a temp dir; killed on drop.
struct AclRedis {
    _child: tokio::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl AclRedis {
    async fn start() -> AclRedis {
        recur::telemetry::init_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let acl = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/redis/users.acl");
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--aclfile")
            .arg(&acl)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        let redis = AclRedis {
            _child: child,
            socket,
            _dir: dir,
        };
        // The default user may only PING: enough to know it is up.
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(redis.url(None)) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                    {
                        return redis;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server with the ACL file did not start");
    }

    fn url(&self, user: Option<(&str, &str)>) -> String {
        let base = format!("redis+unix://{}", self.socket.display());
        match user {
            Some((user, pass)) => format!("{base}?user={user}&pass={pass}"),
            None => base,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_file_keeps_each_application_on_its_own_channel() {
    let redis = AclRedis::start().await;
    let daemon_url = redis.url(Some(("recur", "change-me-recur")));
    let mut settings = settings(&daemon_url, "recur");
    enforced(&mut settings);
    let daemon = Daemon::start(settings).await;

    let web_url = redis.url(Some(("web", "change-me-web")));
    let web = AdminClient::connect_via(
        &RedisAddress::single(web_url.clone()),
        "recur",
        &Via::Channel("web".into()),
    )
    .await
    .expect("web connects as its ACL user");
    let order = monthly("o-acl-1", "OFFLINE", 3, "5.00");
    let reply = web
        .request_with(as_channel("web"), "createOrder", order)
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");
    // The daemon still refuses a forged channel on web's own name.
    let reply = web
        .request_with(
            as_channel("backoffice"),
            "getOrder",
            json!({"orderId": "o-acl-1"}),
        )
        .await
        .unwrap();
    assert_eq!(code(&reply), Some("FORBIDDEN"), "{reply:?}");

    // Redis refuses web what belongs to backoffice or to recur.
    let mut conn = redis::Client::open(web_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Redis answers NOPERM ("this user has no permissions to access ...").
    let noperm = |r: redis::RedisResult<redis::Value>| match r {
        Err(e) => {
            let text = format!("{e} {:?}", e.code());
            text.contains("NOPERM") || text.contains("no permissions")
        }
        Ok(v) => {
            eprintln!("allowed: {v:?}");
            false
        }
    };
    let request = json!({"id": "x", "command": "ping", "channel": "backoffice"}).to_string();
    let published: redis::RedisResult<redis::Value> = redis::cmd("PUBLISH")
        .arg("recur:admin:backoffice")
        .arg(&request)
        .query_async(&mut conn)
        .await;
    assert!(
        noperm(published),
        "web may not publish on backoffice's channel"
    );
    let published: redis::RedisResult<redis::Value> = redis::cmd("PUBLISH")
        .arg("recur:admin")
        .arg(&request)
        .query_async(&mut conn)
        .await;
    assert!(noperm(published), "nor on the plain admin channel");
    let published: redis::RedisResult<redis::Value> = redis::cmd("PUBLISH")
        .arg("recur:forward")
        .arg(&request)
        .query_async(&mut conn)
        .await;
    assert!(noperm(published), "nor on the daemons' forward channel");
    let added: redis::RedisResult<redis::Value> = redis::cmd("XADD")
        .arg("recur:commands:backoffice")
        .arg("*")
        .arg("request")
        .arg(&request)
        .query_async(&mut conn)
        .await;
    assert!(noperm(added), "nor append to backoffice's stream");
    let read: redis::RedisResult<redis::Value> = redis::cmd("KEYS")
        .arg("recur:*")
        .query_async(&mut conn)
        .await;
    assert!(read.is_err(), "nor read recur's keys");
    let mut pubsub = redis::Client::open(web_url.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    let subscribed = pubsub.subscribe("recur:reply:backoffice:abc").await;
    assert!(
        subscribed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no permissions")),
        "web may not read backoffice's replies: {subscribed:?}"
    );
    drop(pubsub);
    daemon.stop().await;
}
