//! `POST /oauth2/token`: run the grant for the authenticated client, answer an AuthToken in its
//! wire profile.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::AuthenticatedClient;
use super::dpop;
use super::error::ApiError;
#[allow(unused_imports)]
use super::openapi::{OAuthErrors, TokenRequestDoc, TokenTypeDoc};
use crate::domain::client::Profile;
use crate::domain::error::OAuthError;
use crate::service::tokens::{Issued, TokenRequest};

/// The AuthToken (SPEC §1).
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthToken {
    /// `DPoP` for a DPoP-bound token in every profile; else `opaque`/`jwt` (seed profile) or
    /// `Bearer`.
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
        // A DPoP-bound token is `DPoP` whatever the profile (RFC 9449 §5): a client that sends
        // proofs is a DPoP client, and its library reads the binding from `token_type`.
        let token_type = if issued.dpop_bound {
            "DPoP"
        } else {
            token_type
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

/// The handler. When DPoP nonces are on, every answer carries a fresh `DPoP-Nonce`.
#[utoipa::path(
    post,
    path = "/oauth2/token",
    tag = "oauth2",
    security(("client_basic" = [])),
    params(
        ("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449 §4): a compact JWS with `typ` `dpop+jwt`, `htm` `POST` and `htu` this endpoint's URL. With it the access token is DPoP-bound (`token_type: DPoP`). At most one."),
    ),
    request_body(content(
        (TokenRequestDoc = "application/json"),
        (TokenRequestDoc = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "An AuthToken, shaped by the client's wire profile", body = AuthToken,
            headers(("DPoP-Nonce" = String, description = "A fresh DPoP nonce, when the server requires them (also on errors)"))),
        OAuthErrors,
    )
)]
pub async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    auth: AuthenticatedClient,
) -> Response {
    let result = issue(&state, &headers, &auth).await;
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    dpop::with_nonce(resp, state.tessera.dpop_nonce())
}

async fn issue(
    state: &AppState,
    headers: &HeaderMap,
    auth: &AuthenticatedClient,
) -> Result<Response, ApiError> {
    let dpop = dpop::proof_header(headers).map_err(|e| auth.error(OAuthError::from(e)))?;
    let form = &auth.form;
    let request = TokenRequest {
        grant_type: form.get("grant_type"),
        scope: form.get("scope"),
        refresh_token: form.get("refresh_token"),
        client_type: form.get("client_type"),
        origin: form.origin(),
        resource: form.get("resource"),
        dpop,
    };
    let issued = state
        .tessera
        .token(&auth.client, &request, &auth.actor)
        .await
        .map_err(|e| auth.error(e))?;
    Ok(Json(AuthToken::render(auth.profile, issued)).into_response())
}
