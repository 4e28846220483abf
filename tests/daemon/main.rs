//! Integration tests: the real daemon over a private Redis, driven through the admin protocol
//! with the simulated clock.

mod api;
mod bad_input;
mod baskets;
mod batched_fires;
mod cluster;
mod console;
mod durability;
mod embedded;
mod http;
mod identity;
mod lifecycle;
mod partitions;
mod previews;
mod replicas;
mod replication;
mod sentinel;
mod shutdown;
mod stats;
mod support;
mod test_clocks;
mod tls;
mod webhooks;
