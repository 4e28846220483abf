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

/// mimalloc rather than glibc's allocator: in a burst the daemon spent about a quarter of its
/// CPU in glibc's malloc and free (docs/BENCHMARKS.md, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            // The cause chain on one line, without anyhow's backtrace; a URL's password
            // masked, should a cause print one.
            eprintln!("error: {}", telemetry::mask_secrets(&format!("{error:#}")));
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args.overrides()).context("cannot load settings")?;
    telemetry::check_rust_log().map_err(anyhow::Error::msg)?;
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

/// Runs `recur-bench` (built beside this binary by `cargo build --release`) with the same
/// arguments, and exits as it does. Its argv[0] is `recur bench`, so that its usage and errors
/// name the command as typed.
fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;

    let me = std::env::current_exe().context("cannot find the recur binary")?;
    let program = me.with_file_name(format!("recur-bench{}", std::env::consts::EXE_SUFFIX));
    if !program.exists() {
        anyhow::bail!(
            "{} is not built; build it with `cargo build --release --workspace`",
            program.display()
        );
    }
    let status = std::process::Command::new(&program)
        .arg0("recur bench")
        .args(&args.args)
        .status()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !status.success() {
        anyhow::bail!("{} failed ({status})", program.display());
    }
    Ok(())
}
