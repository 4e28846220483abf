//! placeholder: the admin client.
