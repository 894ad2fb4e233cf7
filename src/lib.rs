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
