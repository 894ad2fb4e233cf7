//! The HTTP surface: the router, one module per endpoint, the request envelope, and the single
//! place where failures become responses ([`error`]).
//!
//! [`Application`] follows the build → port → run shape: it binds its listener first (port 0
//! works, which is how the tests run), then serves until the shutdown future completes, letting
//! in-flight requests finish.

pub mod error;
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
}

/// The public router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/revoke", post(revoke::revoke))
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
    token_retention: u32,
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
            }),
            cleanup_interval: Duration::from_secs(u64::from(settings.cleanup_interval)),
            cleanup_batch: settings.cleanup_batch,
            token_retention: settings.token_retention,
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
            self.token_retention,
        ));
        tracing::info!(addr = %self.listener.local_addr()?, issuer = %self.state.tessera.policy().issuer, "serving");
        let app = router(self.state);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        cleanup.abort();
        served.context("serving HTTP")
    }
}

/// Deletes expired and revoked tokens (older than `retention` seconds) in small batches, so each
/// write transaction stays short. Every instance runs it; on PostgreSQL concurrent runs take
/// disjoint rows.
async fn cleanup_loop(state: Arc<AppState>, interval: Duration, batch: u32, retention: u32) {
    loop {
        tokio::time::sleep(interval).await;
        loop {
            match state.tessera.purge_expired(batch, retention).await {
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
