//! recur: a subscription order scheduler.
//!
//! # Layout
//! - [`domain`]: the pure order lifecycle — model, money, calendar, `apply` / `fire` /
//!   `next_due`. No I/O, no clock source, no actors, no Redis.
//! - [`clock`]: the `Clock` (system or simulated) every other module reads time through.
//! - [`config`]: layered settings (config/default.toml, file, `RECUR_` env, flags).
//! - [`store`]: Redis keys, commits, and the embedded `redis-server` launcher.
//! - [`shutdown`]: the one type that owns graceful shutdown.
//! - [`telemetry`]: tracing setup.

pub mod admin;
pub mod clock;
pub mod config;
pub mod domain;
pub mod shutdown;
pub mod store;
pub mod telemetry;
