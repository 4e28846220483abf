//! Integration tests: the real daemon over a private Redis, driven through the admin protocol
//! with the simulated clock.

mod bad_input;
mod baskets;
mod cluster;
mod durability;
mod http;
mod lifecycle;
mod partitions;
mod replicas;
mod replication;
mod shutdown;
mod stats;
mod support;
mod webhooks;
