//! `/admin/keys`: list, rotate, retire and revoke signing keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AdminResult;
use super::extract::{AdminActor, AdminPath};
use crate::http::AppState;
#[allow(unused_imports)]
use crate::http::openapi::GenericError;
#[allow(unused_imports)]
use crate::service::signing::{KeyView, Rotation};

#[utoipa::path(get, path = "/admin/keys", tag = "keys", responses((status = 200, body = Vec<KeyView>), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn list_keys(State(state): State<Arc<AppState>>) -> AdminResult {
    Ok(Json(state.tessera.list_keys().await?).into_response())
}

#[utoipa::path(post, path = "/admin/keys/rotate", tag = "keys", responses((status = 200, body = Rotation), (status = 409, description = "Another rotation, retirement or revocation happened at the same time; nothing was changed by this call, retry if still wanted (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn rotate_keys(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
) -> AdminResult {
    Ok(Json(state.tessera.rotate_keys(&actor).await?).into_response())
}

#[utoipa::path(post, path = "/admin/keys/{kid}/retire", tag = "keys", params(("kid" = String, Path)), responses((status = 204, description = "Retired"), (status = 409, description = "Another rotation, retirement or revocation happened at the same time; nothing was changed by this call, retry if still wanted (Retry-After)", body = GenericError), (status = 400, description = "The key is revoked, or the path parameter is not valid UTF-8", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn retire_key(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(kid): AdminPath<String>,
) -> AdminResult {
    state.tessera.retire_key(&kid, &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/keys/{kid}/revoke", tag = "keys", params(("kid" = String, Path)), responses((status = 204, description = "Revoked"), (status = 409, description = "Another rotation, retirement or revocation happened at the same time; nothing was changed by this call, retry if still wanted (Retry-After)", body = GenericError), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(kid): AdminPath<String>,
) -> AdminResult {
    state.tessera.revoke_key(&kid, &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
