//! What wraps every request: a request id, the no-store headers, the `X-Moov-Version` check,
//! and one structured log event per request (never a secret or token: only method, path,
//! status, latency, request id and, once known, the client id).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::AppState;
use super::error::ApiError;
use crate::domain::audit::Actor;
use crate::domain::error::OAuthError;

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static MOOV_VERSION: HeaderName = HeaderName::from_static("x-moov-version");

/// True for `latest` or `vYYYY.MM.BB` (month 01–12, build 00–99).
#[must_use]
pub fn valid_moov_version(v: &str) -> bool {
    if v == "latest" {
        return true;
    }
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let [year, month, build] = parts.as_slice() else {
        return false;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    digits(year, 4)
        && digits(month, 2)
        && digits(build, 2)
        && month.parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
}

/// A bounded set of endpoint labels for metrics (ids in admin paths are not labels).
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/oauth2/token" => "/oauth2/token",
        "/oauth2/revoke" => "/oauth2/revoke",
        "/oauth2/introspect" => "/oauth2/introspect",
        "/ping" => "/ping",
        "/.well-known/jwks.json" => "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
            "/.well-known/metadata"
        }
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        p if p.starts_with("/admin/") => "/admin",
        _ => "other",
    }
}

/// The client's address: the connection's peer, or the first `X-Forwarded-For` entry when the
/// operator says a proxy sets it.
fn source_address(req: &Request, trust_forwarded_for: bool) -> Option<String> {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok());
        if let Some(ip) = forwarded {
            return Some(ip.to_owned());
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// Counts a request in [`AppState::in_flight`] until it is answered or dropped.
struct InFlight<'a>(&'a AppState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a AppState) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The envelope around every request.
pub async fn envelope(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&state);
    let request_id = uuid::Uuid::now_v7().to_string();
    let source = source_address(&req, state.trust_forwarded_for);
    req.extensions_mut().insert(Actor {
        request_id: Some(request_id.clone()),
        source: source.clone(),
    });
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %path,
        source = source.as_deref().unwrap_or("-"),
        client_id = tracing::field::Empty,
    );
    let version_ok = req
        .headers()
        .get(&MOOV_VERSION)
        .is_none_or(|v| v.to_str().is_ok_and(valid_moov_version));
    let mut response = if version_ok {
        next.run(req).instrument(span.clone()).await
    } else {
        ApiError::oauth(
            state.tessera.policy().default_profile,
            OAuthError::invalid_request(
                "X-Moov-Version must be vYYYY.MM.BB (e.g. v2025.01.00) or latest",
            ),
        )
        .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID.clone(), v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let endpoint = endpoint_label(&path);
    // A bounded label: any other method string would make a new series.
    let method_label: &'static str = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "PUT" => "PUT",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    metrics::histogram!("tessera_http_request_duration_seconds", "endpoint" => endpoint, "method" => method_label)
        .record(elapsed.as_secs_f64());
    metrics::counter!("tessera_http_requests_total", "endpoint" => endpoint, "status" => status.to_string())
        .increment(1);
    span.in_scope(|| tracing::info!(status, latency_us, "request"));
    response
}
