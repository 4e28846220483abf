//! The admin interface: protocol types, the client (used by `recur admin` and the tests), and
//! the server side that listens on pub/sub and the command stream.

pub mod carts;
pub mod client;
pub mod dispatch;
pub mod protocol;
pub mod server;
