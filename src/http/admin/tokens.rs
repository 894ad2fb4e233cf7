//! Bulk revocation: every token of a client, one refresh family, everything issued before a
//! time.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AdminResult;
use super::extract::{AdminActor, AdminJson, AdminPath};
use crate::http::AppState;
#[allow(unused_imports)]
use crate::http::openapi::GenericError;

/// Result of revoking a client's tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedFamilies {
    /// The client.
    pub client_id: String,
    /// Families revoked.
    pub revoked_families: u64,
}

/// Result of revoking by issue time.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedTokens {
    /// The cutoff (Unix seconds).
    pub issued_before: i64,
    /// Tokens revoked.
    pub revoked_tokens: u64,
}

#[utoipa::path(post, path = "/admin/clients/{id}/revoke-tokens", tag = "revocation", params(("id" = String, Path)), responses((status = 200, body = RevokedFamilies), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_client_tokens(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    let n = state.tessera.revoke_client_tokens(&id, &actor).await?;
    Ok(Json(RevokedFamilies {
        client_id: id,
        revoked_families: n,
    })
    .into_response())
}

#[utoipa::path(post, path = "/admin/families/{id}/revoke", tag = "revocation", params(("id" = String, Path)), responses((status = 204, description = "Revoked (idempotent)"), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_family(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    state.tessera.revoke_family_by_id(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuedBefore {
    pub(super) before: i64,
}

#[utoipa::path(post, path = "/admin/tokens/revoke-issued-before", tag = "revocation", request_body = IssuedBefore, responses((status = 200, body = RevokedTokens), (status = 400, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_issued_before(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminJson(b): AdminJson<IssuedBefore>,
) -> AdminResult {
    let n = state.tessera.revoke_issued_before(b.before, &actor).await?;
    Ok(Json(RevokedTokens {
        issued_before: b.before,
        revoked_tokens: n,
    })
    .into_response())
}
