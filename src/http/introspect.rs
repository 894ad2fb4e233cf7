//! `POST /oauth2/introspect` (RFC 7662): authenticated with client credentials like the token
//! endpoint; the answer is `{"active": false}` or the token's claims.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::AuthenticatedClient;
use super::error::ApiError;
#[allow(unused_imports)]
use super::openapi::{OAuthErrors, TokenFieldRequestDoc};
use crate::domain::jwt::Confirmation;

/// The introspection response (RFC 7662 §2.2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntrospectionResponse {
    /// Whether the token is currently active.
    pub active: bool,
    /// Space-delimited scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token_type: Option<&'static str>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Subject (the client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The key a DPoP-bound access token is bound to (RFC 9449 §6.2): `{"jkt": thumbprint}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cnf: Option<Confirmation>,
}

/// The handler.
#[utoipa::path(
    post,
    path = "/oauth2/introspect",
    tag = "oauth2",
    security(("client_basic" = [])),
    request_body(content(
        (TokenFieldRequestDoc = "application/json"),
        (TokenFieldRequestDoc = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "`{\"active\": false}` or the token's claims", body = IntrospectionResponse),
        OAuthErrors,
    )
)]
pub async fn introspect(
    State(state): State<Arc<AppState>>,
    auth: AuthenticatedClient,
) -> Result<Response, ApiError> {
    let token = auth.form.token().map_err(|e| auth.error(e))?;
    let info = state
        .tessera
        .introspect(&auth.client, token)
        .await
        .map_err(|e| auth.error(e))?;
    let body = match info {
        None => IntrospectionResponse {
            active: false,
            scope: None,
            client_id: None,
            token_type: None,
            exp: None,
            iat: None,
            nbf: None,
            sub: None,
            aud: None,
            iss: None,
            jti: None,
            cnf: None,
        },
        Some(i) => IntrospectionResponse {
            active: true,
            sub: Some(i.client_id.clone()),
            scope: Some(i.scope),
            client_id: Some(i.client_id),
            // RFC 9449 §6.2: a DPoP-bound access token introspects as `DPoP`.
            token_type: Some(if i.dpop_jkt.is_some() {
                "DPoP"
            } else {
                i.token_type
            }),
            exp: Some(i.exp),
            iat: Some(i.iat),
            nbf: Some(i.nbf),
            aud: i.aud,
            iss: Some(i.iss),
            jti: Some(i.jti),
            cnf: i.dpop_jkt.map(|jkt| Confirmation { jkt }),
        },
    };
    Ok(Json(body).into_response())
}
