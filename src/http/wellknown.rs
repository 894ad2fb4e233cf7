//! Published keys (`/.well-known/jwks.json`) and health (`/healthz`, `/readyz`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::RETRY_AFTER_SECONDS;
#[allow(unused_imports)]
use super::openapi::{Health, Jwks};

/// `GET /.well-known/jwks.json`: the public keys that sign JWT access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery", responses((status = 200, body = Jwks)))]
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    Json(state.tessera.jwks()).into_response()
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the store can serve requests, writes included (on SQLite a probe write commits)
/// and the server is not shutting down. See docs/fault-model.md.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
    if !draining && state.tessera.ready().await {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable" })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        resp
    }
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414), also served at
/// `/.well-known/openid-configuration` for libraries that only look there. Everything it
/// advertises is true of this server: the endpoints exist at the issuer, the grants and
/// authentication methods are the ones accepted, the algorithms are those of the published
/// keys, and `scopes_supported` lists the registry's literal scopes (the account-restricted
/// templates, which need a concrete account id, are in `tessera_scope_templates`).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery", responses((status = 200, description = "RFC 8414 metadata", body = Object)))]
pub async fn metadata(State(state): State<Arc<AppState>>) -> Response {
    let t = &state.tessera;
    let issuer = t.policy().issuer.trim_end_matches('/').to_owned();
    // The mTLS methods only when a client certificate can reach the endpoints.
    let auth_methods: Vec<&str> = crate::domain::client::AuthMethod::ALL
        .iter()
        .filter(|m| t.policy().client_certificates || !m.uses_certificate())
        .map(|m| m.as_str())
        .collect();
    // The algorithms a client assertion may use (RS256 not for FAPI 2.0 clients).
    let assertion_algs =
        crate::domain::jose::accepted_names(&crate::domain::client::auth::ASSERTION_ALGS);
    let (literal, templates): (Vec<&String>, Vec<&String>) = t
        .registry()
        .templates()
        .iter()
        .partition(|s| !s.contains('{'));
    let mut body = json!({
        "issuer": t.policy().issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "scopes_supported": literal,
        "tessera_scope_templates": templates,
        "access_token_signing_alg_values_supported": t.keyring().algorithms(t.now()),
        // JWT introspection responses (RFC 9701) are signed by the same keys.
        "introspection_signing_alg_values_supported": t.keyring().algorithms(t.now()),
        // RFC 9449 §5.1; FAPI 2.0 clients may not use RS256 (see docs/protocol.md).
        "dpop_signing_alg_values_supported":
            crate::domain::jose::accepted_names(&crate::domain::dpop::algorithms(false)),
    });
    // RFC 8705 §3.3 and §5: certificate-bound tokens and the mTLS endpoints, when client
    // certificates can reach this server at all. The aliases are the endpoints themselves:
    // every TLS connection may present a certificate, so no separate host is needed.
    if t.policy().client_certificates
        && let Some(o) = body.as_object_mut()
    {
        o.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            Value::Bool(true),
        );
        o.insert(
            "mtls_endpoint_aliases".into(),
            json!({
                "token_endpoint": format!("{issuer}/oauth2/token"),
                "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
                "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
            }),
        );
    }
    Json(body).into_response()
}
