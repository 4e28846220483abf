//! Who is calling the HTTP API (SPEC 11.3): bearer tokens stored as their SHA-256 and compared
//! in constant time, each with a channel and a scope; or, with no token configured and a
//! loopback listener, everyone on the host as channel `http` with scope admin. Also which
//! scope each command needs.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Scope, TokenSettings};

/// The channel of requests made without tokens (loopback only).
pub const LOOPBACK_CHANNEL: &str = "http";

/// Who made a request: what `/v1/whoami` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`None` without tokens).
    pub name: Option<String>,
    /// The application the request comes from (the status manager's channel).
    pub channel: String,
    /// What it may do.
    pub scope: Scope,
}

/// Why a request is not authenticated (401 UNAUTHENTICATED). The messages never repeat what
/// was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an Authorization: Bearer <token> header is required")]
    Missing,
    #[error("the Authorization header is not of the form Bearer <token>")]
    Malformed,
    #[error("the bearer token is not known")]
    Unknown,
}

/// One configured token: the digest to compare with, and what its bearer is.
struct Token {
    digest: [u8; 32],
    caller: Caller,
}

/// How the API decides who calls it.
pub enum Access {
    /// No token configured, a loopback listener: every caller is channel `http`, scope admin.
    Loopback,
    /// `[[http.tokens]]`: a bearer token is required.
    Tokens(Vec<TokenEntry>),
}

/// A configured token, ready to compare (built by [`Access::tokens`]).
pub struct TokenEntry(Token);

impl Access {
    /// The configured tokens (their digests were checked when the settings loaded; one that
    /// does not decode matches nothing).
    pub fn tokens(settings: &[TokenSettings]) -> Access {
        let entries = settings
            .iter()
            .map(|t| {
                TokenEntry(Token {
                    digest: decode_digest(&t.sha256).unwrap_or([0; 32]),
                    caller: Caller {
                        name: Some(t.name.clone()),
                        channel: t.channel.clone(),
                        scope: t.scope,
                    },
                })
            })
            .collect();
        Access::Tokens(entries)
    }

    /// The caller of a request with these headers.
    ///
    /// # Errors
    /// [`AuthError`] when a token is required and missing, malformed or unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let tokens = match self {
            Access::Loopback => {
                return Ok(Caller {
                    name: None,
                    channel: LOOPBACK_CHANNEL.to_string(),
                    scope: Scope::Admin,
                })
            }
            Access::Tokens(tokens) => tokens,
        };
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        if values.next().is_some() {
            return Err(AuthError::Malformed);
        }
        let token = bearer_token(value.as_bytes()).ok_or(AuthError::Malformed)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        // Every configured digest is compared, each in constant time, whichever matches.
        let mut found = None;
        for TokenEntry(t) in tokens {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(&t.caller);
            }
        }
        found.cloned().ok_or(AuthError::Unknown)
    }
}

/// The token of `Bearer <token>` (the scheme in any case, one space or more): printable ASCII
/// without spaces, at most 4 KiB.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    let printable = token.iter().all(|b| b.is_ascii_graphic());
    (!token.is_empty() && token.len() <= 4096 && printable).then_some(token)
}

fn decode_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The scope a command needs (SPEC 11.3): reads need `read`; the order and customer
/// commands `write`; the clock and webhook dead letters `admin`. A name recur does not know
/// needs `read` (it is answered UNKNOWN_COMMAND).
pub fn required_scope(command: &str) -> Scope {
    match command {
        "ping"
        | "getClock"
        | "getMetrics"
        | "getOrder"
        | "listOrders"
        | "getCustomerStats"
        | "previewOrder"
        | "forecast"
        | "getWebhookEndpoints" => Scope::Read,
        // SPEC 11.3: admin is "clocks, test clocks, retryDeadWebhooks".
        "advanceClock" | "retryDeadWebhooks" | "createTestClock" | "getTestClock"
        | "listTestClocks" | "advanceTestClock" | "deleteTestClock" => Scope::Admin,
        known if crate::wire::COMMAND_NAMES.contains(&known) => Scope::Write,
        _ => Scope::Read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token(name: &str, secret: &str, scope: Scope) -> TokenSettings {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        TokenSettings {
            name: name.into(),
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            channel: format!("{name}-app"),
            scope,
        }
    }

    fn headers(auth: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(a).expect("a header value"),
            );
        }
        h
    }

    #[test]
    fn tokens_are_known_by_their_digest() {
        let access = Access::tokens(&[
            token("reader", "r-secret", Scope::Read),
            token("writer", "w-secret", Scope::Write),
        ]);
        let who = access
            .authenticate(&headers(&[b"Bearer w-secret"]))
            .expect("known");
        assert_eq!(who.name.as_deref(), Some("writer"));
        assert_eq!(
            (who.channel.as_str(), who.scope),
            ("writer-app", Scope::Write)
        );
        assert!(access
            .authenticate(&headers(&[b"bearer   r-secret  "]))
            .is_ok());
        for (sent, why) in [
            (&[][..], AuthError::Missing),
            (&[&b"Bearer nope"[..]][..], AuthError::Unknown),
            (&[&b"Basic dzpzZWNyZXQ="[..]][..], AuthError::Malformed),
            (&[&b"Bearer"[..]][..], AuthError::Malformed),
            (&[&b"Bearer "[..]][..], AuthError::Malformed),
            (&[&b"Bearerw-secret"[..]][..], AuthError::Malformed),
            (&[&b"Bearer w-secret extra"[..]][..], AuthError::Malformed),
            (&[&b"Bearer \xffw"[..]][..], AuthError::Malformed),
            (
                &[&b"Bearer w-secret"[..], &b"Bearer r-secret"[..]][..],
                AuthError::Malformed,
            ),
        ] {
            assert_eq!(access.authenticate(&headers(sent)), Err(why), "{sent:?}");
        }
    }

    #[test]
    fn without_tokens_everyone_on_loopback_is_http_with_admin() {
        let who = Access::Loopback
            .authenticate(&HeaderMap::new())
            .expect("no token needed");
        assert_eq!(
            (who.name, who.channel.as_str(), who.scope),
            (None, "http", Scope::Admin)
        );
    }

    #[test]
    fn every_command_has_a_scope_and_scopes_nest() {
        assert_eq!(required_scope("getOrder"), Scope::Read);
        assert_eq!(required_scope("createOrder"), Scope::Write);
        assert_eq!(required_scope("recomputeCustomerStats"), Scope::Write);
        assert_eq!(required_scope("advanceClock"), Scope::Admin);
        assert_eq!(required_scope("retryDeadWebhooks"), Scope::Admin);
        assert_eq!(required_scope("noSuchCommand"), Scope::Read);
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
        let reads = crate::wire::COMMAND_NAMES
            .iter()
            .filter(|c| required_scope(c) == Scope::Read)
            .count();
        assert_eq!(reads, 9, "ping, getClock, getMetrics, getOrder, listOrders, getCustomerStats, previewOrder, forecast, getWebhookEndpoints");
    }
}
