//! The HTTP surface: the router, one module per endpoint, the request envelope, and the single
//! place where failures become responses ([`error`]).
//!
//! [`Application`] follows the build → port → run shape: it binds its listener first (port 0
//! works, which is how the tests run), then serves until the shutdown future completes, letting
//! in-flight requests finish.

pub mod error;
pub mod introspect;
pub mod middleware;
pub mod ping;
pub mod request;
pub mod revoke;
pub mod token;
pub mod wellknown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::service::Tessera;
use error::ApiError;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The application.
    pub tessera: Tessera,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Whether `X-Forwarded-For` names the client.
    pub trust_forwarded_for: bool,
}

/// The public router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/revoke", post(revoke::revoke))
        .route("/oauth2/introspect", post(introspect::introspect))
        .route(
            "/.well-known/oauth-authorization-server",
            get(wellknown::metadata),
        )
        .route(
            "/.well-known/openid-configuration",
            get(wellknown::metadata),
        )
        .route("/ping", get(ping::ping))
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/healthz", get(wellknown::healthz))
        .route("/readyz", get(wellknown::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::envelope,
        ))
        .with_state(state)
}

async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    ApiError::not_found(state.tessera.policy().default_profile).into_response()
}

async fn method_not_allowed(State(state): State<Arc<AppState>>) -> Response {
    ApiError::method_not_allowed(state.tessera.policy().default_profile).into_response()
}

/// A bound, ready-to-run Tessera server.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    cleanup_interval: Duration,
    cleanup_batch: u32,
}

impl Application {
    /// Binds the listener and opens the application. When no issuer is configured, it is
    /// `http://<bound address>`.
    ///
    /// # Errors
    /// The address cannot be bound, or [`Tessera::open`] fails.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener.local_addr()?;
        if settings.issuer.is_none() {
            settings.issuer = Some(format!("http://{addr}"));
        }
        let tessera = Tessera::open(&settings).await?;
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                tessera,
                max_body_bytes: settings.max_body_bytes,
                trust_forwarded_for: settings.trust_forwarded_for,
            }),
            cleanup_interval: Duration::from_secs(u64::from(settings.cleanup_interval)),
            cleanup_batch: settings.cleanup_batch,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// finish. Runs the expired-token cleanup in the background meanwhile.
    ///
    /// # Errors
    /// If serving fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cleanup = tokio::spawn(cleanup_loop(
            self.state.clone(),
            self.cleanup_interval,
            self.cleanup_batch,
        ));
        let reload = tokio::spawn(key_reload_loop(self.state.clone()));
        tracing::info!(addr = %self.listener.local_addr()?, issuer = %self.state.tessera.policy().issuer, "serving");
        let app = router(self.state);
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        cleanup.abort();
        reload.abort();
        served.context("serving HTTP")
    }
}

/// Reloads the signing keys every `key_reload_interval` seconds, so that a rotation or a
/// revocation made by the CLI or another instance takes effect here within that bound.
async fn key_reload_loop(state: Arc<AppState>) {
    let interval = Duration::from_secs(u64::from(state.tessera.policy().key_reload_interval));
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = state.tessera.reload_keys().await {
            tracing::warn!(error = %e, "reloading signing keys failed; keeping the current ones");
        }
    }
}

/// Deletes expired tokens in small batches, so each write transaction stays short.
async fn cleanup_loop(state: Arc<AppState>, interval: Duration, batch: u32) {
    loop {
        tokio::time::sleep(interval).await;
        loop {
            match state.tessera.purge_expired(batch).await {
                Ok(n) if n >= u64::from(batch) => tokio::task::yield_now().await,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(rows = n, "expired tokens deleted");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expired-token cleanup failed; will retry");
                    break;
                }
            }
        }
    }
}
