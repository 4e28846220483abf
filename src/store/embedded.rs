//! The embedded Redis: a private `redis-server` that recur starts, owns and stops, reachable
//! only through a unix socket (no TCP port), with its data under one directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
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

const POLL_INTERVAL_MS: u64 = 20;
const PROBE_TIMEOUT_MS: u64 = 500;
const LOG_TAIL_LINES: usize = 20;
const SOCKET_FILE: &str = "redis.sock";
const LOG_FILE: &str = "redis.log";
const PID_FILE: &str = "redis.pid";
const URL_FILE: &str = "redis.url";

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
    /// Another server already answers on this data directory's socket.
    #[error(
        "a redis-server{} is already running on `{}`: another recur is using data dir `{}`, or a \
         previous recur was killed and left it behind (stop it, then retry)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        socket.display(),
        data_dir.display()
    )]
    AlreadyRunning {
        /// The socket that answered.
        socket: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
        /// The pid from `redis.pid`, if readable.
        pid: Option<u32>,
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
}

impl EmbeddedRedis {
    /// Starts `redis-server` on a unix socket and waits until it answers PING.
    ///
    /// # Errors
    /// [`EmbeddedError::BinaryNotFound`] when the program is missing, `AlreadyRunning` when a
    /// server already answers on this data directory, `ExitedEarly` / `NotReady` (with the end
    /// of its log) when it does not come up, `Directory` / `Spawn` for I/O failures.
    pub async fn start(opts: &EmbeddedOptions) -> Result<EmbeddedRedis, EmbeddedError> {
        let data_dir = prepare_data_dir(&opts.data_dir)?;
        let (socket, socket_dir) = socket_path(&data_dir)?;
        let log = data_dir.join(LOG_FILE);

        if probe(&socket).await != Probe::NoAnswer {
            remove_socket_dir(socket_dir.as_deref());
            return Err(EmbeddedError::AlreadyRunning {
                pid: read_pid(&data_dir),
                socket,
                data_dir,
            });
        }

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
        };
        server.wait_until_ready().await?;
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
        loop {
            match probe(&self.socket).await {
                Probe::Ready => return Ok(()),
                Probe::Loading if started.elapsed() < loading_limit => {}
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
    use std::os::unix::ffi::OsStrExt;
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
        "recur-redis-{}",
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
    command.spawn().map_err(|source| {
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
            matches!(error, EmbeddedError::AlreadyRunning { pid: Some(p), .. } if p == first.pid()),
            "{error}"
        );
        assert_eq!(ping_via_redis_crate(&first.url()).await, "PONG");
        first.stop().await.expect("stops");
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
