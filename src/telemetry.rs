//! tracing setup: human or JSON logs for the daemon, opt-in logs for tests.

use std::fmt;

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

/// Installs the global tracing subscriber writing to stderr.
///
/// `level` is an `EnvFilter` directive (`info`, `recur=debug,warn`); `RUST_LOG`, when set and
/// valid, wins over it. An invalid `level` falls back to `info`. Only the first call in a
/// process installs anything; later calls are ignored.
pub fn init(format: LogFormat, level: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr);
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
        assert!(is_valid_level("info"));
        assert!(is_valid_level("recur=debug,warn"));
        assert!(!is_valid_level("recur=loud"));
    }

    #[test]
    fn format_uses_lowercase_names() {
        let format: LogFormat = serde_json::from_str("\"json\"").expect("valid format");
        assert_eq!(format, LogFormat::Json);
        assert_eq!(LogFormat::Human.to_string(), "human");
    }
}
