//! The HTTP API (SPEC 11.3) over real HTTP against real daemons: the routes and their status
//! codes, tokens and scopes, idempotency keys (retries racing, another body), hostile input,
//! two daemons behind "a load balancer", and the OpenAPI document checked by a validator.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use recur::config::{Scope, Settings, TokenSettings};

use crate::support::*;

const READER: &str = "reader-secret-1";
const WRITER: &str = "writer-secret-2";
const ADMIN: &str = "admin-secret-3";

fn token(name: &str, secret: &str, channel: &str, scope: Scope) -> TokenSettings {
    TokenSettings {
        name: name.to_string(),
        sha256: format!("{:x}", Sha256::digest(secret.as_bytes())),
        channel: channel.to_string(),
        scope,
    }
}

/// An HTTP listener on a free loopback port, with three tokens (channel `web` for the writer).
fn with_tokens(s: &mut Settings) {
    s.http.listen = "127.0.0.1:0".to_string();
    s.http.tokens = vec![
        token("reader", READER, "web", Scope::Read),
        token("writer", WRITER, "web", Scope::Write),
        token("ops", ADMIN, "ops", Scope::Admin),
    ];
}

/// A client of one daemon's API.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn of(addr: SocketAddr) -> Http {
        Http {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a client"),
        }
    }

    /// One request: the status and the JSON body (Null when it is not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("an answer");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call("GET", path, token, None, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        self.call("POST", path, token, key, Some(body)).await
    }
}

fn http_of(h: &Harness) -> Http {
    Http::of(
        h.daemon
            .as_ref()
            .and_then(|d| d.ready.http)
            .expect("HTTP is bound"),
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Raw bytes over a fresh connection: the status line's code (0 when the connection closed
/// without one) and the whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A chunked POST over a fresh connection (the server may answer before it has read it all).
async fn chunked_post(addr: SocketAddr, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    for chunk in body.chunks(64 * 1024) {
        let size = format!("{:x}\r\n", chunk.len());
        if stream.write_all(size.as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_run_the_commands_with_their_status_codes() {
    let h = Harness::start_with(with_tokens).await;
    let api = http_of(&h);
    let order = monthly("o-http-1", "ONLINE", 3, "10.00");

    let (status, created) = api
        .post("/v1/orders", Some(WRITER), Some("create-1"), &order)
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["id"].as_str(), created["ok"].as_bool()),
        (Some("create-1"), Some(true))
    );
    assert_eq!(created["result"]["id"], "o-http-1");
    // The same key and body: the first reply, again 201, nothing created twice.
    let (status, again) = api
        .post("/v1/orders", Some(WRITER), Some("create-1"), &order)
        .await;
    assert_eq!((status, &again), (201, &created));
    // The same key with another body: 409 CONFLICT.
    let other = monthly("o-http-2", "ONLINE", 3, "10.00");
    let (status, conflict) = api
        .post("/v1/orders", Some(WRITER), Some("create-1"), &other)
        .await;
    assert_eq!((status, code(&conflict)), (409, "CONFLICT"), "{conflict}");

    let (status, got) = api.get("/v1/orders/o-http-1", Some(READER)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["result"]["status"], created["result"]["status"]);
    let (status, body) = api.get("/v1/orders/nope", Some(READER)).await;
    assert_eq!((status, code(&body)), (404, "NOT_FOUND"));

    // A payment, then the events newest first, each with its change's version.
    let pay = json!({"orderId": "o-http-1", "paymentId": "p1", "amount": "10.00"});
    let (status, paid) = api
        .post("/v1/commands/recordPayment", Some(WRITER), None, &pay)
        .await;
    assert_eq!(status, 200, "{paid}");
    let (status, events) = api
        .get("/v1/orders/o-http-1/events?limit=3", Some(READER))
        .await;
    assert_eq!(status, 200, "{events}");
    let events = events["result"]["events"]
        .as_array()
        .expect("events")
        .clone();
    assert_eq!(events.len(), 3, "{events:?}");
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] > w[1]),
        "newest first: {sequences:?}"
    );
    assert_eq!(
        events[0]["version"], paid["result"]["version"],
        "{events:?}"
    );
    assert!(events[0]["type"].is_string() && events[0]["streamId"].is_string());
    let (status, all) = api.get("/v1/orders/o-http-1/events", Some(READER)).await;
    assert_eq!(status, 200);
    let all = all["result"]["events"].as_array().unwrap().clone();
    assert_eq!(
        all.len(),
        h.timeline("o-http-1").await.len(),
        "every event of the order"
    );
    let (status, body) = api
        .get("/v1/orders/o-http-1/events?limit=0", Some(READER))
        .await;
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"));
    let (status, body) = api.get("/v1/orders/ghost/events", Some(READER)).await;
    assert_eq!((status, code(&body)), (404, "NOT_FOUND"));

    let (status, list) = api
        .get("/v1/orders?customerId=c1&limit=10", Some(READER))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["result"]["orders"][0]["id"], "o-http-1");
    let (status, body) = api.get("/v1/orders?limit=lots", Some(READER)).await;
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"), "{body}");
    let (status, body) = api.get("/v1/orders?colour=red", Some(READER)).await;
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"), "{body}");
    let (status, stats) = api.get("/v1/customers/c1/stats", Some(READER)).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["result"]["customerId"], "c1");
    let (status, clock) = api.get("/v1/clock", Some(READER)).await;
    assert_eq!(
        (status, clock["result"]["now"].as_str()),
        (200, Some("2026-01-01T00:00:00.000Z"))
    );

    let (status, me) = api.get("/v1/whoami", Some(WRITER)).await;
    assert_eq!(status, 200);
    assert_eq!(
        me["result"],
        json!({"name": "writer", "channel": "web", "scope": "write"})
    );
    let (status, daemons) = api.get("/v1/daemons", Some(READER)).await;
    assert_eq!(status, 200, "{daemons}");
    let listed = daemons["result"]["daemons"].as_array().expect("daemons");
    assert_eq!(listed.len(), 1, "{daemons}");
    assert_eq!(
        listed[0]["partitionsHeld"].as_u64(),
        Some(u64::from(partitions(&h.redis, "t").await))
    );
    assert!(listed[0]["started"].is_string() || listed[0]["started"].is_null());

    // Scopes: a reader may not write, a writer may not move the clock; the admin may.
    let (status, body) = api.post("/v1/orders", Some(READER), None, &other).await;
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
    let to = json!({"to": "2026-02-15T00:00:00Z"});
    let (status, body) = api
        .post("/v1/commands/advanceClock", Some(WRITER), None, &to)
        .await;
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"));
    let (status, body) = api
        .post("/v1/commands/advanceClock", Some(ADMIN), None, &to)
        .await;
    assert_eq!(status, 200, "{body}");
    // INVALID_STATE is 409: an order that is not paused cannot be resumed.
    let resume = json!({"orderId": "o-http-1"});
    let (status, body) = api
        .post("/v1/commands/resumeOrder", Some(WRITER), None, &resume)
        .await;
    assert_eq!((status, code(&body)), (409, "INVALID_STATE"), "{body}");

    let (status, deleted) = api
        .call("DELETE", "/v1/orders/o-http-1", Some(WRITER), None, None)
        .await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _) = api.get("/v1/orders/o-http-1", Some(READER)).await;
    assert_eq!(status, 404);

    // Every admin command has its route: none is an unknown route or command.
    for name in recur::admin::COMMAND_NAMES {
        let (status, body) = api
            .post(
                &format!("/v1/commands/{name}"),
                Some(ADMIN),
                None,
                &json!({}),
            )
            .await;
        assert!(body["ok"].is_boolean(), "{name}: {status} {body}");
        assert_ne!(code(&body), "UNKNOWN_COMMAND", "{name}");
        assert_ne!(status, 404, "{name}: {body}");
    }
    let (status, body) = api
        .post("/v1/commands/launchRocket", Some(ADMIN), None, &json!({}))
        .await;
    assert_eq!((status, code(&body)), (400, "UNKNOWN_COMMAND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_input_is_refused_clearly() {
    let h = Harness::start_with(with_tokens).await;
    let api = http_of(&h);
    let addr = h.daemon.as_ref().unwrap().ready.http.unwrap();

    // No token, an unknown one, garbage: 401 with a Bearer challenge, nothing run.
    let (status, body) = api.get("/v1/whoami", None).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    let (status, body) = api.get("/v1/whoami", Some("not-a-token")).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"));
    for auth in [
        "Basic d3JpdGVyOnNlY3JldA==",
        "Bearer",
        "Bearer  ",
        "Token writer-secret-2",
        "bearer writer-secret-2 x",
    ] {
        let resp = api
            .client
            .get(format!("{}/v1/whoami", api.base))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{auth}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("writer-secret"),
            "the token is never echoed: {text}"
        );
    }
    // Raw bytes: a token with a control byte, a header split by a bare CR, two tokens.
    let (status, text) = raw(addr, b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\x02\r\nConnection: close\r\n\r\n").await;
    assert!(status == 401 || status == 400, "{text}");
    let (status, text) = raw(addr, b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer reader-secret-1\rX-Injected: 1\r\nConnection: close\r\n\r\n").await;
    assert!(status == 400 || status == 401 || status == 0, "{text}");
    let two = format!("GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n");
    let (status, text) = raw(addr, two.as_bytes()).await;
    assert_eq!(status, 401, "two tokens are none: {text}");
    // An Idempotency-Key that is no id, or two of them.
    let (status, body) = api
        .call(
            "GET",
            "/v1/clock",
            Some(READER),
            Some("a key with spaces"),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"), "{body}");
    let long = "k".repeat(200);
    let (status, _) = api
        .call("GET", "/v1/clock", Some(READER), Some(&long), None)
        .await;
    assert_eq!(status, 400);
    let twice = format!("GET /v1/clock HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nIdempotency-Key: a\r\nIdempotency-Key: b\r\nConnection: close\r\n\r\n");
    let (status, _) = raw(addr, twice.as_bytes()).await;
    assert_eq!(status, 400);

    // Bodies: malformed JSON, not an object, another content type, too large.
    let post = |body: &'static [u8], content_type: &'static str| {
        let client = api.client.clone();
        let url = format!("{}/v1/commands/ping", api.base);
        async move {
            let resp = client
                .post(url)
                .header("Authorization", format!("Bearer {WRITER}"))
                .header("Content-Type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value =
                serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = post(b"{\"broken\": ", "application/json").await;
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"), "{body}");
    let (status, body) = post(b"[1, 2]", "application/json").await;
    assert_eq!((status, code(&body)), (400, "INVALID_REQUEST"));
    let (status, body) = post(b"{}", "text/plain").await;
    assert_eq!((status, code(&body)), (415, "INVALID_REQUEST"), "{body}");
    let (status, body) = post(b"orderId=o1", "application/x-www-form-urlencoded").await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = post(b"{}", "application/json; charset=utf-8").await;
    assert_eq!(status, 200, "{body}");
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    // A Content-Length over the limit is refused from the header alone (the body is not sent:
    // a server that answers early may close before a client has written it all, which makes
    // a client's own send fail on a loaded machine).
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITER}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        huge.len()
    );
    let (status, text) = raw(addr, head.as_bytes()).await;
    assert_eq!(status, 413, "{}", &text[..text.len().min(300)]);
    // Without a Content-Length (chunked), the limit holds as the body arrives.
    let (status, text) = chunked_post(addr, "/v1/orders", WRITER, huge.as_bytes()).await;
    assert_eq!(status, 413, "{}", &text[..text.len().min(300)]);

    // A `channel` in the body is ignored: the order is the token's channel's.
    let mut order = monthly("o-forged", "ONLINE", 3, "10.00");
    order["channel"] = json!("backoffice");
    let (status, body) = api.post("/v1/orders", Some(WRITER), None, &order).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["result"]["channel"], "web", "{body}");
    // Unknown routes and methods.
    let (status, body) = api.get("/v1/nothing/here", Some(READER)).await;
    assert_eq!((status, code(&body)), (404, "NOT_FOUND"));
    let (status, _) = api
        .call("PUT", "/v1/orders/o-forged", Some(WRITER), None, None)
        .await;
    assert_eq!(status, 405);
    // The daemon still serves.
    let (status, _) = api.get("/v1/orders/o-forged", Some(READER)).await;
    assert_eq!(status, 200);
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_racing_on_one_key_apply_once() {
    let h = Harness::start_with(with_tokens).await;
    let api = std::sync::Arc::new(http_of(&h));
    // No orderId: the id is derived from the request id, so only the key makes it one order.
    let mut order = monthly("x", "OFFLINE", 3, "10.00");
    order.as_object_mut().unwrap().remove("orderId");
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let api = std::sync::Arc::clone(&api);
        let order = order.clone();
        racing.spawn(async move {
            api.post("/v1/orders", Some(WRITER), Some("race-1"), &order)
                .await
        });
    }
    let mut replies = Vec::new();
    while let Some(r) = racing.join_next().await {
        replies.push(r.unwrap());
    }
    assert!(
        replies.iter().all(|r| r == &replies[0]),
        "one reply: {replies:?}"
    );
    assert_eq!(replies[0].0, 201, "{:?}", replies[0]);
    let created: Vec<Value> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "orderCreated")
        .collect();
    assert_eq!(created.len(), 1, "applied once: {created:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_and_allowed_commands_follow_the_tokens_channel() {
    let h = Harness::start_with(|s| {
        with_tokens(s);
        // `ops` may pause and cancel; `web` may change no status, and run only these.
        s.status_manager.insert(
            "ops".into(),
            [("ACTIVE".to_string(), vec!["PAUSED".to_string()])]
                .into_iter()
                .collect(),
        );
        s.admin.commands.insert(
            "web".into(),
            vec![
                "createOrder".into(),
                "getOrder".into(),
                "updateOrder".into(),
            ],
        );
    })
    .await;
    let api = http_of(&h);
    let order = monthly("o-sm", "OFFLINE", 3, "10.00");
    let (status, body) = api.post("/v1/orders", Some(WRITER), None, &order).await;
    assert_eq!(status, 201, "{body}");
    let pause = json!({"customerId": "c1", "id": "o-sm", "status": "PAUSED"});
    let (status, body) = api
        .post("/v1/commands/updateOrder", Some(WRITER), None, &pause)
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, "FORBIDDEN_STATUS_CHANGE"),
        "{body}"
    );
    let (status, body) = api
        .post("/v1/commands/updateOrder", Some(ADMIN), None, &pause)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .post(
            "/v1/commands/resumeOrder",
            Some(WRITER),
            None,
            &json!({"orderId": "o-sm"}),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "FORBIDDEN"), "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin.commands.web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_api_is_loopback_only() {
    let mut h = Harness::start_with(|s| s.http.listen = "127.0.0.1:0".to_string()).await;
    let api = http_of(&h);
    let (status, me) = api.get("/v1/whoami", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me["result"],
        json!({"name": null, "channel": "http", "scope": "admin"})
    );
    h.stop().await;
    let h = Harness::start_with(|s| s.http.listen = "0.0.0.0:0".to_string()).await;
    let port = h.daemon.as_ref().unwrap().ready.http.unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _) = http_get(addr, "/v1/whoami").await;
    assert_eq!(
        status, 404,
        "no API on a non-loopback listener without tokens"
    );
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_behind_a_load_balancer_apply_each_request_once() {
    let redis = TestRedis::start().await;
    let mut settings = redis.settings("t");
    settings.http.listen = "127.0.0.1:0".to_string();
    settings.partitions = 8;
    let a = Daemon::start(settings.clone()).await;
    let b = Daemon::start(settings.clone()).await;
    let apis = [
        Http::of(a.ready.http.unwrap()),
        Http::of(b.ready.http.unwrap()),
    ];
    // Both hold partitions (the second takes its share) before the traffic starts.
    for _ in 0..100 {
        let (_, d) = apis[0].get("/v1/daemons", None).await;
        let held: Vec<u64> = d["result"]["daemons"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .map(|d| d["partitionsHeld"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        if held.len() == 2 && held.iter().all(|n| *n > 0) && held.iter().sum::<u64>() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Requests alternate between the daemons; each order is read back from the other one.
    let n = 12;
    for i in 0..n {
        let id = format!("o-lb-{i}");
        let body = monthly(&id, "OFFLINE", 3, "10.00");
        let key = format!("lb-create-{i}");
        let (status, created) = apis[i % 2]
            .post("/v1/orders", None, Some(&key), &body)
            .await;
        assert_eq!(status, 201, "{created}");
        // The client retries on the other daemon (a timeout it thought it saw): the first reply.
        let (status, again) = apis[(i + 1) % 2]
            .post("/v1/orders", None, Some(&key), &body)
            .await;
        assert_eq!((status, &again), (201, &created));
        let (status, got) = apis[(i + 1) % 2]
            .get(&format!("/v1/orders/{id}"), None)
            .await;
        assert_eq!(status, 200, "{got}");
        let pay = json!({"orderId": id, "paymentId": "p", "amount": "10.00"});
        let key = format!("lb-pay-{i}");
        let (s1, r1) = apis[0]
            .post("/v1/commands/recordPayment", None, Some(&key), &pay)
            .await;
        let (s2, r2) = apis[1]
            .post("/v1/commands/recordPayment", None, Some(&key), &pay)
            .await;
        assert_eq!((s1, &r1), (s2, &r2), "one reply whichever daemon took it");
    }
    let events = stream_events(&redis, "t").await;
    for i in 0..n {
        let id = format!("o-lb-{i}");
        let created = events
            .iter()
            .filter(|e| e["entityId"] == id.as_str() && e["type"] == "orderCreated")
            .count();
        assert_eq!(created, 1, "{id} created once");
    }
    // The customer's figures follow (the stats side settles shortly after each reply).
    let mut stats = Value::Null;
    for _ in 0..50 {
        stats = apis[1].get("/v1/customers/c1/stats", None).await.1;
        if stats["result"]["ordersCount"] == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["result"]["ordersCount"], n, "{stats}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let h = Harness::start_with(with_tokens).await;
    let api = http_of(&h);
    // No token needed: it is documentation.
    let (status, doc) = api.get("/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for name in recur::admin::COMMAND_NAMES {
        assert!(
            doc["paths"][format!("/v1/commands/{name}")]["post"].is_object(),
            "{name}"
        );
    }
    let file = h.redis.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json\n\
             try:\n    from openapi_spec_validator import validate\n\
             except ImportError:\n    sys.exit(3)\n\
             validate(json.load(open(sys.argv[1])))\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    match check.status.code() {
        Some(0) => assert!(String::from_utf8_lossy(&check.stdout).contains("valid")),
        Some(3) => eprintln!(
            "SKIPPED the OpenAPI validation: the python package openapi-spec-validator is not \
             installed (.ci/run installs it: pip install openapi-spec-validator)"
        ),
        _ => panic!(
            "the OpenAPI document is not valid: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ),
    }
}
