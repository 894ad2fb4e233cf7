//! The HTTP surface: the router, one module per endpoint, the request envelope, and the single
//! place where failures become responses ([`error`]).
//!
//! [`Application`] follows the build → port → run shape: it binds its listener first (port 0
//! works, which is how the tests run), then serves until the shutdown future completes, letting
//! in-flight requests finish. [`server`] is the accept loop both listeners run, with the
//! connection timeouts and caps; [`tls`] is their optional native TLS.

pub mod admin;
pub mod auth;
pub mod dpop;
pub mod error;
pub mod introspect;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ping;
pub mod request;
pub mod revoke;
pub mod server;
pub mod tls;
pub mod token;
pub mod wellknown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::service::{Tessera, jobs};
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
    /// Rate limiters.
    pub limits: limits::Limits,
    /// True once shutdown began: readiness answers 503.
    pub draining: AtomicBool,
    /// Requests being served right now (the cleanup yields to them).
    pub in_flight: AtomicUsize,
}

/// The public router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/oauth2/token",
            post(token::token).layer(axum::middleware::from_fn(auth::release_on_failure)),
        )
        .route(
            "/oauth2/revoke",
            post(revoke::revoke).layer(axum::middleware::from_fn(auth::release_on_failure)),
        )
        .route(
            "/oauth2/introspect",
            post(introspect::introspect).layer(axum::middleware::from_fn(auth::release_on_failure)),
        )
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
        .route("/openapi.json", get(openapi::public))
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

/// A bound, ready-to-run Tessera server: the public listener and the admin listener.
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    state: Arc<AppState>,
    cleanup_interval: Duration,
    cleanup_batch: u32,
    shutdown_timeout: Duration,
    shutdown_drain: Duration,
    token_retention: u32,
    public_rules: server::Rules,
    admin_rules: server::Rules,
    public_transport: server::Transport,
    admin_transport: server::Transport,
}

impl Application {
    /// Loads the TLS certificates (if any), binds both listeners and opens the application.
    /// When no issuer is configured, it is `http://<bound address>` (`https://` with TLS).
    ///
    /// # Errors
    /// A TLS certificate or key does not load (see [`tls::load`]), an address cannot be
    /// bound, or [`Tessera::open`] fails.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let (public_transport, admin_transport) = transports(&settings)?;
        let listener = TcpListener::bind(&settings.server.listen)
            .await
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let admin_listener = TcpListener::bind(&settings.admin.listen)
            .await
            .with_context(|| format!("binding the admin listener {}", settings.admin.listen))?;
        let addr = listener.local_addr()?;
        if settings.server.issuer.is_none() {
            settings.server.issuer = Some(format!("{}://{addr}", settings.tls.scheme()));
        }
        if public_transport.tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                addr = %addr,
                "the public listener serves plain http on a non-loopback address: clients' \
                 secrets and tokens cross the network in clear unless a TLS-terminating proxy \
                 is in front; set tls_cert and tls_key to serve https (docs/tls.md)"
            );
        }
        metrics::install();
        let (public_rules, admin_rules) = connection_rules(&settings);
        let tessera = Tessera::open(&settings).await?;
        tessera.ensure_admin_token(&settings).await?;
        Ok(Self {
            listener,
            admin_listener,
            state: Arc::new(AppState {
                tessera,
                max_body_bytes: settings.server.max_body_bytes,
                trust_forwarded_for: settings.server.trust_forwarded_for,
                limits: limits::Limits::new(
                    settings.limits.rate_limit_per_ip,
                    settings.limits.rate_limit_per_client,
                    settings.limits.auth_failures_per_minute,
                ),
                draining: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
            }),
            cleanup_interval: Duration::from_secs(u64::from(settings.cleanup.interval)),
            cleanup_batch: settings.cleanup.batch,
            shutdown_timeout: Duration::from_secs(u64::from(settings.server.shutdown_timeout)),
            shutdown_drain: Duration::from_secs(u64::from(settings.server.shutdown_drain)),
            token_retention: settings.cleanup.token_retention,
            public_rules,
            admin_rules,
            public_transport,
            admin_transport,
        })
    }

    /// The bound public address.
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound admin address.
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Serves until `shutdown` completes. Then: readiness turns false (and serving goes on for
    /// `shutdown_drain`), both listeners stop accepting, in-flight requests get
    /// `shutdown_timeout` to finish, and the store is closed.
    /// The expired-token cleanup and the key reload run in the background meanwhile.
    ///
    /// # Errors
    /// If a listener has no local address.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let schedule = jobs::CleanupSchedule {
            interval: self.cleanup_interval,
            batch: self.cleanup_batch,
            retention: self.token_retention,
        };
        let cleanup_state = state.clone();
        let cleanup = tokio::spawn(async move {
            jobs::cleanup(&cleanup_state.tessera, schedule, &cleanup_state.in_flight).await;
        });
        let limits = tokio::spawn(limits_upkeep_loop(state.clone(), self.cleanup_interval));
        let reload = tokio::spawn(key_reload_loop(state.clone()));
        let tls_listeners: Vec<_> = [&self.public_transport.tls, &self.admin_transport.tls]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        // Also without TLS, so that SIGHUP (a `systemctl reload`, a closed terminal) does not
        // end the server.
        let tls_reload = tokio::spawn(tls::reload_loop(tls_listeners));
        let upkeep = tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                metrics::upkeep();
            }
        });
        tracing::info!(
            addr = %self.listener.local_addr()?,
            admin = %self.admin_listener.local_addr()?,
            issuer = %state.tessera.policy().issuer,
            tls = self.public_transport.tls.is_some(),
            admin_tls = self.admin_transport.tls.is_some(),
            max_connections = self.public_rules.max_connections,
            admin_max_connections = self.admin_rules.max_connections,
            "serving"
        );
        // One shutdown signal, observed by both servers and by the deadline below.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let draining_state = state.clone();
        let drain = self.shutdown_drain;
        tokio::spawn(async move {
            shutdown.await;
            draining_state.draining.store(true, Ordering::SeqCst);
            if !drain.is_zero() {
                tracing::info!(
                    ?drain,
                    "draining: /readyz answers 503 before the listeners close"
                );
                tokio::time::sleep(drain).await;
            }
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let public = server::serve(
            self.listener,
            "public",
            router(state.clone()),
            self.public_rules,
            self.public_transport,
            stop_rx.clone(),
        );
        let admin = server::serve(
            self.admin_listener,
            "admin",
            admin::router(state.clone()),
            self.admin_rules,
            self.admin_transport,
            stop_rx.clone(),
        );
        let both = async { tokio::join!(public, admin) };
        let deadline = async {
            stopped(stop_rx).await;
            tracing::info!(timeout = ?self.shutdown_timeout, "shutting down: finishing in-flight requests");
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        tokio::select! {
            _ = both => {}
            () = deadline => {
                tracing::warn!("shutdown deadline passed with requests still in flight");
            }
        }
        cleanup.abort();
        limits.abort();
        reload.abort();
        tls_reload.abort();
        upkeep.abort();
        state.tessera.close().await;
        Ok(())
    }
}

/// Each listener's transport: TLS from its certificate files, if any (the admin listener's
/// own, else the public one's), and on the public listener the trusted proxy header. The
/// public listener asks for client certificates; the admin listener does not.
fn transports(settings: &Settings) -> anyhow::Result<(server::Transport, server::Transport)> {
    let public_tls = settings
        .tls
        .public_files()
        .map(|files| tls::Tls::open("public", files, true))
        .transpose()
        .context("the public listener's TLS certificate")?;
    let admin_tls = settings
        .tls
        .admin_files()
        .map(|files| tls::Tls::open("admin", files, false))
        .transpose()
        .context("the admin listener's TLS certificate")?;
    let cert_header = settings.tls.proxy_cert_header()?.map(Arc::new);
    Ok((
        server::Transport {
            tls: public_tls,
            cert_header,
        },
        server::Transport {
            tls: admin_tls,
            cert_header: None,
        },
    ))
}

/// Each listener's connection rules. The public cap, when not configured, leaves the
/// descriptors the admin listener and the database need (see [`server::public_cap`]); a
/// configured cap the descriptor limit cannot honour is warned about.
fn connection_rules(settings: &Settings) -> (server::Rules, server::Rules) {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let admin_cap = usize::try_from(settings.admin.max_connections).unwrap_or(usize::MAX);
    let nofile = server::open_files_limit();
    let public_cap = server::public_cap(
        usize::try_from(settings.server.max_connections).unwrap_or(usize::MAX),
        admin_cap,
        settings.database.max_connections,
        nofile,
    );
    if let Some(limit) = nofile {
        let wanted = u64::try_from(public_cap.saturating_add(admin_cap))
            .unwrap_or(u64::MAX)
            .saturating_add(u64::from(settings.database.max_connections))
            .saturating_add(server::RESERVED_DESCRIPTORS);
        if wanted > limit {
            tracing::warn!(
                open_files_limit = limit,
                max_connections = public_cap,
                admin_max_connections = admin_cap,
                "the connection caps exceed what the descriptor limit (ulimit -n) leaves: \
                 descriptors may run out first, and then no listener accepts until some close"
            );
        }
    }
    let rules = |max_connections| server::Rules {
        header_timeout: secs(settings.server.header_timeout),
        body_timeout: secs(settings.server.body_timeout),
        idle_timeout: secs(settings.server.idle_timeout),
        max_connections,
    };
    (rules(public_cap), rules(admin_cap))
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

/// Lets the rate limiters forget idle clients and addresses, every `interval`.
async fn limits_upkeep_loop(state: Arc<AppState>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        state.limits.forget_idle();
    }
}
