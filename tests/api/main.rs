//! Tessera's integration tests: the real server on a random loopback port, a fresh SQLite file
//! (or PostgreSQL database) per test, driven over HTTP (and the real `tessera` binary for the
//! CLI and for several instances on one database).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Shared with the store tests; each target uses part of it.
#[allow(dead_code)]
#[path = "../common/pg.rs"]
mod pg;

mod helpers;

mod admin;
mod admin_input;
mod cleanup;
mod cli;
mod conflicts;
mod connections;
mod crash;
mod discovery;
mod dpop;
mod faults;
mod interop;
mod interop_clients;
mod introspect;
mod introspect_jwt;
mod jwt;
mod keys;
mod mtls;
mod openapi;
mod operations;
mod ping;
mod postgres;
mod postgres_tls;
mod private_key_jwt;
mod refresh;
mod revoke;
mod robustness;
mod stalls;
mod storage;
mod tls;
mod token;
