//! The pure order lifecycle.
