//! `recur admin`: finds the daemon's Redis, sends one admin command and prints the reply, or
//! (`recur admin watch`) prints every event until Ctrl-C.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use recur::admin::client::{
    watch_streams_to, AdminClient, ClientError, RequestOptions, DEFAULT_ATTEMPT_TIMEOUT_MS,
};
use recur::config::{parse_duration, Settings};
use recur::store::embedded::EmbeddedRedis;
use recur::store::RedisAddress;
use recur::telemetry::mask_secrets;

use super::AdminArgs;

/// The pseudo-command that follows `<prefix>:events` instead of sending a request.
pub const WATCH_COMMAND: &str = "watch";
/// Exit code when the daemon answered with an error reply.
pub const EXIT_REPLY_ERROR: u8 = 1;
/// Exit code when there is no reply: bad arguments, no Redis, transport error or timeout.
pub const EXIT_NO_REPLY: u8 = 2;

/// Runs `recur admin` and says how the process should exit: 0 for an `ok` reply,
/// [`EXIT_REPLY_ERROR`] for an error reply (printed like any reply), [`EXIT_NO_REPLY`] when
/// no reply could be had (the reason goes to stderr).
pub fn run(args: &AdminArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
        .and_then(|runtime| runtime.block_on(run_async(args)));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", mask_secrets(&describe(&error)));
            ExitCode::from(EXIT_NO_REPLY)
        }
    }
}

/// The error and its causes on one line, without the repeats that appear when an error both
/// shows its source and returns it as `source()` (as the redis crate's errors do).
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if line.ends_with(&message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&message);
    }
    line
}

async fn run_async(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.settings.overrides()).context("cannot load settings")?;
    let target = RedisTarget::resolve(&settings)?;
    if target.address.access().tls.insecure {
        eprintln!(
            "warning: redis.tls.insecure = true: the Redis server's TLS certificate is not verified"
        );
    }
    if args.command == WATCH_COMMAND {
        return watch(&target, &settings.prefix, args.from_start).await;
    }

    let request_args = args.request_args()?;
    let total_timeout = parse_duration(&args.timeout)
        .map_err(|message| anyhow::anyhow!("invalid --timeout `{}`: {message}", args.timeout))?;
    let options = RequestOptions {
        id: args.request_id.clone(),
        channel: args.channel.clone(),
        attempt_timeout: Duration::from_millis(DEFAULT_ATTEMPT_TIMEOUT_MS).min(total_timeout),
        total_timeout,
    };
    let client = AdminClient::connect_to(&target.address, &settings.prefix)
        .await
        .map_err(|e| target.connect_error(e))?;
    let reply = match client
        .request_with(options, &args.command, request_args)
        .await
    {
        Ok(reply) => reply,
        Err(error) => {
            let hint = match &error {
                ClientError::Timeout { id, .. } => {
                    format!(" (retrying with --request-id {id} is safe)")
                }
                _ => String::new(),
            };
            let context = format!("cannot get a reply to `{}`{hint}", args.command);
            return Err(anyhow::Error::new(error).context(context));
        }
    };
    print_line(&serde_json::to_string_pretty(&reply)?)?;
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REPLY_ERROR)
    })
}

/// Prints every event of every partition's event stream as one JSON line (with its change's
/// entity) until Ctrl-C (or until stdout is closed, e.g. by `| head`): from now, or from the
/// oldest entry kept with `--from-start`.
async fn watch(target: &RedisTarget, prefix: &str, from_start: bool) -> anyhow::Result<ExitCode> {
    let mut events = watch_streams_to(&target.address, prefix, from_start)
        .await
        .map_err(|e| target.connect_error(e))?;
    eprintln!("watching the event streams {prefix}:{{p*}}:events; Ctrl-C to stop");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            result = &mut ctrl_c => {
                result.context("cannot listen for Ctrl-C")?;
                return Ok(ExitCode::SUCCESS);
            }
            event = events.next() => {
                let event = event.context("cannot read the event streams")?;
                if !print_line(&event.to_string())? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// Writes one line to stdout and flushes it. `Ok(false)` when stdout is closed (`| head`): the
/// reader has what it wanted, which is not an error.
fn print_line(line: &str) -> anyhow::Result<bool> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// The Redis the daemon uses, and where that was learned (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// What to connect to: one server, or a cluster's seed nodes.
    pub address: RedisAddress,
    /// Found in `<data_dir>/redis.url` of a running embedded server, not configured.
    pub embedded: bool,
}

impl RedisTarget {
    /// `--redis-url`, else `redis.url` from the config file or `RECUR_REDIS__URL` (the
    /// settings layers), else the URL of the embedded redis-server that `recur serve` started
    /// under `redis.embedded.data_dir`.
    ///
    /// # Errors
    /// When none of them gives a URL: no Redis is configured and no embedded one runs.
    pub fn resolve(settings: &Settings) -> anyhow::Result<RedisTarget> {
        Self::resolve_with(settings, EmbeddedRedis::running_url)
    }

    fn resolve_with(
        settings: &Settings,
        running_url: impl Fn(&Path) -> Option<String>,
    ) -> anyhow::Result<RedisTarget> {
        if let Some(address) = settings.redis_address() {
            return Ok(RedisTarget {
                address,
                embedded: false,
            });
        }
        let data_dir = &settings.redis.embedded.data_dir;
        match running_url(data_dir) {
            Some(url) => Ok(RedisTarget {
                address: RedisAddress::single(url),
                embedded: true,
            }),
            None => anyhow::bail!(
                "no Redis: start `recur serve` first or pass --redis-url (no embedded \
                 redis-server is running under `{}`)",
                data_dir.display()
            ),
        }
    }

    fn connect_error(&self, error: ClientError) -> anyhow::Error {
        // A failed first connection names the server and what failed already.
        let named = matches!(error, ClientError::Connect(_));
        let error = anyhow::Error::new(error);
        if self.embedded {
            error.context(format!(
                "cannot reach the embedded Redis at {}: is `recur serve` still running?",
                self.address
            ))
        } else if named {
            error
        } else {
            error.context(format!("cannot reach Redis at {}", self.address))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn settings(url: Option<&str>) -> Settings {
        let mut settings = Settings::defaults().expect("defaults");
        settings.redis.url = url.map(str::to_string);
        settings
    }

    #[test]
    fn a_configured_url_wins_over_the_embedded_one() {
        let target = RedisTarget::resolve_with(&settings(Some("redis://10.0.0.1:6380")), |_| {
            Some("redis+unix:///x.sock".into())
        })
        .expect("resolves");
        assert_eq!(
            target.address,
            RedisAddress::single("redis://10.0.0.1:6380")
        );
        assert!(!target.embedded);
    }

    #[test]
    fn without_a_url_the_running_embedded_server_is_used() {
        let target = RedisTarget::resolve_with(&settings(None), |dir| {
            assert_eq!(dir, PathBuf::from("data/redis"));
            Some("redis+unix:///data/redis/redis.sock".into())
        })
        .expect("resolves");
        assert_eq!(
            target.address,
            RedisAddress::single("redis+unix:///data/redis/redis.sock")
        );
        assert!(target.embedded);
    }

    #[test]
    fn a_cluster_is_reached_through_its_seed_nodes_never_the_embedded_server() {
        let mut s = settings(Some("redis://10.0.0.1:7000,redis://10.0.0.2:7000"));
        s.redis.cluster = true;
        let target = RedisTarget::resolve_with(&s, |_| Some("redis+unix:///x.sock".into()))
            .expect("resolves");
        assert_eq!(
            target.address,
            RedisAddress::cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ])
        );
        assert!(!target.embedded);
    }

    #[test]
    fn repeated_causes_are_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such socket");
        let error = anyhow::Error::new(ClientError::Redis(redis::RedisError::from(io)))
            .context("cannot reach Redis at redis+unix:///x.sock");
        let line = describe(&error);
        assert_eq!(line.matches("no such socket").count(), 1, "{line}");
        assert!(
            line.starts_with("cannot reach Redis at redis+unix:///x.sock: "),
            "{line}"
        );
    }

    #[test]
    fn no_redis_at_all_says_what_to_do() {
        let error = RedisTarget::resolve_with(&settings(None), |_| None).expect_err("no redis");
        let message = error.to_string();
        assert!(
            message.contains("no Redis: start `recur serve` first or pass --redis-url"),
            "{message}"
        );
    }
}
