//! How recur gets into a Redis that production runs (SPEC 11.1): an ACL user and password (from
//! the URL, or `redis.username` / `redis.password`, which win), TLS for `rediss://` URLs (a CA
//! of its own or the bundled Mozilla roots, a client certificate, or no verification at all),
//! and a clear, masked [`ConnectError`] when any of it fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    RedisError, TlsCertificates,
};

use crate::telemetry::mask_secrets;

/// Credentials and TLS settings for every connection to one Redis (server or cluster).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAccess {
    /// The ACL user; `None` = the URL's, else Redis's `default`.
    pub username: Option<String>,
    /// The password; `None` = the URL's, if any.
    pub password: Option<String>,
    /// TLS settings for `rediss://` URLs.
    pub tls: TlsOptions,
}

impl fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAccess")
            .field("username", &self.username)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::telemetry::MASK),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[redis.tls]`, as files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificate(s) the server's certificate must chain to; `None` = the
    /// bundled Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain), for servers with `tls-auth-clients yes`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// Skip verifying the server's certificate and name (tests, never production).
    pub insecure: bool,
}

impl TlsOptions {
    /// Whether any TLS setting is made (they need `rediss://` URLs).
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.insecure
    }
}

impl RedisAccess {
    /// The redis crate's connection details for `url`: the URL's, with `username` and
    /// `password` put over them and, for a `rediss://` URL with `tls.insecure`, no verification.
    ///
    /// # Errors
    /// The redis crate's error when `url` is not a Redis URL.
    pub fn connection_info(&self, url: &str) -> redis::RedisResult<ConnectionInfo> {
        let mut info = url.into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        info = info.set_redis_settings(redis);
        if self.tls.insecure {
            if let ConnectionAddr::TcpTls {
                host,
                port,
                tls_params,
                ..
            } = info.addr().clone()
            {
                info = info.set_addr(ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: true,
                    tls_params,
                });
            }
        }
        Ok(info)
    }

    /// The CA and client certificate read from their files, for the redis crate; `None` when
    /// neither is configured (the bundled roots, no client certificate).
    ///
    /// # Errors
    /// A [`Problem::Config`] naming the setting and the file that cannot be read, or that holds
    /// no PEM certificate.
    pub fn certificates(&self) -> Result<Option<TlsCertificates>, Problem> {
        let tls = &self.tls;
        let root_cert = match &tls.ca_file {
            Some(path) => Some(read_pem(path, "redis.tls.ca_file", "CERTIFICATE")?),
            None => None,
        };
        let client_tls = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_pem(cert, "redis.tls.cert_file", "CERTIFICATE")?,
                client_key: read_pem(key, "redis.tls.key_file", "PRIVATE KEY")?,
            }),
            (None, None) => None,
            _ => {
                return Err(Problem::Config(
                    "redis.tls.cert_file and redis.tls.key_file go together".to_string(),
                ))
            }
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }

    /// A client for one server's URL, with the credentials and certificates.
    ///
    /// # Errors
    /// [`Problem::Config`] for an unreadable certificate file or an invalid URL.
    pub fn client(&self, url: &str) -> Result<redis::Client, Problem> {
        let info = self.connection_info(url).map_err(|e| {
            Problem::Config(format!("not a Redis URL: {}", one_line(&e.to_string())))
        })?;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        match self.certificates()? {
            Some(certificates) if tls => redis::Client::build_with_tls(info, certificates)
                .map_err(|e| Problem::Config(format!("redis.tls: {}", one_line(&e.to_string())))),
            _ => redis::Client::open(info).map_err(|e| Problem::Config(one_line(&e.to_string()))),
        }
    }

    /// Connects once to `url` (no retry) and PINGs: what start-up does before anything else, so
    /// that a wrong certificate, password or address stops it with one clear line instead of
    /// a retry loop.
    ///
    /// # Errors
    /// A [`ConnectError`] naming the server (masked) and what failed.
    pub async fn check(&self, url: &str, timeout: Duration) -> Result<(), ConnectError> {
        let fail = |problem| ConnectError::new(url, problem);
        let client = self.client(url).map_err(fail)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let attempt = async {
            let mut conn: MultiplexedConnection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await
        };
        // The timeouts above bound each step; this bounds the lot (TLS handshake included).
        match tokio::time::timeout(timeout * 2, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(self.classify(url, &e))),
            Err(_) => Err(fail(self.classify(
                url,
                &RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", timeout * 2),
                )),
            ))),
        }
    }

    /// What a failed connection attempt to `url` means, in words an operator acts on.
    pub fn classify(&self, url: &str, e: &RedisError) -> Problem {
        let text = one_line(&error_text(e));
        let lower = text.to_ascii_lowercase();
        let info = self.connection_info(url).ok();
        let user = info
            .as_ref()
            .and_then(|i| i.redis_settings().username())
            .unwrap_or("default");
        let tls = info
            .as_ref()
            .is_some_and(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }));
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || e.code() == Some("WRONGPASS")
            || lower.contains("wrongpass")
        {
            return Problem::Auth(format!(
                "WRONGPASS: the password (or the user `{user}`) was refused; check \
                 redis.username / redis.password (RECUR_REDIS__PASSWORD) or the URL's"
            ));
        }
        if e.code() == Some("NOAUTH") || lower.contains("noauth") {
            return Problem::Auth(
                "NOAUTH: the server requires a password; set redis.password \
                 (RECUR_REDIS__PASSWORD) or put it in the URL"
                    .to_string(),
            );
        }
        if e.code() == Some("NOPERM") || lower.contains("noperm") {
            return Problem::Auth(format!(
                "NOPERM: the user `{user}` may not run the commands recur needs: {text}"
            ));
        }
        if lower.contains("invalid peer certificate")
            || lower.contains("certificate")
                && (lower.contains("unknownissuer") || lower.contains("not valid for name"))
        {
            let hint = if self.tls.ca_file.is_some() {
                "is redis.tls.ca_file the CA that signed it, and does the host name or IP \
                 in the URL match the certificate?"
            } else {
                "it does not chain to the bundled Mozilla roots: set redis.tls.ca_file to \
                 the CA that signed it; the host name or IP in the URL must match it"
            };
            return Problem::Certificate(format!("{text}; {hint}"));
        }
        if lower.contains("alert")
            || lower.contains("handshake")
            || lower.contains("tls")
            || lower.contains("corrupt message")
        {
            let hint = if lower.contains("certificaterequired")
                || lower.contains("certificate required")
            {
                "the server requires a client certificate: set redis.tls.cert_file and \
                 redis.tls.key_file"
            } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
                "the server does not speak TLS on this port: use redis:// or its TLS port"
            } else {
                "check redis.tls.* and the server's tls-* settings"
            };
            return Problem::Handshake(format!("{text}; {hint}"));
        }
        if e.is_connection_refusal() || e.is_timeout() || e.is_io_error() {
            let timed_out = e.is_timeout() || lower.contains("timed out");
            let closed = lower.contains("reset by peer")
                || lower.contains("broken pipe")
                || lower.contains("closed")
                || lower.contains("eof");
            return Problem::Unreachable(if tls && timed_out {
                // A TLS client waits for a ServerHello that a plain server never sends.
                format!("{text}; is this the server's TLS port (tls-port)?")
            } else if !tls && closed {
                format!("{text}; does the server want TLS on this port (use rediss://)?")
            } else {
                text
            });
        }
        Problem::Other(text)
    }
}

/// What went wrong getting into Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The settings or files are wrong before anything is sent.
    Config(String),
    /// The server's TLS certificate was not accepted.
    Certificate(String),
    /// The TLS handshake failed otherwise (client certificate required or refused, not TLS).
    Handshake(String),
    /// NOAUTH, WRONGPASS, NOPERM.
    Auth(String),
    /// No connection: refused, timed out, closed.
    Unreachable(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, detail) = match self {
            Problem::Config(d) => ("configuration", d),
            Problem::Certificate(d) => ("TLS certificate refused", d),
            Problem::Handshake(d) => ("TLS handshake failed", d),
            Problem::Auth(d) => ("authentication failed", d),
            Problem::Unreachable(d) => ("unreachable", d),
            Problem::Other(d) => ("error", d),
        };
        write!(f, "{what}: {detail}")
    }
}

/// Start-up could not get into Redis: which server (its URL masked) and what failed, on one
/// line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to Redis at {server}: {problem}")]
pub struct ConnectError {
    /// The server's URL with its password masked.
    pub server: String,
    /// What failed.
    pub problem: Problem,
}

impl ConnectError {
    /// The error for `url` (masked here).
    pub fn new(url: &str, problem: Problem) -> ConnectError {
        ConnectError {
            server: mask_secrets(url).into_owned(),
            problem,
        }
    }
}

/// A redis error's message with its sources (the TLS library's reason is in a source), masked.
fn error_text(e: &RedisError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    mask_secrets(&text).into_owned()
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The file's bytes, which must hold a PEM block of `label` (`CERTIFICATE`, or any `... PRIVATE
/// KEY`).
fn read_pem(path: &Path, setting: &str, label: &str) -> Result<Vec<u8>, Problem> {
    let bytes = std::fs::read(path)
        .map_err(|e| Problem::Config(format!("cannot read {setting} `{}`: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let holds = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(label));
    if !holds {
        return Err(Problem::Config(format!(
            "{setting} `{}` holds no PEM {label}",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_win_over_the_url() {
        let access = RedisAccess {
            username: Some("app".into()),
            password: Some("from-settings".into()),
            ..RedisAccess::default()
        };
        let info = access
            .connection_info("redis://url-user:from-url@127.0.0.1:7000/2")
            .unwrap();
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("from-settings"));
        assert_eq!(info.redis_settings().db(), 2);
        let url_only = RedisAccess::default()
            .connection_info("redis://url-user:from-url@127.0.0.1:7000")
            .unwrap();
        assert_eq!(url_only.redis_settings().username(), Some("url-user"));
        assert_eq!(url_only.redis_settings().password(), Some("from-url"));
        // A password alone keeps the URL's user.
        let password_only = RedisAccess {
            password: Some("p".into()),
            ..RedisAccess::default()
        };
        let info = password_only
            .connection_info("redis://url-user@127.0.0.1:7000")
            .unwrap();
        assert_eq!(info.redis_settings().username(), Some("url-user"));
        assert_eq!(info.redis_settings().password(), Some("p"));
    }

    #[test]
    fn insecure_turns_off_verification_of_rediss_urls_only() {
        let access = RedisAccess {
            tls: TlsOptions {
                insecure: true,
                ..TlsOptions::default()
            },
            ..RedisAccess::default()
        };
        let info = access.connection_info("rediss://h:6380").unwrap();
        assert!(matches!(
            info.addr(),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        let info = RedisAccess::default()
            .connection_info("rediss://h:6380")
            .unwrap();
        assert!(matches!(
            info.addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
        let plain = access.connection_info("redis://h:6379").unwrap();
        assert!(matches!(plain.addr(), ConnectionAddr::Tcp(..)));
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let access = RedisAccess {
            password: Some("s3cret".into()),
            ..RedisAccess::default()
        };
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn certificate_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RedisAccess {
            tls: TlsOptions {
                ca_file: Some(dir.path().join("nope.pem")),
                ..TlsOptions::default()
            },
            ..RedisAccess::default()
        };
        let problem = missing.certificates().unwrap_err();
        assert!(
            problem
                .to_string()
                .contains("cannot read redis.tls.ca_file"),
            "{problem}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let not_pem = RedisAccess {
            tls: TlsOptions {
                ca_file: Some(junk),
                ..TlsOptions::default()
            },
            ..RedisAccess::default()
        };
        let problem = not_pem.certificates().unwrap_err();
        assert!(problem.to_string().contains("holds no PEM"), "{problem}");
        assert!(RedisAccess::default().certificates().unwrap().is_none());
    }

    #[test]
    fn connect_errors_mask_the_url_and_fit_on_one_line() {
        let e = ConnectError::new(
            "rediss://app:s3cret@10.0.0.1:6380",
            Problem::Auth("WRONGPASS".into()),
        );
        let line = e.to_string();
        assert_eq!(
            line,
            "cannot connect to Redis at rediss://app:***@10.0.0.1:6380: authentication \
             failed: WRONGPASS"
        );
        let auth = RedisAccess::default().classify(
            "redis://h:1",
            &RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "Password authentication failed",
            )),
        );
        assert!(matches!(auth, Problem::Auth(_)), "{auth:?}");
        let refused = RedisAccess::default().classify(
            "redis://h:1",
            &RedisError::from(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            )),
        );
        assert!(matches!(refused, Problem::Unreachable(_)), "{refused:?}");
    }
}
