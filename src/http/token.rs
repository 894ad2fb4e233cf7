//! `POST /oauth2/token`: authenticate the client, run the grant, answer an AuthToken in the
//! client's wire profile.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
#[allow(unused_imports)]
use super::openapi::{OAuthErrors, TokenRequestDoc, TokenTypeDoc};
use super::request::OAuthRequest;
use crate::domain::audit::Actor;
use crate::domain::client::{Client, Profile};
use crate::service::tokens::{Issued, TokenRequest};

/// The AuthToken (SPEC §1).
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthToken {
    /// `opaque`/`jwt` (seed profile) or `Bearer`.
    #[schema(value_type = TokenTypeDoc)]
    pub token_type: &'static str,
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// Unix expiry (seed, moov) or lifetime in seconds (rfc6749).
    pub expires_in: i64,
    /// Space-delimited granted scopes.
    pub scope: String,
}

impl AuthToken {
    /// Shapes an issued token for a profile.
    #[must_use]
    pub fn render(profile: Profile, issued: Issued) -> Self {
        let (token_type, expires_in) = match profile {
            Profile::Seed => (issued.format.as_str(), issued.expires_at),
            Profile::Moov => ("Bearer", issued.expires_at),
            Profile::Rfc6749 => ("Bearer", i64::from(issued.lifetime)),
        };
        Self {
            token_type,
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_in,
            scope: issued.scope.to_string(),
        }
    }
}

/// Authenticates the client of an OAuth request; errors are in the server's default profile.
///
/// # Errors
/// The `invalid_client`/`invalid_request` answer.
pub async fn authenticate(
    state: &AppState,
    req: &OAuthRequest,
    actor: &Actor,
) -> Result<Client, ApiError> {
    let default = state.tessera.policy().default_profile;
    let source = actor.source.as_deref();
    state
        .limits
        .source(source)
        .map_err(|l| ApiError::limited(default, l))?;
    let creds = req
        .credentials()
        .map_err(|(e, challenge)| ApiError::oauth(default, e).with_basic_challenge(challenge))?;
    let client = state
        .tessera
        .authenticate(&creds.client_id, &creds.secret, actor)
        .await
        .map_err(|e| {
            let err = ApiError::service(default, e).with_basic_challenge(creds.basic);
            if err.is_invalid_client()
                && let Err(l) = state.limits.auth_failure(&creds.client_id, source)
            {
                return ApiError::limited(default, l);
            }
            err
        })?;
    state
        .limits
        .client(&client.id)
        .map_err(|l| ApiError::limited(state.tessera.profile_of(&client), l))?;
    tracing::Span::current().record("client_id", client.id.as_str());
    Ok(client)
}

/// The handler.
#[utoipa::path(
    post,
    path = "/oauth2/token",
    tag = "oauth2",
    security(("client_basic" = [])),
    request_body(content(
        (TokenRequestDoc = "application/json"),
        (TokenRequestDoc = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "An AuthToken, shaped by the client's wire profile", body = AuthToken),
        OAuthErrors,
    )
)]
pub async fn token(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    req: OAuthRequest,
) -> Result<Response, ApiError> {
    let client = authenticate(&state, &req, &actor).await?;
    let profile = state.tessera.profile_of(&client);
    let request = TokenRequest {
        grant_type: req.get("grant_type"),
        scope: req.get("scope"),
        refresh_token: req.get("refresh_token"),
        client_type: req.get("client_type"),
        origin: req.origin(),
        resource: req.get("resource"),
    };
    let issued = state
        .tessera
        .token(&client, &request, &actor)
        .await
        .map_err(|e| ApiError::service(profile, e))?;
    Ok(Json(AuthToken::render(profile, issued)).into_response())
}
