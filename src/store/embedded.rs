//! The embedded Redis: a private `redis-server` that recur starts, owns and stops, reachable
//! only through a unix socket (no TCP port), with its data under one directory.
//!
//! # One recur per data directory, and what a killed one leaves
//! A running recur holds an exclusive `flock` on `<data_dir>/recur.lock` (its pid written in
//! it); the kernel releases it however recur ends, `kill -9` included. So at start:
//! - the lock is held: another recur uses the directory, start is refused naming its pid and
//!   its redis-server's;
//! - the lock is free but a redis-server still runs on the directory: a recur that ended
//!   without stopping it left it behind. It is identified (it answers on the socket recorded in
//!   `redis.url`, or the default one, and its `CONFIG GET dir` is this directory; or, when it
//!   does not answer, the pid in `redis.pid` is a live process whose working directory is this
//!   directory and whose command line names our socket or `redis-server`), stopped (`SHUTDOWN`
//!   on its socket, or SIGTERM to that verified pid, which flush the append-only file) and a
//!   fresh server is started. A process that cannot be shown to be ours is never signalled.
//!
//! The leftover is stopped rather than adopted: it is not our child (we cannot wait for it and
//! it would not die with us), it may already be shutting down (see below), and it may run with
//! settings the new configuration changed. The price is one reload of the data.
//!
//! # Dying with recur
//! On Linux the server is spawned with `PR_SET_PDEATHSIG = SIGTERM`, so when recur dies (even
//! by `kill -9`) the kernel sends it SIGTERM and it flushes and exits on its own (elsewhere the
//! next start stops it, as above). The kernel sends that
//! signal when the *thread* that forked the child exits, not the process: every server is
//! therefore spawned from one dedicated thread that never returns (`recur-redis-spawner`),
//! never from a runtime thread that may be parked and retired (tokio's blocking pool) or a
//! caller's thread that ends before the server should (a test's thread).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

/// How long a fresh server may take to answer PING at all.
pub const START_TIMEOUT_MS: u64 = 5_000;
/// How long a server that answers `LOADING` may take to load its data.
pub const LOADING_TIMEOUT_MS: u64 = 600_000;
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT_MS: u64 = 10_000;
/// The longest unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
pub const SUN_PATH_MAX_BYTES: usize = 107;

/// How often a server loading its data reports its progress in the log.
pub const LOADING_PROGRESS_MS: u64 = 5_000;

const POLL_INTERVAL_MS: u64 = 20;
const PROBE_TIMEOUT_MS: u64 = 500;
const LOG_TAIL_LINES: usize = 20;
const SOCKET_FILE: &str = "redis.sock";
const LOG_FILE: &str = "redis.log";
const PID_FILE: &str = "redis.pid";
const URL_FILE: &str = "redis.url";
const LOCK_FILE: &str = "recur.lock";
/// The name of the temp directories holding a socket whose data-dir path is too long.
const SOCKET_DIR_PREFIX: &str = "recur-redis-";

/// Redis settings recur gives its embedded server (each as `--name value`), measured in
/// docs/BENCHMARKS.md:
/// - `hash-max-listpack-value 4096`: an order's hash (its version and its compact JSON, well
///   over Redis's default of 64 bytes) stays in the compact listpack encoding instead of a hash
///   table, about 200 bytes less per order at rest;
/// - `auto-aof-rewrite-percentage 400` with `auto-aof-rewrite-min-size 256mb`: Redis rewrites
///   its append-only file only once it has grown fivefold (and past 256 MB), not every time it
///   doubles, so a burst on a small data set does not fork a rewrite in its middle (on two cores
///   the rewrite's child takes a core from the daemon and Redis).
pub const EMBEDDED_SETTINGS: [(&str, &str); 3] = [
    ("hash-max-listpack-value", "4096"),
    ("auto-aof-rewrite-percentage", "400"),
    ("auto-aof-rewrite-min-size", "256mb"),
];

/// How to run the embedded Redis (config `[redis.embedded]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// The `redis-server` program: a name looked up on PATH, or a path.
    pub binary: PathBuf,
    /// Directory of the append-only file, the log (`redis.log`) and, when its path is short
    /// enough, the socket (`redis.sock`). Created if missing.
    pub data_dir: PathBuf,
    /// `--appendonly yes` (every write logged, so a crash loses nothing) or `no`.
    pub appendonly: bool,
}

/// Why the embedded Redis could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The redis-server program is not installed (or not where configured).
    #[error(
        "redis-server binary `{}` not found: install it with `apt-get install -y redis-server` \
         (or your OS package), or point recur at an existing Redis with `--redis-url`",
        binary.display()
    )]
    BinaryNotFound {
        /// The binary that was looked for.
        binary: PathBuf,
    },
    /// The data directory (or a socket directory) could not be created or used.
    #[error("cannot use directory `{}`: {source}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The program exists but could not be started.
    #[error("cannot start `{}`: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another recur (alive: it holds the data directory's lock) uses this data directory.
    #[error(
        "data dir `{}` is in use by another recur{} and its redis-server{} on `{}`: stop that \
         recur first, or give this one another redis.embedded.data_dir",
        data_dir.display(),
        owner.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        socket.display()
    )]
    AlreadyRunning {
        /// The other server's socket.
        socket: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
        /// The redis-server's pid from `redis.pid`, if readable.
        pid: Option<u32>,
        /// The pid of the recur holding the lock, if readable.
        owner: Option<u32>,
    },
    /// A server answers on this data directory's socket but does not keep its data there: not
    /// ours, left alone.
    #[error(
        "a redis-server{} answers on `{}` but keeps its data {}, not in `{}`: it is not recur's \
         embedded Redis of that directory and is left alone; stop it or move its socket, then \
         retry",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        socket.display(),
        dir.as_ref().map_or("somewhere it does not tell (CONFIG GET dir refused)".to_string(),
            |d| format!("in `{}`", d.display())),
        data_dir.display()
    )]
    NotOurs {
        /// The socket it answers on.
        socket: PathBuf,
        /// Its `dir`, if it told.
        dir: Option<PathBuf>,
        /// The data directory.
        data_dir: PathBuf,
        /// Its pid, from `INFO server`.
        pid: Option<u32>,
    },
    /// A server a previous recur left running on this data directory could not be stopped.
    #[error(
        "a redis-server{} left behind on data dir `{}` by a recur that was killed did not stop: \
         {reason}; stop it (see {}), then retry",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        data_dir.display(),
        data_dir.join(LOG_FILE).display()
    )]
    LeftoverNotStopped {
        /// The data directory.
        data_dir: PathBuf,
        /// Its pid, if known.
        pid: Option<u32>,
        /// What happened.
        reason: String,
    },
    /// The server exited before it answered PING.
    #[error("redis-server exited during start-up ({status}); end of {}:\n{log_tail}", log.display())]
    ExitedEarly {
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log file.
        log_tail: String,
    },
    /// The server did not answer PING in time; it has been killed.
    #[error("redis-server did not become ready within {timeout:?}; end of {}:\n{log_tail}", log.display())]
    NotReady {
        /// How long it was given.
        timeout: Duration,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log file.
        log_tail: String,
    },
    /// Waiting for or signalling the process failed.
    #[error("cannot stop redis-server (pid {pid}): {source}")]
    Stop {
        /// The server's pid.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server ignored SIGTERM for too long and was killed; its last writes may be lost.
    #[error("redis-server (pid {pid}) did not stop within {timeout:?} of SIGTERM and was killed")]
    KilledAfterTimeout {
        /// The server's pid.
        pid: u32,
        /// How long it was given.
        timeout: Duration,
    },
}

/// A running private `redis-server`. Stop it with [`EmbeddedRedis::stop`]; dropping it sends
/// SIGTERM without waiting.
///
/// The server runs in its own process group, so a Ctrl-C meant for recur does not stop Redis
/// before recur has committed its in-flight work.
#[derive(Debug)]
pub struct EmbeddedRedis {
    child: Option<Child>,
    pid: u32,
    socket: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    /// A short-path directory holding the socket when `data_dir` is too long; removed on stop.
    socket_dir: Option<PathBuf>,
    /// The data directory's lock (`recur.lock`), held while this server may run; released
    /// (closed) only after the server was stopped, as the last field dropped.
    _lock: File,
}

impl EmbeddedRedis {
    /// Starts `redis-server` on a unix socket and waits until it answers PING. A server a
    /// killed recur left running on the data directory is stopped first (see the module docs);
    /// a large data set is announced in the log ("loading N MB of data"), with its progress
    /// every [`LOADING_PROGRESS_MS`].
    ///
    /// # Errors
    /// [`EmbeddedError::BinaryNotFound`] when the program is missing, `AlreadyRunning` when
    /// another recur uses this data directory, `NotOurs` when a foreign server answers on its
    /// socket, `LeftoverNotStopped` when a left-behind server would not stop, `ExitedEarly` /
    /// `NotReady` (with the end of its log) when it does not come up, `Directory` / `Spawn` for
    /// I/O failures.
    pub async fn start(opts: &EmbeddedOptions) -> Result<EmbeddedRedis, EmbeddedError> {
        let data_dir = prepare_data_dir(&opts.data_dir)?;
        let lock = lock_data_dir(&data_dir)?;
        stop_leftover(&data_dir).await?;
        // A killed recur left its URL file; `recur admin` must not find a dead socket in it.
        remove_url_file(&data_dir);
        let (socket, socket_dir) = socket_path(&data_dir)?;
        let log = data_dir.join(LOG_FILE);
        let data_bytes = data_size(&data_dir, opts.appendonly);

        let child = match spawn(opts, &data_dir, &socket, &log) {
            Ok(child) => child,
            Err(e) => {
                remove_socket_dir(socket_dir.as_deref());
                return Err(e);
            }
        };
        let pid = child.id().unwrap_or_default();
        let mut server = EmbeddedRedis {
            child: Some(child),
            pid,
            socket,
            data_dir,
            log,
            socket_dir,
            _lock: lock,
        };
        let started = Instant::now();
        if data_bytes > 0 {
            let mb = data_bytes.div_ceil(1 << 20);
            tracing::info!(pid, data_dir = %server.data_dir.display(),
                "embedded redis-server loading {mb} MB of data");
        }
        server.wait_until_ready().await?;
        if data_bytes > 0 {
            tracing::info!(
                pid,
                seconds = started.elapsed().as_secs_f64(),
                "embedded redis-server loaded its data"
            );
        }
        // Other processes on this machine (`recur admin`) find the socket through this file,
        // since it is not always under the data directory.
        let url_file = server.data_dir.join(URL_FILE);
        fs::write(&url_file, server.url()).map_err(|source| EmbeddedError::Directory {
            path: url_file,
            source,
        })?;
        tracing::info!(pid, socket = %server.socket.display(), data_dir = %server.data_dir.display(),
            "embedded redis-server started");
        Ok(server)
    }

    /// The URL of the embedded server running on `data_dir`, as written at its start-up
    /// (`<data_dir>/redis.url`); `None` if no server started there or it stopped cleanly.
    /// A server that was killed leaves the file behind: connecting tells whether it is alive.
    pub fn running_url(data_dir: &Path) -> Option<String> {
        let url = fs::read_to_string(data_dir.join(URL_FILE)).ok()?;
        Some(url.trim().to_string()).filter(|u| !u.is_empty())
    }

    /// The URL to hand to the redis crate: `redis+unix:///<absolute socket path>`.
    pub fn url(&self) -> String {
        unix_socket_url(&self.socket)
    }

    /// The unix socket the server listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The (absolute) data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops the server: SIGTERM (Redis flushes its append-only file and exits), then waits up
    /// to [`STOP_TIMEOUT_MS`], then SIGKILL.
    ///
    /// # Errors
    /// [`EmbeddedError::KilledAfterTimeout`] if SIGKILL was needed; `Stop` if the process could
    /// not be signalled or waited for.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        remove_url_file(&self.data_dir);
        let result = match self.child.take() {
            Some(child) => self.terminate(child).await,
            None => Ok(()),
        };
        remove_socket_dir(self.socket_dir.take().as_deref());
        result
    }

    async fn terminate(&self, mut child: Child) -> Result<(), EmbeddedError> {
        let pid = self.pid;
        let stop_err = |source| EmbeddedError::Stop { pid, source };
        if let Some(status) = child.try_wait().map_err(stop_err)? {
            tracing::warn!(pid, %status, "embedded redis-server had already exited");
            return Ok(());
        }
        send_sigterm(pid).map_err(stop_err)?;
        let limit = Duration::from_millis(STOP_TIMEOUT_MS);
        match timeout(limit, child.wait()).await {
            Ok(status) => {
                let status = status.map_err(stop_err)?;
                tracing::info!(pid, %status, "embedded redis-server stopped");
                Ok(())
            }
            Err(_) => {
                child.kill().await.map_err(stop_err)?;
                Err(EmbeddedError::KilledAfterTimeout {
                    pid,
                    timeout: limit,
                })
            }
        }
    }

    async fn wait_until_ready(&mut self) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        let start_limit = Duration::from_millis(START_TIMEOUT_MS);
        let loading_limit = Duration::from_millis(LOADING_TIMEOUT_MS);
        let progress_every = Duration::from_millis(LOADING_PROGRESS_MS);
        let mut last_report = started;
        loop {
            match probe(&self.socket).await {
                Probe::Ready => return Ok(()),
                Probe::Loading if started.elapsed() < loading_limit => {
                    if last_report.elapsed() >= progress_every {
                        last_report = Instant::now();
                        self.report_loading(started.elapsed()).await;
                    }
                }
                Probe::NoAnswer if started.elapsed() < start_limit => {}
                probe => {
                    let limit = if probe == Probe::Loading {
                        loading_limit
                    } else {
                        start_limit
                    };
                    if let Some(child) = self.child.as_mut() {
                        // Best effort: it failed to come up, we report that rather than this.
                        if let Err(e) = child.kill().await {
                            tracing::warn!(error = %e, "cannot kill a redis-server that did not come up");
                        }
                    }
                    return Err(EmbeddedError::NotReady {
                        timeout: limit,
                        log: self.log.clone(),
                        log_tail: log_tail(&self.log),
                    });
                }
            }
            if let Some(child) = self.child.as_mut() {
                let exited = child.try_wait().map_err(|source| EmbeddedError::Stop {
                    pid: self.pid,
                    source,
                })?;
                if let Some(status) = exited {
                    self.child = None;
                    return Err(EmbeddedError::ExitedEarly {
                        status,
                        log: self.log.clone(),
                        log_tail: log_tail(&self.log),
                    });
                }
            }
            sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
}

impl EmbeddedRedis {
    /// One log line on a server still loading its data: how far, and Redis's estimate of the
    /// rest (`INFO persistence`, which Redis answers while loading).
    async fn report_loading(&self, elapsed: Duration) {
        let info = match request(&self.socket, &["INFO", "persistence"]).await {
            Ok(Reply::Bulk(Some(text))) => String::from_utf8_lossy(&text).into_owned(),
            _ => String::new(),
        };
        let field = |name: &str| info_field(&info, name).unwrap_or("?").to_string();
        tracing::info!(
            pid = self.pid,
            seconds = elapsed.as_secs(),
            percent = %field("loading_loaded_perc"),
            eta_seconds = %field("loading_eta_seconds"),
            "embedded redis-server still loading its data"
        );
    }

    /// Test support: forgets the server as a recur killed with SIGKILL on a system without
    /// the death signal would: lock released, server left running, files left as they are.
    #[cfg(test)]
    fn abandon(mut self) -> u32 {
        drop(self.child.take());
        self.socket_dir = None;
        self.pid
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            remove_url_file(&self.data_dir);
            if let Ok(None) = child.try_wait() {
                // SIGTERM, not SIGKILL: Redis flushes its append-only file on its own after
                // we are gone; tokio reaps the process.
                if send_sigterm(self.pid).is_err() {
                    if let Err(e) = child.start_kill() {
                        tracing::warn!(error = %e, "cannot stop the embedded redis-server");
                    }
                }
            }
        }
        remove_socket_dir(self.socket_dir.take().as_deref());
    }
}

/// The redis crate's URL for a unix socket: `redis+unix://` and the absolute path,
/// percent-encoded (the crate decodes it with `Url::to_file_path`).
pub fn unix_socket_url(socket: &Path) -> String {
    let mut url = String::from("redis+unix://");
    for &byte in socket.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

fn prepare_data_dir(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let dir_err = |source| EmbeddedError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(dir_err)?;
    // Absolute, because redis-server changes into --dir before it opens the other paths.
    dir.canonicalize().map_err(dir_err)
}

/// `<data_dir>/redis.sock`, or a socket in a new private directory under the temp dir when
/// that path is too long for a unix socket.
fn socket_path(data_dir: &Path) -> Result<(PathBuf, Option<PathBuf>), EmbeddedError> {
    let socket = data_dir.join(SOCKET_FILE);
    if fits_sun_path(&socket) {
        return Ok((socket, None));
    }
    let name = format!(
        "{SOCKET_DIR_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut dir = std::env::temp_dir().join(&name);
    if !fits_sun_path(&dir.join(SOCKET_FILE)) {
        dir = PathBuf::from("/tmp").join(&name);
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| EmbeddedError::Directory {
            path: dir.clone(),
            source,
        })?;
    Ok((dir.join(SOCKET_FILE), Some(dir)))
}

fn fits_sun_path(path: &Path) -> bool {
    path.as_os_str().len() <= SUN_PATH_MAX_BYTES
}

fn remove_socket_dir(dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Err(e) = fs::remove_dir_all(dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove socket directory");
            }
        }
    }
}

fn remove_url_file(data_dir: &Path) {
    if let Err(e) = fs::remove_file(data_dir.join(URL_FILE)) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %data_dir.display(), error = %e, "cannot remove the url file");
        }
    }
}

/// How many times a held data-directory lock is tried again, and how long apart.
const LOCK_RETRIES: u32 = 10;
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Takes the data directory's lock, `<data_dir>/recur.lock`, and writes this process's pid in
/// it; `AlreadyRunning` while another live process holds it.
fn lock_data_dir(data_dir: &Path) -> Result<File, EmbeddedError> {
    let path = data_dir.join(LOCK_FILE);
    let dir_err = |source| EmbeddedError::Directory {
        path: path.clone(),
        source,
    };
    // Opened close-on-exec (as std opens every file): redis-server must not inherit the lock,
    // or it would outlive us with it.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(dir_err)?;
    // A lock released a moment ago can still look held: a child this process forks elsewhere
    // shares the descriptor until its exec closes it (close-on-exec). A live owner holds it
    // for good, so a few short retries tell the two apart.
    let mut tries = 0;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) && tries < LOCK_RETRIES {
            tries += 1;
            std::thread::sleep(LOCK_RETRY_PAUSE);
            continue;
        }
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let socket = EmbeddedRedis::running_url(data_dir)
                .and_then(|url| socket_of_url(&url))
                .unwrap_or_else(|| data_dir.join(SOCKET_FILE));
            let owner = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(EmbeddedError::AlreadyRunning {
                socket,
                data_dir: data_dir.to_path_buf(),
                pid: read_pid(data_dir),
                owner,
            });
        }
        return Err(dir_err(error));
    }
    file.set_len(0).map_err(dir_err)?;
    writeln!(file, "{}", std::process::id()).map_err(dir_err)?;
    Ok(file)
}

/// Stops a redis-server that a recur which ended without stopping it left running on
/// `data_dir` (see the module docs). Called with the directory's lock held, so no live recur
/// uses it. Signals nothing that cannot be shown to be a redis-server of this directory.
async fn stop_leftover(data_dir: &Path) -> Result<(), EmbeddedError> {
    let mut sockets = vec![data_dir.join(SOCKET_FILE)];
    if let Some(recorded) = EmbeddedRedis::running_url(data_dir).and_then(|u| socket_of_url(&u)) {
        if !sockets.contains(&recorded) {
            sockets.insert(0, recorded);
        }
    }
    let not_stopped = |pid, reason: String| EmbeddedError::LeftoverNotStopped {
        data_dir: data_dir.to_path_buf(),
        pid,
        reason,
    };
    for socket in &sockets {
        if probe(socket).await == Probe::NoAnswer {
            continue;
        }
        // It answers (maybe still loading, which these commands are allowed during): ask it
        // who it is and where its data is.
        let pid = match request(socket, &["INFO", "server"]).await {
            Ok(Reply::Bulk(Some(text))) => {
                info_field(&String::from_utf8_lossy(&text), "process_id")
                    .and_then(|p| p.parse::<u32>().ok())
            }
            _ => None,
        };
        let dir = match request(socket, &["CONFIG", "GET", "dir"]).await {
            Ok(Reply::Array(items)) => match items.get(1) {
                Some(Reply::Bulk(Some(dir))) => {
                    Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir)))
                }
                _ => None,
            },
            _ => None,
        };
        match dir {
            Some(dir) if dir == data_dir => {}
            // Gone in between (it was shutting down already): look again below.
            None if probe(socket).await == Probe::NoAnswer => continue,
            dir => {
                return Err(EmbeddedError::NotOurs {
                    socket: socket.clone(),
                    dir,
                    data_dir: data_dir.to_path_buf(),
                    pid,
                })
            }
        }
        tracing::warn!(
            pid,
            socket = %socket.display(),
            data_dir = %data_dir.display(),
            "a redis-server left behind by a recur that ended without stopping it runs on this \
             data directory; stopping it (SHUTDOWN, which flushes the append-only file) to start \
             a fresh one"
        );
        // Its pid is watched only if it is shown to be ours (and in our pid namespace).
        let verified = pid.filter(|&p| is_our_server(p, data_dir, &sockets));
        // Success closes the connection without a reply; an error reply says why not.
        if let Ok(Reply::Error(error)) = request(socket, &["SHUTDOWN"]).await {
            // Already shutting down (a death signal, see the module docs) is fine.
            if !error.contains("in progress") {
                return Err(not_stopped(pid, format!("SHUTDOWN answered `{error}`")));
            }
        }
        if !wait_gone(verified, Some(socket)).await {
            return Err(not_stopped(
                pid,
                format!("still running {STOP_TIMEOUT_MS} ms after SHUTDOWN"),
            ));
        }
        remove_leftover_socket_dir(socket, data_dir);
        tracing::info!(pid, "the left-behind redis-server stopped");
        return Ok(());
    }
    // No socket answers: one still starting, stopped or hung is known only by its pid file;
    // a dead or reused pid (a process that is not ours) is left alone.
    if let Some(pid) = read_pid(data_dir).filter(|&p| is_our_server(p, data_dir, &sockets)) {
        tracing::warn!(
            pid,
            data_dir = %data_dir.display(),
            "a redis-server left behind by a recur that ended without stopping it runs on this \
             data directory but does not answer; sending it SIGTERM to start a fresh one"
        );
        send_sigterm(pid).map_err(|e| not_stopped(Some(pid), format!("SIGTERM failed: {e}")))?;
        if !wait_gone(Some(pid), None).await {
            return Err(not_stopped(
                Some(pid),
                format!("still running {STOP_TIMEOUT_MS} ms after SIGTERM"),
            ));
        }
        tracing::info!(pid, "the left-behind redis-server stopped");
    }
    // A server killed outright left its socket; nothing answers on it any more.
    for socket in &sockets {
        remove_leftover_socket_dir(socket, data_dir);
    }
    Ok(())
}

/// Whether `pid` is a live redis-server of `data_dir`: its working directory (redis-server
/// changes into `--dir`) is `data_dir`, and its command line names one of `sockets` (Redis
/// shows `redis-server unixsocket:<path>`, or its arguments) or it is called `redis-server`.
fn is_our_server(pid: u32, data_dir: &Path, sockets: &[PathBuf]) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !process_alive(pid) {
        return false;
    }
    match fs::read_link(proc.join("cwd")) {
        Ok(cwd) if cwd == data_dir => {}
        _ => return false,
    }
    let Ok(cmdline) = fs::read(proc.join("cmdline")) else {
        return false;
    };
    let names_socket = sockets
        .iter()
        .any(|s| contains(&cmdline, s.as_os_str().as_bytes()));
    let comm = fs::read_to_string(proc.join("comm")).unwrap_or_default();
    names_socket || comm.trim() == "redis-server"
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last parenthesis.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Waits up to [`STOP_TIMEOUT_MS`] until the process is gone and the socket no longer
/// answers; whether they are.
async fn wait_gone(pid: Option<u32>, socket: Option<&Path>) -> bool {
    let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
    loop {
        let alive = pid.is_some_and(process_alive);
        let answers = match socket {
            Some(socket) => probe(socket).await != Probe::NoAnswer,
            None => false,
        };
        if !alive && !answers {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Removes the temp directory a stopped server's socket was in (when the data directory's
/// path was too long for a socket), if it is one of ours: its socket file, which nothing
/// answers on any more, then the directory if that leaves it empty.
fn remove_leftover_socket_dir(socket: &Path, data_dir: &Path) {
    let Some(dir) = socket.parent() else { return };
    let ours = dir
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(SOCKET_DIR_PREFIX.as_bytes()));
    if ours && dir != data_dir {
        // Best effort: a leftover directory in the temp dir costs nothing but a name.
        let _ = fs::remove_file(socket);
        let _ = fs::remove_dir(dir);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The socket path of a `redis+unix://` URL written by [`unix_socket_url`].
fn socket_of_url(url: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let path = url.strip_prefix("redis+unix://")?.as_bytes();
    let mut bytes = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' && i + 2 < path.len() {
            let hex = std::str::from_utf8(&path[i + 1..i + 3]).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(path[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Bytes of data a starting server will load: its append-only file(s) when append-only
/// (Redis 7 keeps them in `appendonlydir/`, older ones in `appendonly.aof`), else (or when
/// there is none yet) the snapshot `dump.rdb`.
fn data_size(data_dir: &Path, appendonly: bool) -> u64 {
    let size = |path: PathBuf| fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let aof_dir: u64 = fs::read_dir(data_dir.join("appendonlydir"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let aof = aof_dir + size(data_dir.join("appendonly.aof"));
    if appendonly && aof > 0 {
        aof
    } else {
        size(data_dir.join("dump.rdb"))
    }
}

/// Linux: the server gets SIGTERM (Redis flushes its append-only file and exits) when the
/// thread that spawned it, the spawner thread, hence recur, is gone, however recur ended.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn die_with_recur(command: &mut Command) {
    let recur_pid = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: runs in the forked child before exec, where only async-signal-safe calls are
    // allowed: prctl(2) and getppid(2) are plain system calls, and nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // recur died between the fork and the prctl: no signal would ever come.
            if libc::getppid() != recur_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Elsewhere there is no death signal: a server left behind by a killed recur is stopped by
/// the next start (see the module docs).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn die_with_recur(_command: &mut Command) {}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Runs `command.spawn()` on the spawner thread, inside the caller's tokio runtime (which
/// then reaps the child). The death signal set in the child follows the thread that forked
/// it (see the module docs), and this thread lives as long as the process.
fn spawn_on_spawner(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let gone = || io::Error::other("the thread that starts redis-server is gone");
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("recur-redis-spawner".to_string())
            .spawn(move || {
                // The sender is static, so this loop ends only with the process.
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .ok()
            .map(|_| jobs)
    });
    let spawner = spawner.as_ref().ok_or_else(gone)?;
    let runtime = tokio::runtime::Handle::current();
    let (reply, answer) = mpsc::sync_channel(1);
    let mut command = command;
    spawner
        .send(Box::new(move || {
            let _entered = runtime.enter();
            // The caller waits for this below: nobody to tell if it is gone.
            let _ = reply.send(command.spawn());
        }))
        .map_err(|_| gone())?;
    // Blocks the caller for a fork and an exec, as spawning on its own thread would.
    answer.recv().map_err(|_| gone())?
}

fn spawn(
    opts: &EmbeddedOptions,
    data_dir: &Path,
    socket: &Path,
    log: &Path,
) -> Result<Child, EmbeddedError> {
    let dir_err = |source| EmbeddedError::Directory {
        path: data_dir.to_path_buf(),
        source,
    };
    // Early failures (bad arguments, a refused directory) go to stderr before the logfile is
    // open: send both into the same log, so the error tail shows them.
    let log_file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(dir_err)?;
    let stderr = log_file.try_clone().map_err(dir_err)?;

    let mut command = Command::new(&opts.binary);
    command
        .arg("--port")
        .arg("0")
        .arg("--unixsocket")
        .arg(socket)
        .arg("--unixsocketperm")
        .arg("700")
        .arg("--dir")
        .arg(data_dir)
        .arg("--appendonly")
        .arg(if opts.appendonly { "yes" } else { "no" })
        .arg("--save")
        .arg("")
        .arg("--daemonize")
        .arg("no")
        .args(
            EMBEDDED_SETTINGS
                .iter()
                .flat_map(|(name, value)| [format!("--{name}"), (*value).to_string()]),
        )
        .arg("--logfile")
        .arg(log)
        .arg("--pidfile")
        .arg(data_dir.join(PID_FILE))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    die_with_recur(&mut command);
    spawn_on_spawner(command).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            EmbeddedError::BinaryNotFound {
                binary: opts.binary.clone(),
            }
        } else {
            EmbeddedError::Spawn {
                binary: opts.binary.clone(),
                source,
            }
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Answered PONG.
    Ready,
    /// Answered, but is still loading its data.
    Loading,
    /// No socket, refused, or no reply in time.
    NoAnswer,
}

/// One PING over the socket, without the redis crate (the server may not speak yet).
async fn probe(socket: &Path) -> Probe {
    let attempt = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut reply = Vec::with_capacity(64);
        let mut buf = [0u8; 64];
        while !reply.ends_with(b"\r\n") && reply.len() < 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok::<_, io::Error>(reply)
    };
    match timeout(Duration::from_millis(PROBE_TIMEOUT_MS), attempt).await {
        Ok(Ok(reply)) if reply.starts_with(b"+PONG") => Probe::Ready,
        Ok(Ok(reply)) if reply.starts_with(b"-LOADING") => Probe::Loading,
        // Any other reply (an error such as NOAUTH) still means a server owns the socket.
        Ok(Ok(reply)) if !reply.is_empty() => Probe::Loading,
        _ => Probe::NoAnswer,
    }
}

/// A reply, as far as recur reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
    /// The server closed the connection without a reply (as `SHUTDOWN` does on success).
    Closed,
}

/// One command over the socket, without the redis crate (the server may still be loading).
async fn request(socket: &Path, args: &[&str]) -> io::Result<Reply> {
    let attempt = async {
        let mut stream = UnixStream::connect(socket).await?;
        let mut command = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            command.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        stream.write_all(&command).await?;
        let mut reply = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        loop {
            if let Some((parsed, _)) = parse_reply(&reply) {
                return Ok(parsed);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(Reply::Closed);
            }
            reply.extend_from_slice(&buf[..n]);
        }
    };
    match timeout(Duration::from_millis(PROBE_TIMEOUT_MS), attempt).await {
        Ok(reply) => reply,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time")),
    }
}

/// The reply at the start of `buf` and its length, or `None` while it is incomplete.
fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let after = end + 2;
    match *buf.first()? {
        b'+' => Some((Reply::Simple(line), after)),
        b'-' => Some((Reply::Error(line), after)),
        b':' => Some((Reply::Integer(line.parse().ok()?), after)),
        b'$' => {
            let Ok(len) = usize::try_from(line.parse::<i64>().ok()?) else {
                return Some((Reply::Bulk(None), after));
            };
            let body = buf.get(after..after + len + 2)?;
            Some((Reply::Bulk(Some(body[..len].to_vec())), after + len + 2))
        }
        b'*' => {
            let Ok(count) = usize::try_from(line.parse::<i64>().ok()?) else {
                return Some((Reply::Array(Vec::new()), after));
            };
            let mut items = Vec::with_capacity(count.min(64));
            let mut at = after;
            for _ in 0..count {
                let (item, len) = parse_reply(&buf[at..])?;
                items.push(item);
                at += len;
            }
            Some((Reply::Array(items), at))
        }
        _ => Some((Reply::Error(format!("unexpected reply {line}")), after)),
    }
}

/// A `name:value` line of an `INFO` reply.
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn read_pid(data_dir: &Path) -> Option<u32> {
    fs::read_to_string(data_dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn send_sigterm(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, not yet
    // reaped (callers checked try_wait), so the pid cannot have been reused.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The last lines of the log, for start-up errors.
fn log_tail(log: &Path) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> EmbeddedOptions {
        EmbeddedOptions {
            binary: PathBuf::from("redis-server"),
            data_dir: dir.join("redis"),
            appendonly: true,
        }
    }

    async fn ping_via_redis_crate(url: &str) -> String {
        let client = redis::Client::open(url).expect("the crate accepts the url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects over the unix socket");
        redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PING answers")
    }

    fn process_exists(pid: u32) -> bool {
        // SAFETY: signal 0 only checks for existence and permission.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[tokio::test]
    async fn starts_answers_ping_and_stops() {
        crate::telemetry::init_for_tests();
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("redis-server starts");
        let url = redis.url();
        assert!(url.starts_with("redis+unix:///"), "{url}");
        assert_eq!(ping_via_redis_crate(&url).await, "PONG");
        let pid = redis.pid();
        let socket = redis.socket_path().to_path_buf();
        let data_dir = redis.data_dir().to_path_buf();
        assert!(process_exists(pid));
        assert_eq!(EmbeddedRedis::running_url(&data_dir), Some(url));

        redis.stop().await.expect("stops on SIGTERM");
        assert!(!process_exists(pid), "process {pid} is gone");
        assert!(!socket.exists());
        assert_eq!(EmbeddedRedis::running_url(&data_dir), None);
    }

    #[tokio::test]
    async fn data_survives_a_restart() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let redis = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("starts");
        let client = redis::Client::open(redis.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .expect("SET");
        drop(conn);
        redis.stop().await.expect("stops");

        let redis = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("restarts");
        let client = redis::Client::open(redis.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let value: Option<String> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(value.as_deref(), Some("v"));
        redis.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn long_data_dir_puts_the_socket_in_a_short_temp_dir() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        let opts = EmbeddedOptions {
            data_dir: deep.clone(),
            ..options(tmp.path())
        };
        let redis = EmbeddedRedis::start(&opts).await.expect("starts");
        let socket = redis.socket_path().to_path_buf();
        assert!(socket.as_os_str().len() <= SUN_PATH_MAX_BYTES);
        assert!(!socket.starts_with(&deep));
        assert_eq!(ping_via_redis_crate(&redis.url()).await, "PONG");
        let socket_dir = socket.parent().expect("has a dir").to_path_buf();
        redis.stop().await.expect("stops");
        assert!(!socket_dir.exists(), "temp socket dir removed");
    }

    #[tokio::test]
    async fn a_second_server_on_the_same_data_dir_is_refused() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let first = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("starts");
        let error = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect_err("second start is refused");
        assert!(
            matches!(error, EmbeddedError::AlreadyRunning { pid: Some(p), owner: Some(o), .. }
                if p == first.pid() && o == std::process::id()),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", first.pid())),
            "{message}"
        );
        assert!(message.contains("another recur"), "{message}");
        assert_eq!(ping_via_redis_crate(&first.url()).await, "PONG");
        first.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn a_server_left_behind_is_stopped_and_a_fresh_one_keeps_the_data() {
        crate::telemetry::init_for_tests();
        let tmp = tempfile::tempdir().expect("temp dir");
        let first = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("starts");
        let client = redis::Client::open(first.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .expect("SET");
        drop(conn);
        let data_dir = first.data_dir().to_path_buf();
        let left = first.abandon();
        assert!(process_exists(left), "left running");

        let second = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("takes the data directory over");
        assert_ne!(second.pid(), left);
        assert!(
            !process_alive(left),
            "the left-behind server {left} was stopped"
        );
        let client = redis::Client::open(second.url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let value: Option<String> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(
            value.as_deref(),
            Some("v"),
            "data flushed by SHUTDOWN and reloaded"
        );
        assert_eq!(read_pid(&data_dir), Some(second.pid()));
        second.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn a_left_behind_server_with_its_socket_in_a_temp_dir_is_found_by_its_url() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        let opts = EmbeddedOptions {
            data_dir: deep,
            ..options(tmp.path())
        };
        let first = EmbeddedRedis::start(&opts).await.expect("starts");
        let socket_dir = first.socket_path().parent().expect("dir").to_path_buf();
        let left = first.abandon();
        let second = EmbeddedRedis::start(&opts).await.expect("takes over");
        assert!(
            !process_alive(left),
            "the left-behind server {left} was stopped"
        );
        assert!(!socket_dir.exists(), "its temp socket dir removed");
        second.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn the_temp_socket_dir_of_a_server_killed_outright_is_removed() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        let opts = EmbeddedOptions {
            data_dir: deep,
            ..options(tmp.path())
        };
        let first = EmbeddedRedis::start(&opts).await.expect("starts");
        let socket_dir = first.socket_path().parent().expect("dir").to_path_buf();
        let left = first.abandon();
        // SAFETY: kill(2) on the server this test started.
        assert_eq!(unsafe { libc::kill(left as libc::pid_t, libc::SIGKILL) }, 0);
        while process_alive(left) {
            sleep(Duration::from_millis(10)).await;
        }
        assert!(socket_dir.join(SOCKET_FILE).exists(), "a stale socket");
        let second = EmbeddedRedis::start(&opts).await.expect("starts afresh");
        assert!(!socket_dir.exists(), "the stale temp socket dir removed");
        second.stop().await.expect("stops");
    }

    #[tokio::test]
    async fn a_pid_file_naming_a_process_that_is_not_ours_is_left_alone() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("redis");
        fs::create_dir_all(&data_dir).expect("mkdir");
        // Not a redis-server, even though it runs in the data directory.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&data_dir)
            .spawn()
            .expect("sleep runs");
        fs::write(data_dir.join(PID_FILE), format!("{}\n", other.id())).expect("pid file");
        let redis = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect("starts beside it");
        assert!(
            process_alive(other.id()),
            "the other process was not signalled"
        );
        redis.stop().await.expect("stops");
        other.kill().expect("kill sleep");
        other.wait().expect("reap sleep");
    }

    #[tokio::test]
    async fn a_foreign_server_on_the_socket_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("redis");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(&data_dir).expect("mkdir");
        fs::create_dir_all(&elsewhere).expect("mkdir");
        let socket = data_dir.join(SOCKET_FILE);
        let mut foreign = std::process::Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(&elsewhere)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(5);
        while probe(&socket).await != Probe::Ready {
            assert!(Instant::now() < deadline, "the foreign server came up");
            sleep(Duration::from_millis(20)).await;
        }
        let error = EmbeddedRedis::start(&options(tmp.path()))
            .await
            .expect_err("refused");
        assert!(matches!(error, EmbeddedError::NotOurs { .. }), "{error}");
        assert!(error.to_string().contains("left alone"), "{error}");
        assert_eq!(probe(&socket).await, Probe::Ready, "still running");
        foreign.kill().expect("kill");
        foreign.wait().expect("reap");
    }

    #[test]
    fn socket_urls_read_back() {
        for path in [
            "/tmp/a b/redis.sock",
            "/data/redis/redis.sock",
            "/x/%/é.sock",
        ] {
            let url = unix_socket_url(Path::new(path));
            assert_eq!(socket_of_url(&url), Some(PathBuf::from(path)), "{url}");
        }
        assert_eq!(socket_of_url("redis://127.0.0.1:6379"), None);
    }

    #[test]
    fn replies_parse_whole_or_not_at_all() {
        let config = b"*2\r\n$3\r\ndir\r\n$9\r\n/data/dir\r\n";
        let (reply, len) = parse_reply(config).expect("complete");
        assert_eq!(len, config.len());
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Bulk(Some(b"dir".to_vec())),
                Reply::Bulk(Some(b"/data/dir".to_vec()))
            ])
        );
        for cut in 0..config.len() {
            assert_eq!(parse_reply(&config[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            parse_reply(b"-ERR no\r\n").map(|r| r.0),
            Some(Reply::Error("ERR no".into()))
        );
        assert_eq!(
            parse_reply(b"$-1\r\n").map(|r| r.0),
            Some(Reply::Bulk(None))
        );
        assert_eq!(
            info_field("# Server\r\nprocess_id:42\r\n", "process_id"),
            Some("42")
        );
    }

    #[test]
    fn data_size_counts_the_files_redis_loads() {
        let tmp = tempfile::tempdir().expect("temp dir");
        assert_eq!(data_size(tmp.path(), true), 0);
        fs::write(tmp.path().join("dump.rdb"), [0u8; 10]).expect("write");
        assert_eq!(data_size(tmp.path(), true), 10, "no AOF yet: the snapshot");
        fs::create_dir(tmp.path().join("appendonlydir")).expect("mkdir");
        fs::write(tmp.path().join("appendonlydir/a.base.rdb"), [0u8; 100]).expect("write");
        fs::write(tmp.path().join("appendonlydir/a.incr.aof"), [0u8; 20]).expect("write");
        assert_eq!(data_size(tmp.path(), true), 120);
        assert_eq!(data_size(tmp.path(), false), 10);
    }

    #[tokio::test]
    async fn missing_binary_says_how_to_install_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let opts = EmbeddedOptions {
            binary: PathBuf::from("redis-server-that-does-not-exist"),
            ..options(tmp.path())
        };
        let error = EmbeddedRedis::start(&opts)
            .await
            .expect_err("no such binary");
        assert!(matches!(error, EmbeddedError::BinaryNotFound { .. }));
        let message = error.to_string();
        assert!(
            message.contains("apt-get install -y redis-server"),
            "{message}"
        );
        assert!(message.contains("--redis-url"), "{message}");
    }

    #[tokio::test]
    async fn early_exit_reports_the_log_tail() {
        let tmp = tempfile::tempdir().expect("temp dir");
        // redis-server refuses an unknown option and exits at once.
        let script = tmp.path().join("bad-redis");
        fs::write(
            &script,
            "#!/bin/sh\nexec redis-server \"$@\" --no-such-option 1\n",
        )
        .expect("write script");
        let mut perms = fs::metadata(&script).expect("metadata").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&script, perms).expect("chmod");
        let opts = EmbeddedOptions {
            binary: script,
            ..options(tmp.path())
        };
        let error = EmbeddedRedis::start(&opts).await.expect_err("exits early");
        assert!(
            matches!(error, EmbeddedError::ExitedEarly { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("no-such-option"), "{error}");
    }

    #[test]
    fn unix_url_is_percent_encoded() {
        assert_eq!(
            unix_socket_url(Path::new("/tmp/a b/redis.sock")),
            "redis+unix:///tmp/a%20b/redis.sock"
        );
        let info = redis::IntoConnectionInfo::into_connection_info(
            unix_socket_url(Path::new("/tmp/a b/redis.sock")).as_str(),
        )
        .expect("valid url");
        assert_eq!(
            info.addr().to_string(),
            redis::ConnectionAddr::Unix(PathBuf::from("/tmp/a b/redis.sock")).to_string()
        );
    }
}
