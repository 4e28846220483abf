//! Redis storage: keys, commits, and the embedded `redis-server` launcher.

pub mod embedded;
pub mod keys;
