//! The application: domain rules wired to a store.
//!
//! [`Tessera`] is what the HTTP handlers and the CLI call. Each method reads the facts it needs
//! from the [`Store`], asks the domain for a decision, and writes the outcome in one
//! transaction. It knows nothing of HTTP: it returns domain values or a [`ServiceError`], and
//! `http::error` alone decides how those look on the wire.

pub mod admin;
pub mod assertion;
pub mod clients;
pub mod dpop;
pub mod introspect;
pub mod jobs;
pub mod jwks;
pub mod keys;
pub mod replay;
pub mod signing;
pub mod tokens;

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use crate::config::Settings;
use serde_json::json;

use crate::domain::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use crate::domain::client::{Client, Profile, TokenFormat};
use crate::domain::clock::UnixTime;
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::crypto::DerivedKeys;
use crate::domain::error::OAuthError;
use crate::domain::scope::Registry;
use crate::store::{CleanupRound, CleanupRun, Retention, Store, StoreError};

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
    /// A value an operator (admin API, CLI) gave, refused by a client-setting or key rule:
    /// the field it is about and the reason, which starts with the field's name. Not an OAuth
    /// refusal and not retryable as it stands. The admin API answers `400 invalid_request`;
    /// a refused scope pattern stays [`ServiceError::OAuth`] (`invalid_scope`), the scope
    /// grammar being OAuth's.
    #[error("{reason}")]
    Invalid {
        /// The refused field.
        field: &'static str,
        /// Why, safe to show (never a secret).
        reason: Cow<'static, str>,
    },
    /// A concurrent change won a race this call lost (two key rotations at once, a client that
    /// kept changing, a key whose state changed meanwhile). Nothing was changed by this call;
    /// trying again is safe. The admin API answers `409 conflict` with `Retry-After`, the OAuth
    /// endpoints `503` with `Retry-After`.
    #[error("{0}")]
    Conflict(String),
    /// A bug or an environment failure (e.g. the random source).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    /// An [`ServiceError::Invalid`] refusal of `field`.
    pub fn invalid(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A domain rule's refusal of an operator's value: [`ServiceError::Invalid`] when it is
    /// `invalid_request` about one field (the client-setting rules of `domain::client`), the
    /// OAuth refusal as it is otherwise.
    #[must_use]
    pub fn refused_setting(e: OAuthError) -> Self {
        match e {
            OAuthError {
                code: crate::domain::error::ErrorCode::InvalidRequest,
                field: Some(field),
                description,
            } => Self::Invalid {
                field,
                reason: description,
            },
            other => Self::OAuth(other),
        }
    }
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
    /// Algorithm of new signing keys.
    pub signing_alg: crate::domain::jwt::Algorithm,
    /// Seconds between key reloads on every instance.
    pub key_reload_interval: u32,
    /// Seconds audit events are kept.
    pub audit_retention: u32,
    /// DPoP proofs must carry a server nonce (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Clients' `jwks_uri` may be plain http and point at loopback or private addresses.
    pub jwks_uri_allow_http: bool,
}

/// The Tessera application.
pub struct Tessera {
    store: Arc<dyn Store>,
    keys: DerivedKeys,
    keyring: RwLock<Arc<KeyRing>>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    policy: Policy,
    admin_token_hash: Option<String>,
    jwks: jwks::JwksFetcher,
    /// The keyed hash of `metrics_token`, when one is configured.
    metrics_token_hash: Option<String>,
}

impl std::fmt::Debug for Tessera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tessera")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Tessera {
    /// Opens the database, applies migrations, loads the master key and the signing keys
    /// (creating the first one if there is none).
    ///
    /// # Errors
    /// Anything that prevents serving: unreachable database, wrong master key, bad settings.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let store = crate::store::open(&settings.database).await?;
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
        let master = keys::resolve_master_key(settings, store.as_ref()).await?;
        let derived = keys::open_root_key(store.as_ref(), &master).await?;
        let tokens = &settings.tokens;
        keys::ensure_keys(store.as_ref(), &derived, tokens.signing_alg, clock.now()).await?;
        let keyring = KeyRing::load(store.as_ref(), &derived, None).await?;
        if keyring.active().is_none() {
            anyhow::bail!("no active signing key");
        }
        let registry = Registry::with_extra(&tokens.extra_scopes)
            .map_err(|e| anyhow::anyhow!("extra_scopes: {}", e.description))?;
        let issuer = settings.issuer();
        let policy = Policy {
            audience: tokens.audience.clone().unwrap_or_else(|| issuer.clone()),
            issuer,
            default_profile: tokens.default_profile,
            default_format: tokens.default_format,
            access_ttl: tokens.access_ttl,
            refresh_ttl: tokens.refresh_ttl,
            refresh_grace: tokens.refresh_grace,
            signing_alg: tokens.signing_alg,
            key_reload_interval: tokens.key_reload_interval,
            audit_retention: settings.cleanup.audit_retention,
            dpop_nonce: tokens.dpop_nonce,
            jwks_uri_allow_http: tokens.jwks_uri_allow_http,
        };
        Ok(Self {
            store,
            keyring: RwLock::new(Arc::new(keyring)),
            registry,
            admin_token_hash: settings
                .admin
                .token
                .as_ref()
                .map(|t| crate::domain::crypto::hex(&derived.hash_secret(t.expose()))),
            metrics_token_hash: settings
                .admin
                .metrics_token
                .as_ref()
                .map(|t| crate::domain::crypto::hex(&derived.hash_secret(t.expose()))),
            keys: derived,
            clock,
            jwks: jwks::JwksFetcher::new(policy.jwks_uri_allow_http),
            policy,
        })
    }

    /// The scope registry.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current time by this application's clock.
    #[must_use]
    pub fn now(&self) -> crate::domain::clock::UnixTime {
        self.clock.now()
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
        self.keyring().jwks(self.clock.now())
    }

    /// The current key ring (cheap: a shared pointer).
    #[must_use]
    pub fn keyring(&self) -> Arc<KeyRing> {
        match self.keyring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the signing keys from the store, so that rotations and revocations made by
    /// another instance or the CLI take effect here.
    ///
    /// # Errors
    /// A store failure; the previous key ring stays in use.
    pub async fn reload_keys(&self) -> Result<(), ServiceError> {
        let previous = self.keyring();
        let ring = KeyRing::load(self.store.as_ref(), &self.keys, Some(&previous)).await?;
        if ring.active().is_none() {
            return Err(anyhow::anyhow!("no active signing key in the store").into());
        }
        match self.keyring.write() {
            Ok(mut slot) => *slot = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }

    /// True if the store can serve requests, writes included
    /// ([`crate::store::Maintenance::ready`]); why not is
    /// logged.
    pub async fn ready(&self) -> bool {
        match self.store.ready().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "not ready: the store cannot serve requests");
                false
            }
        }
    }

    /// Records an operator-facing event after the change it describes has committed. A failure
    /// to record is logged, not returned: the change itself has happened.
    pub(crate) async fn audit(&self, event: AuditEvent) {
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::error!(error = %e, event = %event.event, "could not record an audit event");
        }
    }

    /// Reads the audit trail, newest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, ServiceError> {
        Ok(self.store.list_audit(query).await?)
    }

    /// Revokes every token of a client ("a secret leaked"); returns how many families.
    ///
    /// # Errors
    /// An unknown client; store failures.
    pub async fn revoke_client_tokens(
        &self,
        client_id: &str,
        actor: &Actor,
    ) -> Result<u64, ServiceError> {
        self.get_client(client_id).await?;
        let now = self.clock.now();
        let event = AuditEvent::new(
            AuditKind::BulkRevoked,
            now,
            actor,
            Some(client_id),
            json!({ "scope": "client" }),
        );
        let n = self
            .store
            .revoke_client_tokens(client_id, now, &event)
            .await?;
        tracing::warn!(client_id, families = n, "every token of a client revoked");
        Ok(n)
    }

    /// Revokes one family by id.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke_family_by_id(
        &self,
        family_id: &str,
        actor: &Actor,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let event = AuditEvent::new(
            AuditKind::FamilyRevoked,
            now,
            actor,
            None,
            json!({ "family_id": family_id, "by": "operator" }),
        );
        self.store.revoke_family(family_id, now, &event).await?;
        Ok(())
    }

    /// Revokes every token issued before `before` ("we restored an old backup"); returns how
    /// many tokens.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke_issued_before(
        &self,
        before: UnixTime,
        actor: &Actor,
    ) -> Result<u64, ServiceError> {
        let now = self.clock.now();
        let event = AuditEvent::new(
            AuditKind::BulkRevoked,
            now,
            actor,
            None,
            json!({ "issued_before": before }),
        );
        let n = self.store.revoke_issued_before(before, now, &event).await?;
        tracing::warn!(
            before,
            tokens = n,
            "every token issued before a time revoked"
        );
        Ok(n)
    }

    /// One round of the cleanup `run` ([`crate::store::Maintenance::cleanup_round`]): tokens that expired
    /// or were revoked more than `retention` seconds ago, and audit events older than
    /// `audit_retention`, as many as the store's cleanup policy allows.
    ///
    /// # Errors
    /// A store failure.
    pub async fn cleanup_round(
        &self,
        run: &mut CleanupRun,
        retention: u32,
    ) -> Result<CleanupRound, ServiceError> {
        let now = self.clock.now();
        let retention = Retention {
            tokens_before: now - i64::from(retention),
            audit_before: now - i64::from(self.policy.audit_retention),
        };
        Ok(self.store.cleanup_round(run, retention).await?)
    }

    /// One full-size cleanup round of at most `batch` rows per table (see
    /// [`Self::cleanup_round`]).
    ///
    /// # Errors
    /// A store failure.
    pub async fn purge_expired(
        &self,
        batch: u32,
        retention: u32,
    ) -> Result<CleanupRound, ServiceError> {
        self.cleanup_round(&mut CleanupRun::new(batch), retention)
            .await
    }

    /// Closes the store's connections.
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Connection pool figures.
    #[must_use]
    pub fn pool_stats(&self) -> crate::store::PoolStats {
        self.store.pool_stats()
    }
}
