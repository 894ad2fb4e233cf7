//! Tessera's integration tests: the real server on a random loopback port, a fresh SQLite file
//! per test, driven over HTTP (and the real `tessera` binary for the CLI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod helpers;

mod admin;
mod cli;
mod discovery;
mod interop;
mod introspect;
mod jwt;
mod keys;
mod openapi;
mod operations;
mod ping;
mod refresh;
mod revoke;
mod robustness;
mod storage;
mod token;
