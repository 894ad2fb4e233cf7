//! Tessera: an OAuth 2.0 token server for machine clients.
//!
//! The crate is layered so that data flows one way — request → domain types → domain decision
//! → store → response:
//!
//! - [`domain`]: Tessera's own rules (no HTTP, no SQL);
//! - [`store`]: persistence behind one trait, one implementation per database;
//! - [`service`]: the application, wiring domain decisions to the store;
//! - [`http`]: the axum router and the single place errors become responses;
//! - [`cli`] and [`config`]: the `tessera` binary's commands and settings.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod service;
pub mod store;

/// The parsers a client or operator reaches, gathered for the fuzz targets in `fuzz/`
/// (docs/fuzzing.md). Not an API: names here may change with the targets.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::domain::client::{ClientType, normalize_origin, parse_origin, parse_resource};
    pub use crate::domain::jwt::{decode as decode_jwt, looks_like_jwt};
    pub use crate::domain::scope::{Registry, Scope, ScopePattern, ScopeSet, parse_patterns};
    pub use crate::domain::token::{OpaqueKind, verify as verify_opaque};
    pub use crate::http::admin::fuzzing as admin;
    pub use crate::http::middleware::valid_moov_version;
    pub use crate::http::request::{parse_basic, parse_body};
    pub use crate::service::clients::check_changes;
}
