//! `POST /oauth2/revoke` (RFC 7009).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::AuthenticatedClient;
use super::error::ApiError;
#[allow(unused_imports)]
use super::openapi::{OAuthErrors, TokenFieldRequestDoc};
use crate::domain::client::Profile;

/// The handler: `204` in the Moov profiles, `200` in `rfc6749`, for any token that is now
/// unusable (including unknown ones); `400` for another client's token.
#[utoipa::path(
    post,
    path = "/oauth2/revoke",
    tag = "oauth2",
    security(("client_basic" = [])),
    request_body(content(
        (TokenFieldRequestDoc = "application/json"),
        (TokenFieldRequestDoc = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke (rfc6749 profile)"),
        (status = 204, description = "Revoked, or nothing to revoke (seed and moov profiles)"),
        OAuthErrors,
    )
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    auth: AuthenticatedClient,
) -> Result<Response, ApiError> {
    let token = auth.form.token().map_err(|e| auth.error(e))?;
    state
        .tessera
        .revoke(&auth.client, token, &auth.actor)
        .await
        .map_err(|e| auth.error(e))?;
    Ok(match auth.profile {
        Profile::Rfc6749 => StatusCode::OK.into_response(),
        Profile::Seed | Profile::Moov => StatusCode::NO_CONTENT.into_response(),
    })
}
