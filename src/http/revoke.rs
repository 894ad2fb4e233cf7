//! `POST /oauth2/revoke` (RFC 7009).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
#[allow(unused_imports)]
use super::openapi::{OAuthErrors, TokenFieldRequestDoc};
use super::request::OAuthRequest;
use super::token::authenticate;
use crate::domain::audit::Actor;
use crate::domain::client::Profile;
use crate::domain::error::{ErrorCode, OAuthError};

/// The `token` field, with `token_type_hint` checked (RFC 7009 §2.1, RFC 7662 §2.1). The hint
/// is otherwise not needed: every Tessera token says what it is (prefix or JWT shape).
///
/// # Errors
/// A missing token, or a hint other than `access_token` / `refresh_token`.
pub fn token_field(req: &OAuthRequest, profile: Profile) -> Result<&str, ApiError> {
    let token = req
        .get("token")
        .ok_or_else(|| ApiError::oauth(profile, OAuthError::missing("token")))?;
    match req.get("token_type_hint") {
        None | Some("access_token" | "refresh_token") => Ok(token),
        Some(_) => Err(ApiError::oauth(
            profile,
            OAuthError::field(
                ErrorCode::UnsupportedTokenType,
                "token_type_hint",
                "token_type_hint must be access_token or refresh_token",
            ),
        )),
    }
}

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
    Extension(actor): Extension<Actor>,
    req: OAuthRequest,
) -> Result<Response, ApiError> {
    let client = authenticate(&state, &req, &actor).await?;
    let profile = state.tessera.profile_of(&client);
    let token = token_field(&req, profile)?;
    state
        .tessera
        .revoke(&client, token, &actor)
        .await
        .map_err(|e| ApiError::service(profile, e))?;
    Ok(match profile {
        Profile::Rfc6749 => StatusCode::OK.into_response(),
        Profile::Seed | Profile::Moov => StatusCode::NO_CONTENT.into_response(),
    })
}
