//! The admin API: clients, keys, bulk revocation, audit, metrics — on its own listener
//! (`admin_listen`, loopback by default), never on the public one, behind
//! `Authorization: Bearer <admin token>` (see [`crate::service::admin`]); `/metrics` behind its
//! own read-only `metrics_token`, or nothing ([`require_metrics`]).
//!
//! JSON in, JSON out. Errors are `{"error": "<code>", "error_description": "…"}` with 400
//! (bad input), 401 (no or wrong credential), 404 (no such client or key), 408 (body not
//! received within `body_timeout`), 409 (conflict), 413 (body over 2 MiB) or 503 (store
//! unavailable), mapped in [`super::error::AdminError`]. It calls the same service methods as
//! the CLI. One module per resource: [`clients`], [`keys`], [`tokens`] (bulk revocation),
//! [`audit`]; [`extract`] reads bodies, queries and paths in the admin error shape.

pub mod audit;
pub mod clients;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use audit::*;
pub use clients::*;
pub use keys::*;
pub use tokens::*;

use super::AppState;
use super::error::AdminError;
#[allow(unused_imports)]
use super::openapi::GenericError;

/// What every admin handler answers.
type AdminResult = Result<Response, AdminError>;

/// The token of an `Authorization: Bearer …` header, if the request has one.
fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
}

/// Requires the admin bearer token.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = bearer(&req);
    let ok = match presented {
        Some(token) => match state.tessera.check_admin_token(&token).await {
            Ok(ok) => ok,
            Err(e) => return AdminError::from(e).into_response(),
        },
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        tracing::warn!("admin API: missing or wrong admin credential");
        AdminError::unauthorized().into_response()
    }
}

/// Guards `/metrics`. Without a configured `metrics_token` it is open: the admin listener is on
/// loopback or a private interface, where Prometheus scrapes it without a credential. With one,
/// only `Authorization: Bearer <metrics_token>` opens it, never the admin token, which can
/// create clients and so must not sit in a scraper's configuration.
pub async fn require_metrics(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if state.tessera.check_metrics_token(bearer(&req).as_deref()) {
        next.run(req).await
    } else {
        tracing::warn!("metrics: missing or wrong metrics token");
        AdminError::metrics_unauthorized().into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401, description = "`metrics_token` is configured, and the request does not carry it", body = GenericError), (status = 503, description = "Metrics unavailable", body = GenericError)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    crate::http::metrics::render(&state.tessera)
}

/// The admin router (authenticated), plus unauthenticated health endpoints.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route(
            "/admin/clients/{id}",
            get(show_client).patch(update_client).delete(delete_client),
        )
        .route("/admin/clients/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/clients/{id}/disable", post(disable_client))
        .route("/admin/clients/{id}/enable", post(enable_client))
        .route(
            "/admin/clients/{id}/revoke-tokens",
            post(revoke_client_tokens),
        )
        .route("/admin/families/{id}/revoke", post(revoke_family))
        .route(
            "/admin/tokens/revoke-issued-before",
            post(revoke_issued_before),
        )
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/keys/{kid}/retire", post(retire_key))
        .route("/admin/keys/{kid}/revoke", post(revoke_key))
        .route("/admin/audit", get(audit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    let scraped =
        Router::new()
            .route("/metrics", get(metrics))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_metrics,
            ));
    Router::new()
        .merge(protected)
        .merge(scraped)
        .route("/openapi.json", get(crate::http::openapi::admin))
        .route("/healthz", get(crate::http::wellknown::healthz))
        .route("/readyz", get(crate::http::wellknown::readyz))
        .method_not_allowed_fallback(|| async { AdminError::method_not_allowed() })
        .fallback(|| async { AdminError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::middleware::envelope,
        ))
        .with_state(state)
}
