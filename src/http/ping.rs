//! `GET /ping`: Moov's credential check, and the reference for how a resource server checks a
//! Tessera token.
//!
//! - `Authorization: Bearer <access token>` holding `/ping.read` → `200`, no body.
//! - `Authorization: DPoP <access token>` with a `DPoP` proof (RFC 9449 §7) for a DPoP-bound
//!   token holding `/ping.read` → `200`, no body. The proof is checked as at the token endpoint
//!   (`htm` the request's method, `htu` the issuer's URL + `/ping`), plus `ath` (the token's
//!   hash) and its key, which must be the one the token is bound to; its `jti` is used once.
//! - `Authorization: Basic` with valid client credentials → `200`, no body.
//! - missing, malformed, invalid, expired or revoked credentials → `401` with
//!   `WWW-Authenticate` (RFC 6750 §3: `error="invalid_token"` when a token was presented;
//!   RFC 9449 §7.1: a `DPoP` challenge with `algs`, and `error="invalid_token"`,
//!   `"invalid_dpop_proof"` or `"use_dpop_nonce"` for a DPoP request). A DPoP-bound token sent
//!   as `Bearer` is refused (`401`, DPoP challenge, `invalid_token`): without its proof it is
//!   worth nothing, which is the point of binding it.
//! - a valid token without `/ping.read` → `403` with
//!   `WWW-Authenticate: Bearer error="insufficient_scope", scope="/ping.read"` (`DPoP …` for a
//!   DPoP request).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::check_secret;
use super::dpop::{proof_header, with_nonce};
use super::error::{ApiError, BASIC_CHALLENGE};
#[allow(unused_imports)]
use super::openapi::GenericError;
use super::request::parse_basic;
use crate::domain::audit::Actor;
use crate::domain::dpop::{ProofError, algorithms};
use crate::service::ServiceError;
use crate::service::dpop::{PING_PATH, ProofTarget};
use crate::service::tokens::{BearerError, BearerGrant};

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

/// The `DPoP` challenge (RFC 9449 §7.1) with the accepted algorithms, and an error if given.
fn dpop_challenge(error: Option<(&str, &str)>) -> String {
    let algs = algorithms(false)
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    match error {
        None => format!("DPoP algs=\"{algs}\""),
        Some((code, description)) => format!(
            "DPoP algs=\"{algs}\", error=\"{code}\", error_description=\"{}\"",
            header_text(description)
        ),
    }
}

/// `text` as a quoted-string's content in a header: visible ASCII and spaces, without `"` and
/// `\` (a reason may name an RFC section with `§`, which a header cannot carry).
fn header_text(text: &str) -> String {
    text.chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
        .collect()
}

/// A `401` for a DPoP request, with its challenge.
fn dpop_refusal(code: &str, description: &str) -> Response {
    challenge(
        StatusCode::UNAUTHORIZED,
        &dpop_challenge(Some((code, description))),
        code,
        description,
    )
}

/// `200` if the token holds `/ping.read`, else `403` with a challenge of `scheme`.
fn scope_check(grant: &BearerGrant, scheme: &str) -> Response {
    tracing::Span::current().record("client_id", grant.client_id.as_str());
    if grant.scope.contains(PING_SCOPE) {
        return StatusCode::OK.into_response();
    }
    let www = if scheme == "DPoP" {
        format!(
            "{}, scope=\"{PING_SCOPE}\"",
            dpop_challenge(Some((
                "insufficient_scope",
                "the access token does not hold /ping.read"
            )))
        )
    } else {
        format!("Bearer realm=\"tessera\", error=\"insufficient_scope\", scope=\"{PING_SCOPE}\"")
    };
    challenge(
        StatusCode::FORBIDDEN,
        &www,
        "insufficient_scope",
        "the access token does not hold /ping.read",
    )
}

/// `Authorization: DPoP <token>`: the token must be valid and DPoP-bound, the proof valid for
/// this request and made with the token's key, and its `jti` new.
async fn dpop_request(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    token: &str,
) -> Result<Response, ApiError> {
    let profile = state.tessera.policy().default_profile;
    let grant = match state.tessera.check_bearer(token).await {
        Ok(grant) => grant,
        Err(BearerError::Invalid) => {
            return Ok(dpop_refusal(
                "invalid_token",
                "the access token is invalid, expired or revoked",
            ));
        }
        Err(BearerError::Service(e)) => return Err(ApiError::service(profile, e)),
    };
    let Some(bound_to) = grant.dpop_jkt.as_deref() else {
        return Ok(dpop_refusal(
            "invalid_token",
            "the access token is not DPoP-bound: send it as a Bearer token",
        ));
    };
    let target = ProofTarget {
        method: method.as_str(),
        path: PING_PATH,
        access_token: Some(token),
    };
    let checked = proof_header(headers).and_then(|p| {
        let p = p.ok_or_else(|| ProofError::Invalid("a DPoP proof is required".into()))?;
        state.tessera.check_proof(p, target, None)
    });
    let proof = match checked {
        Ok(proof) => proof,
        Err(ProofError::UseNonce) => {
            let resp = dpop_refusal(
                "use_dpop_nonce",
                "sign the proof with the nonce in DPoP-Nonce",
            );
            return Ok(with_nonce(resp, state.tessera.dpop_nonce()));
        }
        Err(ProofError::Invalid(why)) => {
            return Ok(dpop_refusal(
                "invalid_dpop_proof",
                &format!("DPoP proof: {why}"),
            ));
        }
    };
    if proof.jkt() != bound_to {
        return Ok(dpop_refusal(
            "invalid_dpop_proof",
            "DPoP proof: it is not signed with the key the access token is bound to",
        ));
    }
    let uses = match state.tessera.use_proof(&proof).await {
        Ok(uses) => uses,
        Err(ServiceError::OAuth(e)) => {
            return Ok(dpop_refusal("invalid_dpop_proof", &e.description));
        }
        Err(e) => return Err(ApiError::service(profile, e)),
    };
    let resp = scope_check(&grant, "DPoP");
    // The proof counts as used only if the request succeeded.
    if !resp.status().is_success() {
        uses.release().await;
    }
    Ok(with_nonce(resp, state.tessera.dpop_nonce()))
}

/// The handler.
#[utoipa::path(
    get,
    path = "/ping",
    tag = "oauth2",
    security(("access_token" = []), ("client_basic" = [])),
    params(
        ("DPoP" = Option<String>, Header, description = "With `Authorization: DPoP`: a DPoP proof with `htm` the method, `htu` this endpoint's URL and `ath` the token's hash (RFC 9449 §7)."),
    ),
    responses(
        (status = 200, description = "Valid credentials (no body)",
            headers(("DPoP-Nonce" = String, description = "A fresh DPoP nonce, for DPoP requests when the server requires them"))),
        (status = 401, description = "Missing or invalid credentials or DPoP proof; see `WWW-Authenticate` (and `DPoP-Nonce` with `use_dpop_nonce`)", body = GenericError),
        (status = 403, description = "The token lacks `/ping.read`", body = GenericError),
        (status = 429, description = "Basic credentials rate limited; see `Retry-After`", body = GenericError),
        (status = 503, description = "Store unavailable", body = GenericError),
    )
)]
pub async fn ping(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let no_credentials = format!(
        "Bearer realm=\"tessera\", {}, Basic realm=\"tessera\"",
        dpop_challenge(None)
    );
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let Some((scheme, value)) = auth.and_then(|a| a.split_once(' ')) else {
        return Ok(challenge(
            StatusCode::UNAUTHORIZED,
            &no_credentials,
            "invalid_request",
            "credentials are required: an access token (Bearer or DPoP) or HTTP Basic client credentials",
        ));
    };
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("dpop") {
        return dpop_request(&state, &method, &headers, value).await;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return match state.tessera.check_bearer(value).await {
            Ok(grant) if grant.dpop_jkt.is_some() => Ok(dpop_refusal(
                "invalid_token",
                "the access token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof",
            )),
            Ok(grant) => Ok(scope_check(&grant, "Bearer")),
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
        &no_credentials,
        "invalid_request",
        "unsupported authorization scheme: use Bearer, DPoP or Basic",
    ))
}
