//! The admin request bodies and query strings read exactly as the handlers read them, without
//! a server: the entry points of the fuzz targets in `fuzz/` (see docs/fuzzing.md).

use axum::extract::Query;
use axum::http::Uri;

use super::audit::AuditParams;
use super::clients::{CreateClient, Page, RotateSecret, UpdateClient};
use super::extract::parse_json;
use super::tokens::IssuedBefore;
use crate::http::error::AdminError;
use crate::service::clients::{ClientChanges, ClientSpec};

/// A `POST /admin/clients` body, as [`super::create_client`] reads it.
///
/// # Errors
/// The 400 the handler answers.
pub fn create_client(bytes: &[u8]) -> Result<ClientSpec, AdminError> {
    parse_json::<CreateClient>(bytes)?.spec()
}

/// A `PATCH /admin/clients/{id}` body, as [`super::update_client`] reads it.
///
/// # Errors
/// The 400 the handler answers.
pub fn update_client(bytes: &[u8]) -> Result<ClientChanges, AdminError> {
    parse_json::<UpdateClient>(bytes)?.changes()
}

/// A `POST /admin/clients/{id}/rotate-secret` body: `keep_old`.
///
/// # Errors
/// The 400 the handler answers.
pub fn rotate_secret(bytes: &[u8]) -> Result<u32, AdminError> {
    Ok(parse_json::<RotateSecret>(bytes)?.keep_old_seconds())
}

/// A `POST /admin/tokens/revoke-issued-before` body: `before`.
///
/// # Errors
/// The 400 the handler answers.
pub fn revoke_issued_before(bytes: &[u8]) -> Result<i64, AdminError> {
    Ok(parse_json::<IssuedBefore>(bytes)?.before)
}

/// The query strings of `GET /admin/clients` and `GET /admin/audit`; true if each parses.
#[must_use]
pub fn queries(uri: &Uri) -> (bool, bool) {
    (
        Query::<Page>::try_from_uri(uri).is_ok(),
        Query::<AuditParams>::try_from_uri(uri).is_ok(),
    )
}
