//! recur: a subscription order scheduler.
//!
//! # Layout
//! - [`domain`]: the pure order lifecycle — model, money, calendar, `apply` / `fire` /
//!   `next_due`. No I/O, no clock source, no actors, no Redis.
//! - [`clock`]: the `Clock` (system or simulated) every other module reads time through.
//! - [`config`]: layered settings (config/default.toml, file, `RECUR_` env, flags).
//! - [`store`]: Redis keys, commits, and the embedded `redis-server` launcher.
//! - [`shutdown`]: the one type that owns graceful shutdown.
//! - [`actors`]: virtual order actors and their registry.
//! - [`scheduler`]: fires due timers (system clock loop, `advanceClock`) and cron jobs.
//! - [`admin`]: the admin protocol: types, client, pub/sub and stream server.
//! - [`daemon`]: [`daemon::run`], which wires it all together.
//! - [`metrics`]: counters for operators.
//! - [`telemetry`]: tracing setup.

pub mod actors;
pub mod admin;
pub mod bench;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod metrics;
pub mod scheduler;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use daemon::{run, run_with, Ready, RunError};
