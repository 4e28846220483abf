//! tracing setup: human or JSON logs for the daemon, opt-in logs for tests; and the masking of
//! secrets in printed URLs ([`mask_secrets`]), which every log line goes through too.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, IsTerminal, Write};

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written (config `log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, coloured when writing to a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// The levels a log filter may name.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Installs the global tracing subscriber writing to stderr, in colour only when stderr is a
/// terminal and `NO_COLOR` is not set ([`use_colour`]).
///
/// `level` is an `EnvFilter` directive (`info`, `recur=debug,warn`); `RUST_LOG`, when set and
/// valid, wins over it. An invalid `level` falls back to `info` (the settings refuse one, see
/// [`check_level`]). Only the first call in a process installs anything; later calls are
/// ignored.
pub fn init(format: LogFormat, level: &str) {
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_ansi(colour)
        .with_writer(|| MaskedWriter(io::stderr()));
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // try_init fails only when a global subscriber is already set: that is the "second call".
    installed.ok();
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs a subscriber for tests only when `TEST_LOG` is set, so test output stays quiet by
/// default. Uses `RUST_LOG` (default `debug`) and the test harness's captured writer. Safe to
/// call from every test.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    // Another test of this process installed it first.
    installed.ok();
}

/// Whether log lines get colour codes: on a terminal only (never in a file, a pipe or
/// journald), and not when `NO_COLOR` is set to anything but "" (<https://no-color.org>).
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Checks a log filter: comma-separated directives, each a level (`info`) or a target, span or
/// field filter with one (`recur=debug`, `recur::store=trace`). `EnvFilter` itself would take
/// `verbose` or `warning` as the name of a target and log nothing else at all.
///
/// # Errors
/// What is wrong, naming the directive (and the nearest level for a misspelt one).
pub fn check_level(filter: &str) -> Result<(), String> {
    let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()));
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!(
            "is empty: use a level ({}) or a filter such as recur=debug,warn",
            LEVELS.join(", ")
        ));
    }
    for directive in directives {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !is_level(level) {
            let hint = LEVELS
                .iter()
                .find(|l| {
                    let level = level.to_ascii_lowercase();
                    level.starts_with(*l) || (l.starts_with(level.as_str()) && level.len() > 1)
                })
                .map(|l| format!("; did you mean `{l}`?"))
                .unwrap_or_default();
            return Err(format!(
                "`{directive}` is neither a level ({}) nor a filter directive with one such as \
                 recur=debug{hint}",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("`{filter}` is not a tracing filter: {e}"))
}

/// Checks `RUST_LOG`, which wins over `log.level` when set: a misspelt one would log nothing.
///
/// # Errors
/// What is wrong with it.
pub fn check_rust_log() -> Result<(), String> {
    match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            check_level(&value).map_err(|message| format!("RUST_LOG: {message}"))
        }
        _ => Ok(()),
    }
}

/// What a masked password or secret is printed as.
pub const MASK: &str = "***";

/// `text` with the password of every URL in it masked: `redis://user:pass@host:6379` becomes
/// `redis://user:***@host:6379` (and `rediss://:pass@host`, `https://user:pass@host/path`
/// likewise), and the value of a `pass=` or `password=` query parameter (unix socket URLs
/// carry their credentials so) becomes `***`. Anything else is left as it is. Every place that
/// prints a Redis or webhook URL prints it through this, and so does every log line (a safety
/// net for a URL inside an error message of a library).
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut copied = 0;
    while let Some(found) = text[copied..].find("://") {
        let start = copied + found + "://".len();
        out.push_str(&text[copied..start]);
        // The URL runs to whitespace or a quote, or to the next URL of a list
        // (`redis://a@h1,redis://b@h2`).
        let mut end = text[start..]
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .map_or(text.len(), |e| start + e);
        if let Some(next) = text[start..end].find("://") {
            let next = start + next;
            let scheme = text[start..next]
                .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || "+.-".contains(c));
            end = start + scheme.len();
        }
        let url = &text[start..end];
        let mut authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        // A password with a raw `/`, `?` or `#` in it: over-masking beats printing it.
        if !url[..authority_end].contains('@') {
            if let Some(at) = url.rfind('@').filter(|&at| url[..at].contains(':')) {
                authority_end = url[at..]
                    .find(['/', '?', '#'])
                    .map_or(url.len(), |e| at + e);
            }
        }
        let authority = &url[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                match authority[..at].split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(&authority[..at]),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        out.push_str(&mask_query(&url[authority_end..]));
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// `pass=` and `password=` values of a URL's query masked.
fn mask_query(path: &str) -> Cow<'_, str> {
    let Some(q) = path.find('?') else {
        return Cow::Borrowed(path);
    };
    let mut out = path[..=q].to_string();
    let (query, fragment) = match path[q + 1..].find('#') {
        Some(h) => (&path[q + 1..q + 1 + h], &path[q + 1 + h..]),
        None => (&path[q + 1..], ""),
    };
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _))
                if ["pass", "password"].contains(&name.to_ascii_lowercase().as_str()) =>
            {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(fragment);
    Cow::Owned(out)
}

/// A log writer that masks the secrets of URLs in what it writes ([`mask_secrets`]). The fmt
/// layer writes each event in one `write_all`, so a URL is never split between two writes.
struct MaskedWriter<W: Write>(W);

impl<W: Write> Write for MaskedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => match mask_secrets(text) {
                Cow::Borrowed(_) => self.0.write_all(buf)?,
                Cow::Owned(masked) => self.0.write_all(masked.as_bytes())?,
            },
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Whether `level` is a valid `EnvFilter` directive, for config validation.
pub fn is_valid_level(level: &str) -> bool {
    EnvFilter::try_new(level).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // `init` itself is not called here: a global subscriber would print every other test's
    // logs. It relies on `try_init`, which refuses a second global subscriber.

    #[test]
    fn invalid_level_falls_back_instead_of_failing() {
        if std::env::var_os("RUST_LOG").is_none() {
            assert_eq!(filter("recur=loud").to_string(), "info");
            assert_eq!(filter("warn").to_string(), "warn");
        }
    }

    #[test]
    fn levels_are_checked() {
        for good in [
            "info",
            "WARN",
            "off",
            "recur=debug,warn",
            "recur::store=trace, info",
            "recur[commit{partition=3}]=debug",
        ] {
            assert_eq!(check_level(good), Ok(()), "{good}");
        }
        for bad in [
            "recur=loud",
            "verbose",
            "warning",
            "",
            " , ",
            "recur",
            "info,recur",
        ] {
            assert!(check_level(bad).is_err(), "{bad:?}");
        }
        let message = check_level("warning").unwrap_err();
        assert!(
            message.contains("`warning` is neither a level"),
            "{message}"
        );
        assert!(message.contains("did you mean `warn`?"), "{message}");
        assert!(
            message.contains("trace, debug, info, warn, error, off"),
            "{message}"
        );
        assert!(!check_level("verbose").unwrap_err().contains("did you mean"));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        let cases = [
            (
                "redis://:s3cret@10.0.0.1:6379/0",
                "redis://:***@10.0.0.1:6379/0",
            ),
            (
                "rediss://app:s3cret@redis.example:6380",
                "rediss://app:***@redis.example:6380",
            ),
            ("redis://app@h:1", "redis://app@h:1"),
            ("redis://h:6379", "redis://h:6379"),
            (
                "cluster rediss://u:p1@a:7000,rediss://u:p2@b:7000",
                "cluster rediss://u:***@a:7000,rediss://u:***@b:7000",
            ),
            (
                "error at redis://u:p@ss:w@h:1/0: refused",
                "error at redis://u:***@h:1/0: refused",
            ),
            ("redis://u:pa/ss@h:1", "redis://u:***@h:1"),
            (
                "redis+unix:///run/r.sock?db=1&pass=s3cret&user=app",
                "redis+unix:///run/r.sock?db=1&pass=***&user=app",
            ),
            (
                r#"{"redis_url":"redis://u:s3cret@h:1","x":1}"#,
                r#"{"redis_url":"redis://u:***@h:1","x":1}"#,
            ),
            (
                "https://hook:tok@example.com/h?a=1",
                "https://hook:***@example.com/h?a=1",
            ),
            ("no url here: a:b@c", "no url here: a:b@c"),
        ];
        for (text, masked) in cases {
            assert_eq!(mask_secrets(text), masked, "{text}");
        }
    }

    #[test]
    fn the_log_writer_masks_what_it_writes() {
        let mut w = MaskedWriter(Vec::new());
        w.write_all(b"recur starting redis_url=redis://:s3cret@127.0.0.1:1\n")
            .unwrap();
        let written = String::from_utf8(w.0).unwrap();
        assert_eq!(
            written,
            "recur starting redis_url=redis://:***@127.0.0.1:1\n"
        );
    }

    #[test]
    fn format_uses_lowercase_names() {
        let format: LogFormat = serde_json::from_str("\"json\"").expect("valid format");
        assert_eq!(format, LogFormat::Json);
        assert_eq!(LogFormat::Human.to_string(), "human");
    }
}
