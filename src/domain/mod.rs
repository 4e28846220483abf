//! The pure order lifecycle: model, money, calendar, events and the rules that move an order
//! through its life. Nothing here does I/O or reads a clock: every function takes `now` (or the
//! due instant) as an argument, so every rule is testable without Redis, actors or time.
//!
//! The entry points are [`lifecycle::create`], [`lifecycle::apply`], [`lifecycle::fire`] and
//! [`lifecycle::next_due`].

pub mod basket;
pub mod calendar;
pub mod command;
pub mod decide;
pub mod error;
pub mod event;
pub mod lifecycle;
pub mod money;
pub mod order;
pub mod stats;
pub mod time;

pub use error::{DomainError, ErrorCode};
pub use event::{change_head_json, Event, EventType};
pub use lifecycle::{apply, create, fire, fire_after_downtime, next_due, Policy, Transition};
pub use order::Order;
pub use time::Instant;
