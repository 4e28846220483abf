//! The `recur` binary: parses the command line, loads settings, sets up tracing, and hands
//! over to the library.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use recur::config::Settings;
use recur::shutdown::Shutdown;
use recur::store::embedded::{EmbeddedOptions, EmbeddedRedis};
use recur::telemetry;

use cli::{BenchArgs, Cli, Command, ServeArgs};

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        // Its own exit codes: 1 for an error reply, 2 for no reply.
        Command::Admin(args) => return cli::admin::run(&args),
        Command::Bench(args) => bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain on one line, without anyhow's backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args.overrides()).context("cannot load settings")?;
    telemetry::init(settings.log.format, &settings.log.level);
    actix::System::new().block_on(run_serve(settings))
}

async fn run_serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown
        .listen_for_signals()
        .context("cannot install signal handlers")?;

    let (embedded, redis_url) = match &settings.redis.url {
        Some(url) => (None, url.clone()),
        None => {
            let server = EmbeddedRedis::start(&EmbeddedOptions::from(&settings.redis.embedded))
                .await
                .context("cannot start the embedded redis-server")?;
            let url = server.url();
            (Some(server), url)
        }
    };
    tracing::info!(
        %redis_url,
        prefix = %settings.prefix,
        clock = %settings.clock.mode,
        "daemon not yet implemented; waiting for SIGINT or SIGTERM"
    );

    shutdown.wait().await;

    if let Some(server) = embedded {
        server
            .stop()
            .await
            .context("embedded redis-server did not stop cleanly")?;
    }
    tracing::info!("stopped");
    Ok(())
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "recur bench is not yet implemented (scenario `{}`)",
        args.scenario
    )
}
