//! The application: domain rules wired to a store.
//!
//! [`Tessera`] is what the HTTP handlers and the CLI call. Each method reads the facts it needs
//! from the [`Store`], asks the domain for a decision, and writes the outcome in one
//! transaction. It knows nothing of HTTP: it returns domain values or a [`ServiceError`], and
//! `http::error` alone decides how those look on the wire.

pub mod clients;
pub mod keys;
pub mod tokens;

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Settings;
use crate::domain::client::{Client, Profile, TokenFormat};
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::crypto::DerivedKeys;
use crate::domain::error::OAuthError;
use crate::domain::scope::Registry;
use crate::store::postgres::{PostgresStore, redact_url};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

pub use keys::KeyRing;

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request was refused by an OAuth rule.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The named thing does not exist (operator calls).
    #[error("{0}")]
    NotFound(String),
    /// A bug or an environment failure (e.g. the random source).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Token policy: the server-wide defaults a client can override.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `iss` of JWTs.
    pub issuer: String,
    /// Default `aud`.
    pub audience: String,
    /// Default wire profile.
    pub default_profile: Profile,
    /// Default format for new clients.
    pub default_format: TokenFormat,
    /// Default access token lifetime.
    pub access_ttl: u32,
    /// Default refresh token lifetime.
    pub refresh_ttl: u32,
    /// Refresh reuse grace window, seconds.
    pub refresh_grace: u32,
}

/// The Tessera application.
pub struct Tessera {
    store: Arc<dyn Store>,
    keys: DerivedKeys,
    keyring: KeyRing,
    registry: Registry,
    clock: Arc<dyn Clock>,
    policy: Policy,
}

impl std::fmt::Debug for Tessera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tessera")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// True if `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
#[must_use]
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by `settings.database_url`: PostgreSQL for `postgres://` and
/// `postgresql://` URLs, otherwise SQLite (`sqlite:` URL or a plain file path).
///
/// # Errors
/// An unsupported URL or a database that cannot be opened.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.database_url.as_str();
    if is_postgres_url(url) {
        let store = PostgresStore::open(url, settings.database_max_connections)
            .await
            .with_context(|| format!("opening {}", redact_url(url)))?;
        return Ok(Arc::new(store));
    }
    let url = if url.starts_with("sqlite:") {
        url.to_owned()
    } else {
        format!("sqlite://{url}")
    };
    let store = SqliteStore::open(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    Ok(Arc::new(store))
}

impl Tessera {
    /// Opens the database, applies migrations, loads the master key and the signing keys
    /// (creating the first one if there is none).
    ///
    /// # Errors
    /// Anything that prevents serving: unreachable database, wrong master key, bad settings.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let store = open_store(settings).await?;
        store.migrate().await?;
        Self::with_store(settings, store, Arc::new(SystemClock)).await
    }

    /// Builds the application over an already-migrated store and a clock.
    ///
    /// # Errors
    /// As [`Tessera::open`].
    pub async fn with_store(
        settings: &Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let master = keys::resolve_master_key(settings)?;
        let derived = keys::open_root_key(store.as_ref(), &master).await?;
        let keyring = KeyRing::load_or_create(store.as_ref(), &derived, clock.now()).await?;
        let registry = Registry::with_extra(&settings.extra_scopes)
            .map_err(|e| anyhow::anyhow!("extra_scopes: {}", e.description))?;
        let issuer = settings.issuer();
        let policy = Policy {
            audience: settings.audience.clone().unwrap_or_else(|| issuer.clone()),
            issuer,
            default_profile: settings.default_profile,
            default_format: settings.default_format,
            access_ttl: settings.access_ttl,
            refresh_ttl: settings.refresh_ttl,
            refresh_grace: settings.refresh_grace,
        };
        Ok(Self {
            store,
            keys: derived,
            keyring,
            registry,
            clock,
            policy,
        })
    }

    /// The server-wide policy.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The wire profile for `client` (its own, or the server default).
    #[must_use]
    pub fn profile_of(&self, client: &Client) -> Profile {
        client.profile.unwrap_or(self.policy.default_profile)
    }

    /// The public signing keys, as a JWKS document.
    #[must_use]
    pub fn jwks(&self) -> serde_json::Value {
        self.keyring.jwks()
    }

    /// True if the store answers.
    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    /// Deletes one batch of tokens that expired or were revoked more than `retention` seconds
    /// ago; returns the number of rows removed.
    ///
    /// # Errors
    /// A store failure.
    pub async fn purge_expired(&self, batch: u32, retention: u32) -> Result<u64, ServiceError> {
        let before = self.clock.now() - i64::from(retention);
        Ok(self.store.purge_expired(before, batch).await?)
    }
}
