//! Graceful shutdown: the one signal every long-running loop watches to stop taking work.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A shared "stop taking work" flag. Cheap to clone; every clone sees the same trigger.
///
/// Loops `select!` on [`Shutdown::wait`] and finish the unit of work in hand before returning.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

/// Why signal handling could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The OS refused a signal handler (or no tokio runtime is running).
    #[error("cannot listen for {signal}: {source}")]
    Signal {
        /// The signal name, SIGINT or SIGTERM.
        signal: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Shutdown {
    /// A shutdown that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything watching this shutdown to stop. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown has been asked for (at once if it already was).
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// Triggers this shutdown on the first SIGINT or SIGTERM, and exits the process (code 130)
    /// on a second one. The handlers are installed before this returns; the returned task ends
    /// when shutdown is triggered otherwise.
    ///
    /// # Errors
    /// [`ShutdownError::Signal`] if a handler cannot be installed. Must be called inside a
    /// tokio runtime.
    pub fn listen_for_signals(&self) -> Result<JoinHandle<()>, ShutdownError> {
        use tokio::signal::unix::{signal, SignalKind};

        let mut interrupt =
            signal(SignalKind::interrupt()).map_err(|source| ShutdownError::Signal {
                signal: "SIGINT",
                source,
            })?;
        let mut terminate =
            signal(SignalKind::terminate()).map_err(|source| ShutdownError::Signal {
                signal: "SIGTERM",
                source,
            })?;
        let shutdown = self.clone();
        Ok(tokio::spawn(async move {
            let signal = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                () = shutdown.wait() => return,
            };
            tracing::info!(
                signal,
                "shutdown requested (a second Ctrl-C or SIGTERM exits at once)"
            );
            shutdown.trigger();
            // A second signal: the operator wants out now. Nothing acknowledged is lost (every
            // acknowledged change is in Redis); leases expire after their TTL.
            let again = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::warn!(signal = again, "second signal: exiting now");
            std::process::exit(130);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn starts_untriggered_and_trigger_is_shared_by_clones() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        assert!(!other.is_triggered());
        shutdown.trigger();
        shutdown.trigger();
        assert!(other.is_triggered());
    }

    #[tokio::test]
    async fn wait_completes_after_trigger() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait returns after trigger")
            .expect("waiter task does not panic");
        // Already triggered: returns at once.
        shutdown.wait().await;
    }

    #[tokio::test]
    async fn signal_listener_ends_when_triggered_otherwise() {
        let shutdown = Shutdown::new();
        let listener = shutdown
            .listen_for_signals()
            .expect("signal handlers install");
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), listener)
            .await
            .expect("listener ends")
            .expect("listener does not panic");
    }

    #[tokio::test]
    async fn sigterm_triggers_shutdown() {
        let shutdown = Shutdown::new();
        let listener = shutdown
            .listen_for_signals()
            .expect("signal handlers install");
        // SAFETY: kill(2) on our own pid with a signal that now has a handler installed above.
        let rc = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        assert_eq!(rc, 0);
        // The listener stays, waiting for a second signal (which exits the process): what the
        // first one does is trigger the shutdown.
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .expect("listener sees SIGTERM");
        assert!(shutdown.is_triggered());
        listener.abort();
    }
}
