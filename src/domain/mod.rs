//! Tessera's own rules, free of HTTP and SQL.
//!
//! Everything here is plain Rust over plain data: client identities and secrets, scopes and
//! scope patterns, token formats and how they are minted and checked, refresh-family rules,
//! signing keys, and the OAuth error vocabulary. Time is passed in (see [`clock`]) so the rules
//! that depend on it can be tested without waiting.

pub mod audit;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod dpop;
pub mod error;
pub mod grant;
pub mod jose;
pub mod jwt;
pub mod scope;
pub mod token;
