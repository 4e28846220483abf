//! Virtual actors: one [`order::OrderActor`] per order, activated by the [`registry`] when a
//! message or a due timer needs it and passivated when idle. State lives in Redis; an actor
//! only caches it and serializes everything that happens to its order.

pub mod customer;
pub mod order;
pub mod registry;

/// Why an actor could not do what it was asked (transient: reply INTERNAL, retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the order actor is unavailable: {0}")]
    Mailbox(String),
    #[error("the order changed concurrently too many times; retry")]
    Contended,
}
