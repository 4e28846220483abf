//! recur: a subscription order scheduler.
//!
//! # Layout
//! Listed bottom-up: each module imports only those above it in this list.
//! - [`telemetry`]: tracing setup, and the masking of passwords in printed URLs that every
//!   log line, error and reply goes through (SPEC 11.1). Imports nothing of recur.
//! - [`domain`]: the pure order lifecycle — model, money, calendar, `apply` / `fire` /
//!   `next_due`. No I/O, no clock source, no actors, no Redis.
//! - [`wire`]: the admin protocol's wire types (requests, replies, kept replies), shared by the
//!   actors that keep replies and the admin side that sends them.
//! - [`clock`]: the `Clock` (system or simulated) and the scheduler's `TimerWake`.
//! - [`metrics`], [`shutdown`]: the Prometheus registry, graceful shutdown.
//! - [`store`]: Redis keys, commits, loading, and the embedded `redis-server` launcher.
//! - [`config`]: layered settings (config/default.toml, file, `RECUR_` env, flags).
//! - [`ownership`]: the partition leases this daemon holds, with their fencing tokens.
//! - [`actors`]: virtual order and customer actors, reached through the `Actors` handle.
//! - [`scheduler`]: the `Scheduler` handle: fires due timers (system-clock loop,
//!   `advanceClock`, start-up catch-up) and cron jobs.
//! - [`health`]: readiness (Redis, catch-up, the lease loop) and the gauges read off Redis.
//! - [`webhooks`]: signed, retried, ordered deliveries of the partitions' events to HTTP
//!   endpoints.
//! - [`admin`]: typed admin commands, the pub/sub and stream server, and the client.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the `/v1` API with its tokens and OpenAPI
//!   document (axum).
//! - `daemon`: [`run`], which builds the handles bottom-up and runs them (private: only the
//!   entry points call it, through [`run`] and [`run_with`]).

pub mod actors;
pub mod admin;
pub mod clock;
pub mod config;
pub mod console;
mod daemon;
pub mod domain;
pub mod health;
pub mod http;
pub mod metrics;
pub mod ownership;
pub mod scheduler;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod wire;

pub use daemon::{run, run_with, Ready, RunError};
