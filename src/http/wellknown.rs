//! Published keys (`/.well-known/jwks.json`) and health (`/healthz`, `/readyz`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::RETRY_AFTER_SECONDS;

/// `GET /.well-known/jwks.json`: the public keys that sign JWT access tokens.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    Json(state.tessera.jwks()).into_response()
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the store answers.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.tessera.ready().await {
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
