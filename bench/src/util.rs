//! Small things every bench uses: temp dirs, quantiles, CPU time, a seeded random generator.

use super::*;

/// A fresh temp directory for one bench (removed by [`TempDir`]'s drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be created.
    pub fn new() -> Result<TempDir, BenchError> {
        let dir =
            std::env::temp_dir().join(format!("recur-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(setup("temp dir"))?;
        Ok(TempDir(dir))
    }

    /// The private Redis's data directory under it.
    pub fn redis_dir(&self) -> PathBuf {
        self.0.join("redis")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// KiB as MB with one decimal, or n/a.
pub fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0))
}

/// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// CPU use of the daemon and of Redis over a measured interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub daemon: Duration,
    pub redis: Duration,
}

impl CpuSplit {
    /// As [`CpuSplit::now`], with the CPU time of every daemon of a group summed.
    pub fn now_group(daemons: &[DaemonProcess], redis: &BenchRedis) -> CpuSplit {
        CpuSplit {
            daemon: daemons
                .iter()
                .filter_map(DaemonProcess::pid)
                .filter_map(cpu_time)
                .sum(),
            redis: redis.pids().into_iter().filter_map(cpu_time).sum(),
        }
    }

    /// Reads the daemon's and Redis's (every node's, on a cluster) CPU time now.
    pub fn now(daemon: &DaemonProcess, redis: &BenchRedis) -> CpuSplit {
        CpuSplit {
            daemon: daemon.pid().and_then(cpu_time).unwrap_or_default(),
            redis: redis.pids().into_iter().filter_map(cpu_time).sum(),
        }
    }

    /// Daemon CPU time between `self` (before) and `after`, in µs per transition.
    pub fn daemon_us_per(&self, after: &CpuSplit, transitions: u64) -> f64 {
        after.daemon.saturating_sub(self.daemon).as_secs_f64() * 1e6 / transitions.max(1) as f64
    }

    /// Redis CPU time (every server's) between `self` (before) and `after`, in µs per
    /// transition: 1e6 over it is what one Redis core would sustain.
    pub fn redis_us_per(&self, after: &CpuSplit, transitions: u64) -> f64 {
        after.redis.saturating_sub(self.redis).as_secs_f64() * 1e6 / transitions.max(1) as f64
    }

    /// `daemon_cpu=..% redis_cpu=..%` of `wall` between `self` (before) and `after`.
    pub fn figures(&self, after: &CpuSplit, wall: Duration) -> String {
        let pct = |a: Duration, b: Duration| {
            100.0 * a.saturating_sub(b).as_secs_f64() / wall.as_secs_f64().max(1e-9)
        };
        format!(
            "daemon_cpu_pct={:.0} redis_cpu_pct={:.0}",
            pct(after.daemon, self.daemon),
            pct(after.redis, self.redis)
        )
    }
}

/// A small deterministic generator (splitmix64) so every run makes the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// splitmix64 of one value (a stable hash of an index).
pub fn mix(i: u64) -> u64 {
    Rng::new(i).next_u64()
}
