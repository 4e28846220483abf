//! Redis storage.
