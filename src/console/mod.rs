//! The operator console (SPEC 11.7): a page over the `/v1` API, its assets compiled into the
//! binary (nothing is loaded from another host). `GET /console` serves the page; the page signs
//! in with an API token (kept in the tab's sessionStorage) and calls only `/v1`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The page may load and call only its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `/console` (the page), `/console/app.js`, `/console/style.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset(APP, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_another_host() {
        for text in [INDEX, APP, STYLE] {
            assert!(!text.contains("http://"), "no absolute URL");
            assert!(!text.contains("https://"), "no absolute URL");
            assert!(!text.contains("//cdn"), "no CDN");
        }
    }

    #[test]
    fn every_test_id_of_the_spec_is_on_the_page() {
        let page = format!("{INDEX}{APP}");
        for id in [
            "token-input",
            "sign-in",
            "sign-in-error",
            "daemon-row",
            "timers-due",
            "timer-lag",
            "order-search",
            "status-filter",
            "order-row",
            "order-status",
            "order-cycle",
            "timeline",
            "timeline-item",
            "action-record-payment",
            "action-pause",
            "action-resume",
            "action-cancel",
            "action-change-plan",
            "change-plan-preview",
            "change-plan-apply",
            "error",
            "test-clock-row",
            "test-clock-advance-input",
            "test-clock-advance",
            "webhook-endpoint-row",
            "retry-dead",
        ] {
            let attr = format!("\"{id}\"");
            assert!(page.contains(&attr), "data-testid {id} missing");
        }
    }
}
