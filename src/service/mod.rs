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
        let master = keys::resolve_master_key(settings)?;
        let derived = keys::open_root_key(store.as_ref(), &master).await?;
        keys::ensure_keys(store.as_ref(), &derived, settings.signing_alg, clock.now()).await?;
        let keyring = KeyRing::load(store.as_ref(), &derived, None).await?;
        if keyring.active().is_none() {
            anyhow::bail!("no active signing key");
        }
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
            signing_alg: settings.signing_alg,
            key_reload_interval: settings.key_reload_interval,
            audit_retention: settings.audit_retention,
        };
        Ok(Self {
            store,
            keyring: RwLock::new(Arc::new(keyring)),
            registry,
            admin_token_hash: settings
                .admin_token
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

    /// True if the store answers.
    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
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
        // Audit events are the table written most (one per grant, refresh and revocation) and
        // the cheapest to delete (one table, no cascade). At one batch a round they fell behind
        // a saturating load on PostgreSQL while the token tables kept up: 428,000 events past
        // their retention after 16 minutes, the database growing without levelling off
        // (BENCHMARKS.md, round 6). So a round deletes as many events as token rows (at least
        // one batch), in batches of `batch`, so that no one delete holds the database longer
        // than a batch does.
        let allowance = tokens.rows.max(u64::from(batch));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::FixedClock;
    use crate::store::{NewAccessToken, NewFamily, NewRefreshToken};

    const T0: UnixTime = 1_800_000_000;

    /// A cleanup round keeps up with the audit trail: it deletes as many old events as it
    /// deleted token rows, not one batch, so the most-written table cannot fall behind.
    #[tokio::test]
    async fn a_cleanup_round_deletes_as_many_audit_events_as_token_rows() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
            audit_retention: 60,
            ..Settings::default()
        };
        let store = open_store(&settings).await.unwrap();
        store.migrate().await.unwrap();
        let client = Client {
            id: "c".into(),
            name: "c".into(),
            secret: crate::domain::client::SecretHash([7; 32]),
            previous_secret: None,
            scopes: Vec::new(),
            format: TokenFormat::Opaque,
            profile: None,
            access_ttl: None,
            refresh_ttl: None,
            origins: Vec::new(),
            audience: None,
            resource_server: None,
            resources: Vec::new(),
            disabled: false,
            created_at: T0,
            updated_at: T0,
            revision: 0,
        };
        store.insert_client(&client).await.unwrap();
        let event =
            |at| AuditEvent::new(AuditKind::TokenIssued, at, &Actor::cli(), None, json!({}));
        for _ in 0..200 {
            store.record_audit(&event(T0)).await.unwrap();
        }
        // 20 grants expired long ago (their own events are recent, so they stay).
        for i in 0..20 {
            let family = format!("f{i}");
            let token = |id: String| (crate::domain::token::TokenHash::of(&id), id);
            let (access_hash, access_id) = token(format!("a{i}"));
            let (refresh_hash, refresh_id) = token(format!("r{i}"));
            store
                .issue(
                    &NewFamily {
                        id: family.clone(),
                        client_id: "c".into(),
                        scope: "/ping.read".into(),
                        client_type: crate::domain::client::ClientType::Service,
                        created_at: T0,
                    },
                    &NewAccessToken {
                        id: access_id,
                        hash: access_hash,
                        family_id: family.clone(),
                        client_id: "c".into(),
                        format: TokenFormat::Opaque,
                        scope: "/ping.read".into(),
                        audience: "aud".into(),
                        issued_at: T0,
                        expires_at: T0 + 1,
                        signing_kid: None,
                    },
                    &NewRefreshToken {
                        id: refresh_id,
                        hash: refresh_hash,
                        family_id: family,
                        client_id: "c".into(),
                        scope: "/ping.read".into(),
                        issued_at: T0,
                        expires_at: T0 + 1,
                    },
                    &event(T0 + 3600),
                )
                .await
                .unwrap();
        }
        let app = Tessera::with_store(&settings, store.clone(), Arc::new(FixedClock(T0 + 3600)))
            .await
            .unwrap();
        let old_events = || async {
            let q = AuditQuery {
                client_id: None,
                event: None,
                since: None,
                before_id: None,
                limit: 1000,
            };
            let all = store.list_audit(&q).await.unwrap();
            all.iter().filter(|e| e.at == T0).count()
        };
        assert_eq!(old_events().await, 200);
        let purged = app.purge_expired(10, 0).await.unwrap();
        let events = 200 - old_events().await;
        let tokens = purged.rows - u64::try_from(events).unwrap();
        // The round deleted up to 10 rows of each token table, and as many events, in whole
        // batches (one batch, as before, would be 10 events).
        assert!(tokens > 10, "the round deleted {tokens} token rows");
        assert_eq!(u64::try_from(events).unwrap(), tokens.div_ceil(10) * 10);
        // With no token left to delete, a round still deletes a batch of events.
        while app.purge_expired(10, 0).await.unwrap().rows > 10 {}
        let left = old_events().await;
        let purged = app.purge_expired(10, 0).await.unwrap();
        assert_eq!((purged.rows, old_events().await), (10, left - 10));
    }
}
