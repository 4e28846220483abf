//! `recur-bench <scenario>`: runs one benchmark scenario against the `recur` binary beside this
//! one (or `--daemon PATH`) and prints its line of figures. `recur bench ...` runs this program.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// Measure recur: each scenario starts a private redis-server and the real `recur serve`, and
/// prints one line of figures (http: a table, then its line). docs/BENCHMARKS.md says what
/// each measures.
// The usage line names the program as it was called: `recur bench` runs this one with that
// name as its argv[0].
#[derive(Debug, Parser)]
#[command(name = "recur-bench", version)]
struct Args {
    /// The scenario to run: burst, burst-end, steady, recovery, admin, memory, forecast,
    /// sizing, testclock, http, bullmq (alias compare).
    scenario: String,
    /// How many orders the scenario uses [default: 100000; steady, sizing and testclock 10000;
    /// memory and forecast 1000000].
    #[arg(long)]
    orders: Option<usize>,
    /// The bullmq scenario: only this BullMQ worker concurrency [default: the best of 50, 100
    /// and 500].
    #[arg(long, value_name = "N")]
    peer_concurrency: Option<usize>,
    /// The recur binary to measure [default: `recur` beside this program].
    #[arg(long, value_name = "PATH")]
    daemon: Option<PathBuf>,
    /// burst and burst-end: run Redis as a private 3-master Redis Cluster on loopback ports
    /// (the daemon with --redis-cluster) instead of one redis-server.
    #[arg(long)]
    cluster: bool,
    /// burst and burst-end: run Redis on a loopback TCP port with one local replica
    /// (--replicaof); with RECUR_REDIS__WAIT_REPLICAS=1 every commit waits for it.
    #[arg(long)]
    replica: bool,
    /// burst and burst-end: how many daemons share the partitions.
    #[arg(long, value_name = "N", default_value_t = 1)]
    daemons: usize,
    /// burst: deliver every event to a local webhook receiver that answers 200 (`ok`), or to
    /// an endpoint that refuses connections (`down`); the line adds the deliveries per second.
    #[arg(long, value_enum, value_name = "TARGET")]
    webhook: Option<recur_bench::burst::WebhookTarget>,
    /// http: requests per command, way (HTTP, pub/sub) and phase (closed loop, fixed rate)
    /// [default: 20000].
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// http: concurrent keep-alive HTTP connections, and pub/sub requests in flight
    /// [default: 64].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// http: requests per second of the fixed-rate phases [default: 5000].
    #[arg(long, value_name = "R")]
    rate: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<String> {
    recur::telemetry::init(recur::telemetry::LogFormat::Human, "warn");
    let binary = match &args.daemon {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find the recur-bench binary")?
            .with_file_name(format!("recur{}", std::env::consts::EXE_SUFFIX)),
    };
    anyhow::ensure!(
        binary.exists(),
        "the daemon binary {} is not there; build it with `cargo build --release --workspace` or pass --daemon",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = recur_bench::RunOptions {
        orders: args.orders,
        binary,
        peer_concurrency: args.peer_concurrency,
        cluster: args.cluster,
        replica: args.replica,
        daemons: args.daemons,
        webhook: args.webhook,
        requests: args.requests,
        connections: args.connections,
        rate: args.rate,
    };
    Ok(runtime.block_on(recur_bench::run(&args.scenario, &opts))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_shows_each_default_once() {
        Args::command().debug_assert();
        let help = Args::command().render_help().to_string();
        assert_eq!(help.matches("[default: 1]").count(), 1, "{help}");
    }

    #[test]
    fn the_usage_names_the_program_as_called() {
        let error = Args::try_parse_from(["recur bench", "--help"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("Usage: recur bench [OPTIONS] <SCENARIO>"),
            "{error}"
        );
    }
}
