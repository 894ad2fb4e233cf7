//! `GET /ping`: Moov's credential check, and the reference for how a resource server checks a
//! Tessera token.
//!
//! - `Authorization: Bearer <access token>` holding `/ping.read` → `200`, no body.
//! - `Authorization: Basic` with valid client credentials → `200`, no body.
//! - missing, malformed, invalid, expired or revoked credentials → `401` with
//!   `WWW-Authenticate` (RFC 6750 §3: `error="invalid_token"` when a token was presented).
//! - a valid token without `/ping.read` → `403` with
//!   `WWW-Authenticate: Bearer error="insufficient_scope", scope="/ping.read"`.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::check_secret;
use super::error::{ApiError, BASIC_CHALLENGE};
#[allow(unused_imports)]
use super::openapi::GenericError;
use super::request::parse_basic;
use crate::domain::audit::Actor;
use crate::service::tokens::BearerError;

/// The scope `/ping` requires.
pub const PING_SCOPE: &str = "/ping.read";

fn challenge(status: StatusCode, www: &str, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(www) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The handler.
#[utoipa::path(
    get,
    path = "/ping",
    tag = "oauth2",
    security(("access_token" = []), ("client_basic" = [])),
    responses(
        (status = 200, description = "Valid credentials (no body)"),
        (status = 401, description = "Missing or invalid credentials; see `WWW-Authenticate`", body = GenericError),
        (status = 403, description = "The token lacks `/ping.read`", body = GenericError),
        (status = 429, description = "Basic credentials rate limited; see `Retry-After`", body = GenericError),
        (status = 503, description = "Store unavailable", body = GenericError),
    )
)]
pub async fn ping(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let Some((scheme, value)) = auth.and_then(|a| a.split_once(' ')) else {
        return Ok(challenge(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"tessera\", Basic realm=\"tessera\"",
            "invalid_request",
            "credentials are required: a Bearer access token or HTTP Basic client credentials",
        ));
    };
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return match state.tessera.check_bearer(value).await {
            Ok(grant) => {
                tracing::Span::current().record("client_id", grant.client_id.as_str());
                if grant.scope.contains(PING_SCOPE) {
                    Ok(StatusCode::OK.into_response())
                } else {
                    Ok(challenge(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "Bearer realm=\"tessera\", error=\"insufficient_scope\", scope=\"{PING_SCOPE}\""
                        ),
                        "insufficient_scope",
                        "the access token does not hold /ping.read",
                    ))
                }
            }
            Err(BearerError::Invalid) => Ok(challenge(
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"tessera\", error=\"invalid_token\", error_description=\"the access token is invalid, expired or revoked\"",
                "invalid_token",
                "the access token is invalid, expired or revoked",
            )),
            Err(BearerError::Service(e)) => {
                Err(ApiError::service(state.tessera.policy().default_profile, e))
            }
        };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Some(Ok((id, secret))) = parse_basic(&headers) else {
            return Ok(challenge(
                StatusCode::UNAUTHORIZED,
                BASIC_CHALLENGE,
                "invalid_client",
                "malformed Basic credentials",
            ));
        };
        // Basic on /ping checks a secret: the same limits as the token endpoint apply.
        state
            .limits
            .source(actor.source.as_deref())
            .map_err(|l| ApiError::limited(state.tessera.policy().default_profile, l))?;
        check_secret(
            &state,
            &id,
            &secret,
            crate::domain::client::AuthMethod::ClientSecretBasic,
            &actor,
        )
        .await?;
        return Ok(StatusCode::OK.into_response());
    }
    Ok(challenge(
        StatusCode::UNAUTHORIZED,
        "Bearer realm=\"tessera\", Basic realm=\"tessera\"",
        "invalid_request",
        "unsupported authorization scheme: use Bearer or Basic",
    ))
}
