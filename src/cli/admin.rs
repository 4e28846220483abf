//! `recur admin`: finds the daemon's Redis, sends one admin command and prints the reply, or
//! (`recur admin watch`) prints every event until Ctrl-C.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use serde_json::Value;

use recur::admin::client::{
    watch_streams_to, AdminClient, ClientError, RequestOptions, Via, DEFAULT_ATTEMPT_TIMEOUT_MS,
};
use recur::config::{Identity, Settings};
use recur::store::embedded::EmbeddedRedis;
use recur::store::RedisAddress;
use recur::telemetry::mask_secrets;

use super::commands::{AdminArgsError, AdminCommand, Output};
use super::output::{render_event, render_reply};
use super::{AdminArgs, Cli};

/// Exit code when the daemon answered with an error reply.
pub const EXIT_REPLY_ERROR: u8 = 1;
/// Exit code when there is no reply: bad arguments, no Redis, transport error or timeout.
pub const EXIT_NO_REPLY: u8 = 2;

/// Runs `recur admin` and says how the process should exit: 0 for an `ok` reply,
/// [`EXIT_REPLY_ERROR`] for an error reply (printed like any reply), [`EXIT_NO_REPLY`] when
/// no reply could be had (the reason goes to stderr). Arguments are checked first: a missing
/// one exits as clap's own errors do (2, with the usage).
pub fn run(args: &AdminArgs) -> ExitCode {
    let request_args = match args.command.request_args() {
        Ok(request_args) => request_args,
        Err(AdminArgsError::Missing { command, missing }) => {
            missing_error(command, &missing).exit()
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_NO_REPLY);
        }
    };
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
        .and_then(|runtime| runtime.block_on(run_async(args, request_args)));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", mask_secrets(&describe(&error)));
            ExitCode::from(EXIT_NO_REPLY)
        }
    }
}

/// clap's error for required arguments given neither as flags nor in `--json`, with the
/// subcommand's usage.
fn missing_error(command: &str, missing: &[&str]) -> clap::Error {
    let mut cli = Cli::command();
    cli.build();
    let message = format!(
        "the following required arguments were not provided (as flags or in --json):\n  {}",
        missing.join("\n  ")
    );
    let kind = clap::error::ErrorKind::MissingRequiredArgument;
    match cli
        .find_subcommand_mut("admin")
        .and_then(|admin| admin.find_subcommand_mut(command))
    {
        Some(sub) => sub.error(kind, message),
        None => cli.error(kind, message),
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

async fn run_async(args: &AdminArgs, request_args: Value) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&args.settings.overrides()).context("cannot load settings")?;
    let target = RedisTarget::resolve(&settings)?;
    if target.address.access().tls.insecure {
        eprintln!(
            "warning: redis.tls.insecure = true: the Redis server's TLS certificate is not verified"
        );
    }
    let output = args.request.output;
    if let AdminCommand::Watch(watch_args) = &args.command {
        return watch(&target, &settings.prefix, watch_args.from_start, output).await;
    }
    let command = args.command.name();
    let total_timeout = args.request.timeout;
    // The id is chosen here, so that an interrupted request can be retried with it.
    let id = args
        .request
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let options = RequestOptions {
        id: Some(id.clone()),
        channel: args.request.channel.clone(),
        attempt_timeout: Duration::from_millis(DEFAULT_ATTEMPT_TIMEOUT_MS).min(total_timeout),
        total_timeout,
    };
    // With enforced identities the request goes on the channel's own names (SPEC 11.4).
    let via = match settings.admin.identity {
        Identity::Declared => Via::Admin,
        Identity::Enforced => Via::Channel(args.request.channel.clone()),
    };
    let client = AdminClient::connect_via(&target.address, &settings.prefix, &via)
        .await
        .map_err(|e| target.connect_error(e))?;
    let advancing = command == "advanceClock";
    // advanceClock waits as long as the advance moves (progress on stderr); `--timeout` bounds
    // a wait without progress.
    let progress = if advancing {
        let second = AdminClient::connect_via(&target.address, &settings.prefix, &via)
            .await
            .map_err(|e| target.connect_error(e))?;
        Some(Progress::watch(second))
    } else {
        None
    };
    let exchange = async {
        loop {
            let result = client
                .request_with(options.clone(), command, request_args.clone())
                .await;
            // A busy machine may leave the clock still for a while between two looks: a wait
            // without progress ends after --timeout, but never less than half a minute.
            let moving = progress
                .as_ref()
                .is_some_and(|p| p.moved_within(total_timeout.max(Duration::from_secs(30))));
            match result {
                Ok(reply)
                    if moving && reply.error.as_ref().is_some_and(|e| e.code.is_transient()) => {}
                Err(ClientError::Timeout { .. }) if moving => {}
                other => return other,
            }
        }
    };
    let ctrl_c = tokio::signal::ctrl_c();
    let reply = tokio::select! {
        result = exchange => result,
        _ = ctrl_c => {
            eprintln!(
                "interrupted: `{command}` may still be applied by the daemon; retrying with --request-id {id} is safe (it is applied at most once)"
            );
            return Ok(ExitCode::from(130));
        }
    };
    if let Some(p) = &progress {
        p.stop();
    }
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            let hint = match &error {
                ClientError::Timeout { id, .. } => {
                    format!(" (retrying with --request-id {id} is safe)")
                }
                _ => String::new(),
            };
            let context = format!("cannot get a reply to `{command}`{hint}");
            return Err(anyhow::Error::new(error).context(context));
        }
    };
    print_line(&render_reply(&reply, output))?;
    if let (AdminCommand::Forecast(f), Some(result)) = (&args.command, &reply.result) {
        if f.chart {
            eprintln!();
            print_line(&super::output::forecast_chart(result, 50))?;
        }
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REPLY_ERROR)
    })
}

/// Follows an advance while its request waits: every second, getClock says how far the
/// simulated clock has got and how many transitions partition 0's daemon has fired; each day
/// reached is printed on stderr, and any move (a day, or transitions) remembered.
struct Progress {
    last_move: std::sync::Arc<std::sync::Mutex<std::time::Instant>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn watch(client: AdminClient) -> Progress {
        let last_move = std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
        let moved = std::sync::Arc::clone(&last_move);
        let task = tokio::spawn(async move {
            let mut seen: Option<String> = None;
            let mut first_transitions: Option<u64> = None;
            let mut last_transitions: Option<u64> = None;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let options = RequestOptions {
                    attempt_timeout: Duration::from_secs(2),
                    total_timeout: Duration::from_secs(2),
                    ..RequestOptions::default()
                };
                let Ok(reply) = client
                    .request_with(options, "getClock", serde_json::json!({}))
                    .await
                else {
                    continue;
                };
                let Some(advance) = reply.result.as_ref().and_then(|r| r.get("advance")) else {
                    continue;
                };
                let reached = advance["reached"].as_str().unwrap_or_default().to_string();
                let transitions = advance["transitions"].as_u64().unwrap_or(0);
                let base = *first_transitions.get_or_insert(transitions);
                // Moving: the clock got further, or the day it is on is still firing (a day
                // with many orders due takes a while on a busy machine).
                if seen.as_deref() != Some(reached.as_str())
                    || last_transitions != Some(transitions)
                {
                    *moved
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        std::time::Instant::now();
                    last_transitions = Some(transitions);
                }
                if seen.as_deref() != Some(reached.as_str()) {
                    eprintln!(
                        "advancing to {}: reached {reached}, {} transitions on partition 0's daemon",
                        advance["to"].as_str().unwrap_or_default(),
                        transitions.saturating_sub(base),
                    );
                    seen = Some(reached);
                }
            }
        });
        Progress { last_move, task }
    }

    /// Whether the clock moved within `window`.
    fn moved_within(&self, window: Duration) -> bool {
        self.last_move
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
            < window
    }

    fn stop(&self) {
        self.task.abort();
    }
}

/// Prints every event of every partition's event stream (with its change's entity) until
/// Ctrl-C (or until stdout is closed, e.g. by `| head`): from now, or from the oldest entry
/// kept with `--from-start`; one JSON line per event, or one table line with `--output table`.
async fn watch(
    target: &RedisTarget,
    prefix: &str,
    from_start: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
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
                if !print_line(&render_event(&event, output))? {
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
