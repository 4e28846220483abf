//! `bullmq` (alias `compare`): the side-by-side peer. In one run:
//! 1. BullMQ (the npm package, `bench/peers/bullmq/`, Node from the machine) adds N delayed
//!    jobs due at the same instant to a private redis-server on a free loopback TCP port
//!    (append-only, like recur's), and a Worker with a no-op handler processes them: jobs per
//!    second from the due instant until the last completed;
//! 2. recur's burst with the same N, on the same kind of server (TCP, append-only): OFFLINE
//!    orders whose next cycle starts, then ONLINE ones whose next cycle also requests its
//!    payment (what billing does);
//! 3. one line per burst with both figures and the ratio, and the ratio of the CPU time (the
//!    processes' and Redis's) each spends per job / transition: on a shared machine the rates
//!    depend on what else ran during each, the CPU per job much less.
//!
//! The peer is installed outside the repository, so a benchmark leaves the checkout as it found
//! it: its package.json, package-lock.json and bench.js are copied to [`install_dir`] (a cache
//! directory, `~/.cache/recur-bench/bullmq` by default) and `npm install` runs there (versions
//! pinned in package.json and the lock; `npm ci` trips over the lock's platform-specific
//! optional packages with npm 11). When that fails (no Node, no network) the scenario says so
//! and prints only recur's figure.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use super::burst::{burst, BurstOptions};
use super::{setup, BenchError, BurstOrders, TcpRedis, TempDir};

/// Options of the comparison.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub orders: usize,
    pub binary: PathBuf,
    /// The BullMQ Worker's concurrencies to try with `removeOnComplete: true`; the best is the
    /// peer's figure.
    pub concurrencies: Vec<usize>,
    /// The Redis settings to compare in: append-only (`appendfsync everysec`) and/or not.
    pub aof: Vec<bool>,
    /// Also run BullMQ keeping every completed job (its default, a slower configuration), for
    /// reference, at the highest concurrency.
    pub keep_completed_reference: bool,
    /// Where the peer's package.json and bench.js are (the checkout's `bench/peers/bullmq`).
    pub peer_dir: PathBuf,
    /// Where it is installed and run (see [`install_dir`]).
    pub install_dir: PathBuf,
    /// Run `npm install` when node_modules is missing (off in the smoke test).
    pub install: bool,
    /// recur's bursts to compare: OFFLINE and ONLINE orders.
    pub recur_orders: Vec<BurstOrders>,
}

impl CompareOptions {
    /// N jobs / orders; BullMQ at concurrency 50, 100 and 500 with `removeOnComplete`, plus the
    /// keep-completed reference; with and without AOF; the peer from [`peer_dir`], installing
    /// it if needed.
    pub fn new(orders: usize, binary: &Path) -> CompareOptions {
        CompareOptions {
            orders,
            binary: binary.to_path_buf(),
            concurrencies: vec![50, 100, 500],
            aof: vec![true, false],
            keep_completed_reference: true,
            peer_dir: peer_dir(),
            install_dir: install_dir(),
            install: true,
            recur_orders: vec![BurstOrders::Offline, BurstOrders::Online],
        }
    }
}

/// The peer's directory: `$RECUR_BENCH_PEER_DIR`, else `bench/peers/bullmq` under the
/// working directory, else under the source tree recur was built from.
pub fn peer_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RECUR_BENCH_PEER_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("bench/peers/bullmq");
    if local.join("package.json").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/bullmq")
}

/// Whether the peer can run without installing anything (node and node_modules present).
pub fn peer_installed(dir: &Path) -> bool {
    dir.join("node_modules/bullmq/package.json").exists() && which("node")
}

fn which(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where the peer is installed and run: `$RECUR_BENCH_CACHE_DIR/bullmq`, else
/// `$XDG_CACHE_HOME/recur-bench/bullmq`, else `~/.cache/recur-bench/bullmq` (else under the
/// temp dir). Never inside the repository.
pub fn install_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = env("RECUR_BENCH_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("recur-bench")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/recur-bench")))
        .unwrap_or_else(|| std::env::temp_dir().join("recur-bench"));
    base.join("bullmq")
}

/// The files of the peer that are copied to its install directory.
pub const PEER_FILES: [&str; 3] = ["package.json", "package-lock.json", "bench.js"];

/// The file in the install directory that records which version of the peer's files was
/// staged there (npm rewrites the staged package-lock.json as it installs, so the copies
/// themselves cannot tell).
pub const STAGED_STAMP: &str = ".recur-staged";

/// Copies the peer's files from `source` to `target` (created if missing) when they differ from
/// what was staged there last (recorded in [`STAGED_STAMP`]); returns whether they did (then
/// node_modules is reinstalled). `source` is only read.
///
/// # Errors
/// A message when a file cannot be read or written.
pub fn stage(source: &Path, target: &Path) -> Result<bool, String> {
    Ok(stage_peer(source, target)? != Restaged::No)
}

/// What [`stage_peer`] changed in the install directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restaged {
    /// Nothing.
    No,
    /// Only the script (bench.js): the installed packages still fit.
    Script,
    /// package.json or package-lock.json (or what was staged is unknown): reinstall.
    Dependencies,
}

/// [`stage`], saying whether the packages must be installed again.
///
/// # Errors
/// A message when a file cannot be read or written.
pub fn stage_peer(source: &Path, target: &Path) -> Result<Restaged, String> {
    std::fs::create_dir_all(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let mut files = Vec::new();
    let mut stamp = String::new();
    for name in PEER_FILES {
        let from = source.join(name);
        let bytes =
            std::fs::read(&from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        // FNV-1a of each file: a change of any byte restages.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        stamp.push_str(&format!("{name} {} {hash:016x}\n", bytes.len()));
        files.push((name, bytes));
    }
    let stamp_path = target.join(STAGED_STAMP);
    let complete = PEER_FILES.iter().all(|n| target.join(n).exists());
    let same = match std::fs::read_to_string(&stamp_path) {
        Ok(staged) => staged == stamp,
        // Staged before the stamp existed: the copies themselves tell.
        Err(_) => files
            .iter()
            .all(|(name, bytes)| std::fs::read(target.join(name)).ok().as_ref() == Some(bytes)),
    };
    if complete && same {
        std::fs::write(&stamp_path, &stamp)
            .map_err(|e| format!("cannot write {}: {e}", stamp_path.display()))?;
        return Ok(Restaged::No);
    }
    // The stamp's lines of the package files, before and now: equal when only bench.js moved.
    let packages = |stamp: &str| -> Vec<String> {
        stamp
            .lines()
            .filter(|l| l.starts_with("package"))
            .map(str::to_string)
            .collect()
    };
    let restaged = match std::fs::read_to_string(&stamp_path) {
        Ok(staged) if complete && packages(&staged) == packages(&stamp) => Restaged::Script,
        _ => Restaged::Dependencies,
    };
    for (name, bytes) in files {
        let to = target.join(name);
        std::fs::write(&to, &bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    std::fs::write(&stamp_path, stamp)
        .map_err(|e| format!("cannot write {}: {e}", stamp_path.display()))?;
    Ok(restaged)
}

/// Stages the peer from `source` into `target` and installs its packages there with `npm
/// install` if they are missing or the staged files changed. Nothing is written under `source`.
///
/// # Errors
/// A message saying why the peer cannot run.
pub async fn ensure_peer(source: &Path, target: &Path, install: bool) -> Result<(), String> {
    if !source.join("package.json").exists() {
        return Err(format!("no peer at {}", source.display()));
    }
    if !which("node") {
        return Err("node is not installed (apt-get install -y nodejs npm)".into());
    }
    // A new bench.js needs no new packages.
    let restaged = stage_peer(source, target)?;
    if peer_installed(target) && restaged != Restaged::Dependencies {
        return Ok(());
    }
    if !install {
        return Err(format!(
            "{}/node_modules is missing (run `npm install` there)",
            target.display()
        ));
    }
    eprintln!(
        "installing the BullMQ peer: npm install in {}",
        target.display()
    );
    let out = tokio::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund"])
        .current_dir(target)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !out.status.success() || !peer_installed(target) {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "npm install failed in {} (no network?): {}",
            target.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(())
}

/// What the BullMQ peer printed.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub jobs_per_s: f64,
    /// The Node process's and Redis's CPU time per job while the worker processed, µs.
    pub cpu_us_per_job: f64,
    pub raw: Value,
}

/// One configuration of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    pub concurrency: usize,
    /// `removeOnComplete: true` (BullMQ's fastest) or keep every completed job (its default).
    pub remove_on_complete: bool,
    /// Its redis-server append-only or not.
    pub aof: bool,
}

/// Runs the peer with `jobs` jobs on a fresh private TCP redis-server.
///
/// # Errors
/// [`BenchError`] when the server or the script fails.
pub async fn run_peer(
    dir: &Path,
    jobs: usize,
    peer: &PeerConfig,
) -> Result<PeerReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = TcpRedis::start_with(&temp.redis_dir(), peer.aof).await?;
    let mut command = tokio::process::Command::new("node");
    command
        .arg("bench.js")
        .args(["--redis", &redis.addr()])
        .args(["--jobs", &jobs.to_string()])
        .args(["--concurrency", &peer.concurrency.to_string()]);
    if peer.remove_on_complete {
        command.arg("--remove-on-complete");
    }
    let out = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(setup("run node"))?;
    redis.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let raw: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            BenchError::Setup(format!(
                "the BullMQ peer printed no figures ({}): {stdout}",
                out.status
            ))
        })?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!("the BullMQ peer failed: {raw}")));
    }
    Ok(PeerReport {
        jobs_per_s: raw["jobs_per_s"].as_f64().unwrap_or(0.0),
        cpu_us_per_job: raw["node_cpu_us_per_job"].as_f64().unwrap_or(0.0)
            + raw["redis_cpu_us_per_job"].as_f64().unwrap_or(0.0),
        raw,
    })
}

/// The comparison, for each Redis setting of `opts.aof`: BullMQ at each concurrency with
/// `removeOnComplete: true` (and the keep-completed reference), then recur's bursts of
/// `opts.recur_orders` (OFFLINE and ONLINE orders), same N, same kind of Redis (TCP); a line
/// per run and a summary line per burst with the ratio against BullMQ's best.
///
/// # Errors
/// [`BenchError`] when recur's burst or a started peer fails (a peer that cannot be installed
/// is reported in the lines, not as an error).
pub async fn compare(opts: &CompareOptions) -> Result<String, BenchError> {
    let installed = ensure_peer(&opts.peer_dir, &opts.install_dir, opts.install).await;
    if let Err(why) = &installed {
        eprintln!("BullMQ peer skipped: {why}");
    }
    let onoff = |aof: bool| if aof { "on" } else { "off" };
    let mut lines = Vec::new();
    for &aof in &opts.aof {
        // The peer's best run: jobs per second, its configuration, its CPU per job.
        let mut best: Option<(f64, PeerConfig, f64)> = None;
        if installed.is_ok() {
            let mut configs: Vec<PeerConfig> = opts
                .concurrencies
                .iter()
                .map(|&concurrency| PeerConfig {
                    concurrency,
                    remove_on_complete: true,
                    aof,
                })
                .collect();
            if opts.keep_completed_reference {
                configs.push(PeerConfig {
                    concurrency: opts.concurrencies.iter().copied().max().unwrap_or(500),
                    remove_on_complete: false,
                    aof,
                });
            }
            for config in configs {
                let p = run_peer(&opts.install_dir, opts.orders, &config).await?;
                let line = format!(
                    "bullmq_peer orders={} aof={} remove_on_complete={} concurrency={} jobs_per_s={:.0} node_cpu_us_per_job={} redis_cpu_us_per_job={} elapsed_s={} late_ms={} version={}",
                    opts.orders,
                    onoff(aof),
                    config.remove_on_complete,
                    config.concurrency,
                    p.jobs_per_s,
                    p.raw["node_cpu_us_per_job"],
                    p.raw["redis_cpu_us_per_job"],
                    p.raw["elapsed_s"],
                    p.raw["late_ms"],
                    p.raw["bullmq"].as_str().unwrap_or("?"),
                );
                eprintln!("{line}");
                lines.push(line);
                // The peer at its best: removeOnComplete, the best concurrency.
                if config.remove_on_complete && best.is_none_or(|(b, _, _)| p.jobs_per_s > b) {
                    best = Some((p.jobs_per_s, config, p.cpu_us_per_job));
                }
            }
        }
        // recur's side: the burst of OFFLINE orders (a cycle start each) and of ONLINE ones
        // (a cycle start that also requests its payment, with its dunning retries: what
        // billing does), each against the peer's best.
        for &kind in &opts.recur_orders {
            let mut burst_opts = BurstOptions::new(opts.orders, &opts.binary);
            burst_opts.tcp = true;
            burst_opts.aof = aof;
            burst_opts.kind = kind;
            let recur = burst(&burst_opts).await?;
            let recur_line = recur.line();
            eprintln!("{recur_line}");
            lines.push(recur_line);
            let recur_tps = recur.transitions_per_s();
            let line = match best {
                // The ratio of rates depends on what else the machine ran during each run; the
                // ratio of CPU per job to CPU per transition does not (much).
                Some((jobs_per_s, config, peer_cpu)) => format!(
                    "bullmq orders={} aof={} recur_orders={} recur_transitions_per_s={:.0} bullmq_best_jobs_per_s={:.0} ratio={:.2} bullmq_best_cpu_us_per_job={:.1} recur_cpu_us_per_transition={:.1} cpu_ratio={:.2} bullmq_best_concurrency={} bullmq_remove_on_complete=true recur_{} redis=tcp",
                    opts.orders,
                    onoff(aof),
                    kind.name(),
                    recur_tps,
                    jobs_per_s,
                    recur_tps / jobs_per_s.max(1e-9),
                    peer_cpu,
                    recur.cpu_us_per_transition,
                    peer_cpu / recur.cpu_us_per_transition.max(1e-9),
                    config.concurrency,
                    recur.cpu,
                ),
                None => format!(
                    "bullmq orders={} aof={} recur_orders={} recur_transitions_per_s={:.0} bullmq_best_jobs_per_s=skipped ratio=n/a redis=tcp",
                    opts.orders,
                    onoff(aof),
                    kind.name(),
                    recur_tps,
                ),
            };
            eprintln!("{line}");
            lines.push(line);
        }
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn staging_copies_the_peer_out_and_leaves_the_source_alone() {
        let source = peer_dir();
        let before = listing(&source);
        let temp = TempDir::new().unwrap();
        let target = temp.0.join("cache/bullmq");
        assert!(stage(&source, &target).unwrap(), "the first stage copies");
        for name in PEER_FILES {
            assert_eq!(
                std::fs::read(target.join(name)).unwrap(),
                std::fs::read(source.join(name)).unwrap()
            );
        }
        assert!(
            !stage(&source, &target).unwrap(),
            "an unchanged peer is not copied again"
        );
        // npm rewrites the staged lock as it installs: that is no reason to restage.
        std::fs::write(target.join("package-lock.json"), "{}").unwrap();
        assert!(
            !stage(&source, &target).unwrap(),
            "a lock rewritten by npm install is not a change of the peer"
        );
        std::fs::write(target.join("bench.js"), "// edited").unwrap();
        std::fs::remove_file(target.join(STAGED_STAMP)).unwrap();
        assert!(stage(&source, &target).unwrap(), "a stale copy is replaced");
        assert_eq!(
            std::fs::read(target.join("bench.js")).unwrap(),
            std::fs::read(source.join("bench.js")).unwrap()
        );
        assert_eq!(listing(&source), before, "the checkout's peer is untouched");
        // Another bench.js needs no new packages; another package.json does.
        let edited = temp.0.join("source");
        std::fs::create_dir_all(&edited).unwrap();
        for name in PEER_FILES {
            std::fs::copy(source.join(name), edited.join(name)).unwrap();
        }
        let target = temp.0.join("cache2/bullmq");
        assert_eq!(
            stage_peer(&edited, &target).unwrap(),
            Restaged::Dependencies
        );
        assert_eq!(stage_peer(&edited, &target).unwrap(), Restaged::No);
        std::fs::write(edited.join("bench.js"), "// edited").unwrap();
        assert_eq!(stage_peer(&edited, &target).unwrap(), Restaged::Script);
        std::fs::write(edited.join("package.json"), "{}").unwrap();
        assert_eq!(
            stage_peer(&edited, &target).unwrap(),
            Restaged::Dependencies
        );
    }

    #[test]
    fn the_install_dir_is_outside_the_repository() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(
            !install_dir().starts_with(repo),
            "{}",
            install_dir().display()
        );
    }
}
