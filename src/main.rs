//! The `recur` binary: parses the command line, loads settings, sets up tracing, and hands
//! over to the library.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use recur::config::Settings;
use recur::shutdown::Shutdown;
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
    recur::run(settings, shutdown).await?;
    Ok(())
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    telemetry::init(telemetry::LogFormat::Human, "warn");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = recur::bench::RunOptions {
        orders: args.orders,
        binary: std::env::current_exe().context("cannot find the recur binary")?,
        peer_concurrency: args.peer_concurrency,
    };
    let line = runtime.block_on(recur::bench::run(&args.scenario, &opts))?;
    println!("{line}");
    Ok(())
}
