//! The console in a real headless Chromium (Debian's chromium and chromium-driver), driven over
//! WebDriver: sign in, find an order, read its timeline, change its plan through the preview,
//! pause and resume, advance a test clock, retry dead webhooks, see a 403 with a read token; no
//! script error in the page. Screenshots of every view at 1280 and 390 px are taken (written to
//! `$CONSOLE_SCREENSHOTS` when set, which is how docs/console/ is made).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use recur::config::{EndpointSettings, Scope, TokenSettings};

use crate::support::*;

const READER: &str = "console-reader-secret";
const OPS: &str = "console-ops-secret";

fn token(name: &str, secret: &str, scope: Scope) -> TokenSettings {
    TokenSettings {
        name: name.to_string(),
        sha256: format!("{:x}", Sha256::digest(secret.as_bytes())),
        channel: "console".to_string(),
        scope,
    }
}

/// chromedriver on a free port (killed on drop), or None when the machine has no Chromium.
struct Driver {
    _child: tokio::process::Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Option<Driver> {
        let chromedriver = which("chromedriver")?;
        which("chromium")?;
        let port = free_port();
        let child = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Driver {
                    _child: child,
                    port,
                    _profile: tempfile::tempdir().ok()?,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": which("chromium").unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

/// A test that fails leaves its browser behind (chromedriver is killed, Chromium is not its
/// child any more): everything started on this test's own profile directory is stopped.
impl Drop for Driver {
    fn drop(&mut self) {
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let _ = std::process::Command::new("pkill")
            .args(["-f", &profile])
            .status();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn testid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

/// Waits for an element (the page renders after its API calls).
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(el) => el,
        Err(e) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let body = c.find(Locator::Css("body")).await.ok();
            let text = match body {
                Some(b) => b.text().await.unwrap_or_default(),
                None => String::new(),
            };
            let errors = script_errors(c).await;
            panic!("{css}: {e}\nat {url}\npage: {text}\nscript errors: {errors:?}")
        }
    }
}

/// The text of `css`, once it is there (read again if the view re-rendered meanwhile).
async fn text_of(c: &Client, css: &str) -> String {
    for _ in 0..50 {
        if let Ok(t) = find(c, css).await.text().await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: its text could not be read");
}

/// Waits until `css`'s text satisfies `f`.
async fn wait_text(c: &Client, css: &str, f: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if f(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: text never matched (last: {last:?})");
}

/// Clicks `css` once it is there, finding it again if the view re-rendered under the click.
async fn click(c: &Client, css: &str) {
    for _ in 0..50 {
        if let Ok(()) = find(c, css).await.click().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: could not be clicked");
}

/// Types `text` into `css` once it is there (again, if the view re-rendered meanwhile).
async fn type_into(c: &Client, css: &str, text: &str) {
    for _ in 0..50 {
        if let Ok(()) = find(c, css).await.send_keys(text).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: could not type into it");
}

/// Waits until the page's URL contains `part` (a route has been taken).
async fn wait_url(c: &Client, part: &str) {
    for _ in 0..200 {
        if c.current_url()
            .await
            .is_ok_and(|u| u.as_str().contains(part))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the URL never contained {part}");
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.map_or(0, |v| v.len())
}

/// The error box's text, once visible.
async fn error_text(c: &Client) -> String {
    wait_text(c, &testid("error"), |t| !t.is_empty()).await
}

async fn script_errors(c: &Client) -> Vec<Value> {
    c.execute("return window.__recurErrors || [];", vec![])
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Screenshots of the current view at both widths.
async fn shoot(c: &Client, dir: &Path, name: &str) {
    for (width, height) in [(1280u32, 900u32), (390, 844)] {
        c.set_window_size(width, height).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
    }
    c.set_window_size(1280, 900).await.unwrap();
}

async fn goto(c: &Client, base: &str, hash: &str) {
    c.goto(&format!("{base}/console#{hash}")).await.unwrap();
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        // .ci/run installs chromium and chromium-driver; a machine without them says so.
        eprintln!(
            "SKIPPED: no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium (see .ci/run)"
        );
        return;
    };
    let h = Harness::start_with(|s| {
        s.http.listen = "127.0.0.1:0".to_string();
        s.http.tokens = vec![
            token("reader", READER, Scope::Read),
            token("ops", OPS, Scope::Admin),
        ];
        // An endpoint that never answers: its deliveries go dead, to retry from the console.
        s.webhooks.endpoints = vec![serde_json::from_value::<EndpointSettings>(json!({
            "id": "billing",
            "url": "http://127.0.0.1:9/hook",
            "secret": "whsec_console",
            "events": ["*"],
        }))
        .unwrap()];
        s.webhooks.retry_initial = Duration::from_millis(20);
        s.webhooks.retry_max = Duration::from_millis(50);
        s.webhooks.max_age = Duration::from_millis(300);
    })
    .await;
    let base = format!("http://{}", h.daemon.as_ref().unwrap().ready.http.unwrap());
    h.ok("createOrder", monthly("ord-1", "ONLINE", 12, "30.00"))
        .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "ord-1", "paymentId": "p1", "amount": "30.00"}),
    )
    .await;
    h.advance("2026-01-16T00:00:00Z").await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "qa-clock", "name": "QA", "frozenTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let shots = match std::env::var_os("CONSOLE_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => tempfile::tempdir().unwrap().keep(),
    };
    std::fs::create_dir_all(&shots).unwrap();

    let c = driver.browser().await;
    // Sign-in: a wrong token is refused on the page, the admin token gets in.
    goto(&c, &base, "/overview").await;
    type_into(&c, &testid("token-input"), "not-a-token").await;
    click(&c, &testid("sign-in")).await;
    let refused = wait_text(&c, &testid("sign-in-error"), |t| !t.is_empty()).await;
    assert!(refused.contains("UNAUTHENTICATED"), "{refused}");
    shoot(&c, &shots, "sign-in").await;
    let input = find(&c, &testid("token-input")).await;
    input.clear().await.unwrap();
    input.send_keys(OPS).await.unwrap();
    click(&c, &testid("sign-in")).await;

    // Overview: daemons, timers due, timer lag.
    find(&c, &testid("daemon-row")).await;
    assert_eq!(count(&c, &testid("daemon-row")).await, 1);
    text_of(&c, &testid("timers-due")).await;
    assert!(text_of(&c, &testid("timer-lag")).await.ends_with('s'));
    shoot(&c, &shots, "overview").await;

    // Orders: search by id, open it.
    goto(&c, &base, "/orders").await;
    type_into(&c, &testid("order-search"), "ord-1").await;
    click(&c, "form.row button[type=submit]").await;
    wait_url(&c, "q=ord-1").await;
    wait_text(&c, &testid("order-row"), |t| t.contains("ord-1")).await;
    shoot(&c, &shots, "orders").await;
    click(&c, &format!("{} a", testid("order-row"))).await;
    wait_url(&c, "#/orders/ord-1").await;
    find(&c, &testid("timeline")).await;
    assert_eq!(text_of(&c, &testid("order-status")).await, "ACTIVE");
    assert!(text_of(&c, &testid("order-cycle")).await.starts_with('1'));
    find(&c, &testid("timeline-item")).await;
    let items = count(&c, &testid("timeline-item")).await;
    let events: usize = h
        .events()
        .await
        .iter()
        .filter(|e| e["entityId"] == "ord-1")
        .count();
    assert_eq!(items, events, "one item per event");
    let first = text_of(&c, &format!("{} li", testid("timeline"))).await;
    assert!(
        first.contains("orderStarted")
            || first.contains("orderCycleStarted")
            || first.contains("orderUpdated"),
        "newest first: {first}"
    );
    let page = text_of(&c, "main").await;
    assert!(
        !page.contains("null") && !page.contains("undefined"),
        "{page}"
    );
    shoot(&c, &shots, "order").await;

    // Change the plan through its preview.
    type_into(&c, "input[placeholder='new plan id']", "small").await;
    type_into(&c, "input[placeholder='plan name']", "Small").await;
    type_into(&c, "input[placeholder^='price']", "10.00").await;
    click(&c, &testid("action-change-plan")).await;
    let preview = text_of(&c, &testid("change-plan-preview")).await;
    assert!(preview.contains("net -"), "a credit previewed: {preview}");
    let before = h.ok("getOrder", json!({"orderId": "ord-1"})).await;
    assert_eq!(
        before["plan"]["id"], "monthly",
        "the preview applied nothing"
    );
    shoot(&c, &shots, "change-plan-preview").await;
    click(&c, &testid("change-plan-apply")).await;
    wait_text(&c, &testid("timeline"), |t| t.contains("orderPlanChanged")).await;
    assert_eq!(
        h.ok("getOrder", json!({"orderId": "ord-1"})).await["plan"]["id"],
        "small"
    );

    // Pause, then resume.
    click(&c, &testid("action-pause")).await;
    wait_text(&c, &testid("order-status"), |t| t == "PAUSED").await;
    click(&c, &testid("action-resume")).await;
    wait_text(&c, &testid("order-status"), |t| t == "ACTIVE").await;

    // Record a payment with a bad amount: the API's refusal is shown.
    type_into(&c, "input[placeholder^='amount']", "ten").await;
    click(&c, &testid("action-record-payment")).await;
    assert!(error_text(&c).await.contains("INVALID_REQUEST"));

    // Test clocks: advance one with the date picker.
    goto(&c, &base, "/clocks").await;
    wait_text(&c, &testid("test-clock-row"), |t| t.contains("qa-clock")).await;
    shoot(&c, &shots, "clocks").await;
    find(&c, &testid("test-clock-advance-input")).await;
    c.execute(
        "const i = document.querySelector('[data-testid=\"test-clock-advance-input\"]'); \
         i.value = '2026-03-01'; i.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await
    .unwrap();
    click(&c, &testid("test-clock-advance")).await;
    wait_text(&c, &testid("test-clock-row"), |t| t.contains("2026-03-01")).await;
    let clock = h
        .ok("getTestClock", json!({"testClockId": "qa-clock"}))
        .await;
    assert_eq!(clock["frozenTime"], "2026-03-01T00:00:00.000Z");

    // Webhooks: the dead letters of the endpoint that never answers, retried.
    let mut dead = 0;
    for _ in 0..300 {
        let w = h.ok("getWebhookEndpoints", json!({})).await;
        dead = w["endpoints"][0]["dead"].as_u64().unwrap_or(0);
        if dead > 0 && w["endpoints"][0]["pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dead > 0, "dead letters to retry");
    goto(&c, &base, "/webhooks").await;
    wait_text(&c, &testid("webhook-endpoint-row"), |t| {
        t.contains("billing")
    })
    .await;
    shoot(&c, &shots, "webhooks").await;
    click(&c, &testid("retry-dead")).await;
    wait_text(&c, &testid("webhook-endpoint-row"), |t| !t.is_empty()).await;

    // Customers.
    goto(&c, &base, "/customers/c1").await;
    find(&c, &testid("order-row")).await;
    shoot(&c, &shots, "customer").await;

    assert_eq!(
        script_errors(&c).await,
        Vec::<Value>::new(),
        "no script error"
    );

    // A read token: no actions offered, and an admin view answers 403.
    c.execute("sessionStorage.clear();", vec![]).await.unwrap();
    goto(&c, &base, "/orders/ord-1").await;
    c.refresh().await.unwrap();
    let input = find(&c, &testid("token-input")).await;
    input.send_keys(READER).await.unwrap();
    click(&c, &testid("sign-in")).await;
    find(&c, &testid("timeline")).await;
    assert_eq!(
        count(&c, &testid("action-pause")).await,
        0,
        "nothing a read token cannot do"
    );
    assert_eq!(count(&c, &testid("action-change-plan")).await, 0);
    goto(&c, &base, "/clocks").await;
    assert!(error_text(&c).await.contains("FORBIDDEN"), "a 403 is shown");
    shoot(&c, &shots, "read-token-403").await;
    assert_eq!(
        script_errors(&c).await,
        Vec::<Value>::new(),
        "no script error"
    );
    c.close().await.unwrap();
}
