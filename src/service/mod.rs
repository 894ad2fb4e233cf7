//! The application: domain rules wired to a store.
//!
//! [`Tessera`] is what the HTTP handlers and the CLI call. Each method reads the facts it needs
//! from the [`Store`], asks the domain for a decision, and writes the outcome in one
//! transaction. It knows nothing of HTTP: it returns domain values or a [`ServiceError`], and
//! `http::error` alone decides how those look on the wire.

pub mod admin;
pub mod clients;
pub mod introspect;
pub mod keys;
pub mod signing;
pub mod tokens;

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;

use crate::config::Settings;
use serde_json::json;

use crate::domain::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use crate::domain::client::{Client, Profile, TokenFormat};
use crate::domain::clock::UnixTime;
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

/// Opens the store named by `settings.database.url`: PostgreSQL for `postgres://` and
/// `postgresql://` URLs, otherwise SQLite (`sqlite:` URL or a plain file path).
///
/// # Errors
/// An unsupported URL or a database that cannot be opened.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.database.url.as_str();
    if is_postgres_url(url) {
        let store = PostgresStore::open(url, settings.database.max_connections)
            .await
            .with_context(|| format!("opening {}", redact_url(url)))?;
        return Ok(Arc::new(crate::store::metered::Metered(store)));
    }
    let url = if url.starts_with("sqlite:") {
        url.to_owned()
    } else {
        format!("sqlite://{url}")
    };
    let store = SqliteStore::open(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    Ok(Arc::new(crate::store::metered::Metered(store)))
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
            keys: derived,
            clock,
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

    /// True if the store can serve requests, writes included ([`Store::ready`]); why not is
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

    /// Whether the store's requests wait for a cleanup round ([`Store::cleanup_holds_up_writes`]).
    #[must_use]
    pub fn cleanup_holds_up_writes(&self) -> bool {
        self.store.cleanup_holds_up_writes()
    }

    /// Deletes one batch of tokens that expired or were revoked more than `retention` seconds
    /// ago, and as many audit events older than `audit_retention` (one batch at least); returns
    /// the rows removed and how long the deletes held the database.
    ///
    /// # Errors
    /// A store failure.
    pub async fn purge_expired(
        &self,
        batch: u32,
        retention: u32,
    ) -> Result<crate::store::Purged, ServiceError> {
        let now = self.clock.now();
        let tokens = self
            .store
            .purge_expired(now - i64::from(retention), batch)
            .await?;
        let allowance = audit_allowance(self.store.cleanup_holds_up_writes(), tokens.rows, batch);
        let before = now - i64::from(self.policy.audit_retention);
        let mut purged = tokens;
        let mut events = 0;
        while events < allowance {
            let audit = self.store.purge_audit(before, batch).await?;
            events += audit.rows;
            purged = purged + audit;
            if audit.rows < u64::from(batch) {
                break;
            }
        }
        Ok(purged)
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

/// How many old audit events a cleanup round deletes, after it deleted `token_rows` token rows
/// in rounds of `batch`.
///
/// Audit events are the table written most (one per grant, refresh and revocation, against
/// one family per grant) and the cheapest to delete (one table, no cascade). On PostgreSQL, at
/// one batch a round, they fell behind a saturating load while the token tables kept up:
/// 428,000 events past their retention after 16 minutes, the database growing without
/// levelling off (BENCHMARKS.md, round 6). There a round deletes as many events as token rows,
/// and at least one batch. On SQLite, where requests wait for the cleanup's rounds and a round
/// is sized to a few milliseconds of deletes in all (see `http::cleanup_loop`), more events a
/// round would mean fewer token rows: the SQLite soak's token tables then fell behind (2.4 M
/// expired access tokens after 10 minutes, the database at 3.2 GB and climbing), while at one
/// batch of events a round both kept up (6,100, level at 1.2 GB; BENCHMARKS.md, "Soak of round
/// 6 (600 s, SQLite)"). So SQLite keeps one batch.
fn audit_allowance(cleanup_holds_up_writes: bool, token_rows: u64, batch: u32) -> u64 {
    if cleanup_holds_up_writes {
        u64::from(batch)
    } else {
        token_rows.max(u64::from(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleanup_round_keeps_up_with_the_audit_trail_where_nothing_waits_for_it() {
        // PostgreSQL: as many events as token rows, one batch at least.
        assert_eq!(audit_allowance(false, 1_300, 500), 1_300);
        assert_eq!(audit_allowance(false, 20, 500), 500);
        assert_eq!(audit_allowance(false, 0, 500), 500);
        // SQLite: one batch, whatever the round deleted.
        assert_eq!(audit_allowance(true, 1_300, 500), 500);
        assert_eq!(audit_allowance(true, 0, 32), 32);
    }
}
