//! Persistence: one role trait per kind of data ([`ClientStore`], [`KeyStore`],
//! [`TokenStore`], [`AuditStore`]) and one for the database itself ([`Maintenance`]: schema,
//! health, and the cleanup policy each backend owns); [`Store`] is all of them, implemented once
//! per database, and [`open`] picks the database a URL names.
//!
//! The store speaks in domain types and in whole units of work: each method is one transaction
//! that either commits entirely or not at all, so the service never sees a half-written grant.
//! Conditional writes (not timing) decide races: a refresh token is consumed by an `UPDATE …
//! WHERE consumed_at IS NULL`, and only the caller whose update touched the row may issue its
//! successor.

pub mod cleanup;
pub mod metered;
pub mod postgres;
pub mod queue;
mod rows;
pub mod sqlite;

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;

pub use cleanup::{CleanupPolicy, CleanupRound, CleanupRun, Retention};

use crate::config::DatabaseSettings;
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::client::{Client, TokenFormat};
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::jwt::KeyState;
use crate::domain::token::{TokenHash, TokenRef};

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy beyond the timeout: try again later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated (e.g. a client id that already exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else: a bug or corrupted data.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    /// The same failure again, for each of several callers a single failure answers (a batch
    /// of writes, a batch of reads): kind and message are kept.
    #[must_use]
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Conflict(m) => Self::Conflict(m.clone()),
            Self::Other(e) => Self::Other(anyhow::anyhow!("{e:#}")),
        }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A new token family, written with its first tokens.
#[derive(Debug, Clone)]
pub struct NewFamily {
    /// Family id (UUID v7).
    pub id: String,
    /// Owner.
    pub client_id: String,
    /// The original grant.
    pub scope: String,
    /// `client_type` of the original request.
    pub client_type: crate::domain::client::ClientType,
    /// Creation time.
    pub created_at: UnixTime,
    /// True if the grant was made with a DPoP proof: every refresh must carry one too.
    pub dpop_bound: bool,
}

/// A new access token (opaque or JWT), as stored: never the token itself.
#[derive(Debug, Clone)]
pub struct NewAccessToken {
    /// Token id: the JWT `jti`, or a UUID v7 for opaque tokens.
    pub id: String,
    /// SHA-256 of the token string.
    pub hash: TokenHash,
    /// Family.
    pub family_id: String,
    /// Owner.
    pub client_id: String,
    /// Format.
    pub format: TokenFormat,
    /// Granted scope.
    pub scope: String,
    /// Audience.
    pub audience: String,
    /// Issue time.
    pub issued_at: UnixTime,
    /// Expiry.
    pub expires_at: UnixTime,
    /// The key that signed it (JWTs only).
    pub signing_kid: Option<String>,
    /// The thumbprint of the key a DPoP-bound token is bound to (`cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

/// A new refresh token, as stored.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    /// Token id (UUID v7): the id inside the token.
    pub id: String,
    /// SHA-256 of the token string.
    pub hash: TokenHash,
    /// Family.
    pub family_id: String,
    /// Owner.
    pub client_id: String,
    /// The family's original grant (RFC 6749 §6).
    pub scope: String,
    /// Issue time.
    pub issued_at: UnixTime,
    /// Expiry.
    pub expires_at: UnixTime,
}

impl NewAccessToken {
    /// How to find this token again (opaque tokens carry their id).
    #[must_use]
    pub fn key(&self) -> TokenRef {
        TokenRef {
            id: self.id.clone(),
            hash: self.hash,
        }
    }
}

impl NewRefreshToken {
    /// How to find this token again.
    #[must_use]
    pub fn key(&self) -> TokenRef {
        TokenRef {
            id: self.id.clone(),
            hash: self.hash,
        }
    }
}

/// What the store knows about an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Token id (`jti`).
    pub id: String,
    /// Owner.
    pub client_id: String,
    /// Family.
    pub family_id: String,
    /// Format.
    pub format: TokenFormat,
    /// Scope.
    pub scope: String,
    /// Audience.
    pub audience: String,
    /// Issue time.
    pub issued_at: UnixTime,
    /// Expiry.
    pub expires_at: UnixTime,
    /// True if the token or its family was revoked, its client is disabled, or the key that
    /// signed it was revoked.
    pub revoked: bool,
    /// The thumbprint of the key a DPoP-bound token is bound to (`cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

/// How to find an access token.
#[derive(Debug, Clone, Copy)]
pub enum AccessKey<'a> {
    /// An opaque token: by its id, and only if the stored hash matches.
    Opaque(&'a TokenRef),
    /// By the `jti` of a JWT.
    Id(&'a str),
}

/// A signing key as stored (private part sealed).
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// JOSE algorithm name.
    pub alg: String,
    /// Its place in the lifecycle.
    pub state: KeyState,
    /// PKCS#8, sealed under the key-encryption key with the kid as associated data.
    pub sealed_private_key: Vec<u8>,
    /// Creation time.
    pub created_at: UnixTime,
    /// For a retired key: when it leaves the JWKS.
    pub published_until: Option<UnixTime>,
}

/// The outcome of trying to consume a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was consumed and its successors written.
    Rotated,
    /// Someone else consumed or revoked it (or its family) first; nothing was written.
    Lost,
}

/// The outcome of a client update ([`ClientStore::update_client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientUpdate {
    /// Written; the stored revision is one more than the one the update was made from.
    Updated,
    /// The client changed after the update's copy was read; nothing was written.
    Stale,
    /// There is no such client.
    NotFound,
}

/// What one cleanup statement group removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Rows deleted.
    pub rows: u64,
    /// How long the deletes held the database: on SQLite the job's time in the group writer,
    /// without its wait for its turn or the shared commit (which every request batched with it
    /// waits for); on PostgreSQL the transaction's. The cleanup sizes and paces its rounds by it
    /// ([`cleanup`]).
    pub(crate) busy: std::time::Duration,
}

impl Purged {
    /// `rows` deleted by work that started at `started`.
    #[must_use]
    pub fn since(started: std::time::Instant, rows: u64) -> Self {
        Self {
            rows,
            busy: started.elapsed(),
        }
    }
}

impl std::ops::Add for Purged {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            rows: self.rows + other.rows,
            busy: self.busy + other.busy,
        }
    }
}

/// Connection pool figures, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
}

/// The clients.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Inserts a new client; `Conflict` if the id exists.
    async fn insert_client(&self, client: &Client) -> StoreResult<()>;
    /// Finds a client by id.
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>>;
    /// Up to `limit` clients with ids after `after`, ordered by id (keyset pagination).
    async fn list_clients(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Client>>;
    /// Replaces a client's stored fields with `client`'s, if the stored row is still at
    /// `client.revision` (the revision `client` was read at); the stored revision becomes
    /// `client.revision + 1`. [`ClientUpdate::Stale`] if the row has changed since (nothing is
    /// written), [`ClientUpdate::NotFound`] if there is no such client.
    async fn update_client(&self, client: &Client) -> StoreResult<ClientUpdate>;
    /// Deletes a client and every token it holds; false if it did not exist.
    async fn delete_client(&self, id: &str) -> StoreResult<bool>;
}

/// The signing keys, and the small named values (`meta`) the root key is kept in.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores `value` under `key` unless a value is already there; returns the stored value.
    async fn meta_insert_or_get(&self, key: &str, value: &str) -> StoreResult<String>;
    /// Reads the value under `key` (a read: no write transaction).
    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>>;
    /// Replaces the value under `key` if it is still `expected`; false otherwise.
    async fn meta_replace(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool>;

    /// Every signing key.
    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Inserts `key` as the active key unless an active key exists already (two instances
    /// starting at once create one key, not two).
    async fn insert_first_active_key(&self, key: &StoredKey) -> StoreResult<()>;
    /// Inserts a key in state `next` unless a `next` key exists already.
    async fn insert_next_key(&self, key: &StoredKey) -> StoreResult<()>;
    /// Atomically: the active key becomes `retired` (published until `retired_until`) and the
    /// `next` key `next_kid` becomes active. False (nothing changed) if `next_kid` is not the
    /// next key.
    async fn activate_next_key(
        &self,
        next_kid: &str,
        now: UnixTime,
        retired_until: UnixTime,
    ) -> StoreResult<bool>;
    /// Moves a non-active key to `retired` (with `published_until`) or `revoked`. False if
    /// the key does not exist, is the active key, or is already revoked.
    async fn set_key_state(
        &self,
        kid: &str,
        state: KeyState,
        published_until: Option<UnixTime>,
    ) -> StoreResult<bool>;
}

/// Token families and their access and refresh tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Writes a new family with its first access and refresh tokens and the audit event,
    /// atomically.
    async fn issue(
        &self,
        family: &NewFamily,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// Finds a refresh token with its family's facts (by id, and only if the stored hash
    /// matches).
    async fn find_refresh(&self, token: &TokenRef) -> StoreResult<Option<RefreshRecord>>;
    /// Consumes refresh token `old` and writes its successors, atomically, if and only if the
    /// token and its family are unrevoked and the token is unconsumed (or was consumed at or
    /// after `reuse_cutoff`, the start of the grace window).
    async fn rotate_refresh(
        &self,
        old: &TokenRef,
        reuse_cutoff: UnixTime,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<RotateOutcome>;
    /// Revokes a whole family (idempotent), recording `audit` in the same transaction.
    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// Finds an access token.
    async fn find_access(&self, key: AccessKey<'_>) -> StoreResult<Option<AccessRecord>>;
    /// Revokes one access token (idempotent), recording `audit` in the same transaction.
    async fn revoke_access(&self, id: &str, now: UnixTime, audit: &AuditEvent) -> StoreResult<()>;
    /// Revokes every family (so every token) of a client; returns how many families.
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64>;
    /// Revokes every access and refresh token issued before `before`; returns how many.
    async fn revoke_issued_before(
        &self,
        before: UnixTime,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64>;
}

/// The audit trail.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Records an event on its own.
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Reads events, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
}

/// The database itself: schema, health, connections, and the cleanup of what expired. Each
/// backend owns its cleanup policy whole ([`CleanupPolicy`]: how rounds are sized and how many
/// audit events a round takes); [`Maintenance::cleanup_round`] applies it.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Applies the embedded migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// A cheap query proving the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Whether the store can serve requests, writes included (`/readyz`). By default a
    /// [`ping`](Self::ping); the SQLite store also checks its files and commits a probe write.
    async fn ready(&self) -> StoreResult<()> {
        self.ping().await
    }
    /// Connection pool figures.
    fn pool_stats(&self) -> PoolStats;
    /// Closes the connections (on shutdown), after in-flight work finished.
    async fn close(&self);

    /// This backend's cleanup policy.
    fn cleanup_policy(&self) -> CleanupPolicy;
    /// Deletes up to `batch` events older than `before`.
    async fn purge_audit(&self, before: UnixTime, batch: u32) -> StoreResult<Purged>;
    /// Deletes up to `batch` families, up to `batch` access tokens and up to `batch` refresh
    /// tokens that expired or were revoked before `before`, up to `batch` used JWT ids that
    /// expired before `before`, and retired keys no longer published at `before`; returns how many rows went, and how long the deletes took. Deleting a family
    /// deletes its tokens. A deleted token is unknown afterwards, which every caller treats like
    /// a revoked one.
    async fn purge_expired(&self, before: UnixTime, batch: u32) -> StoreResult<Purged>;
    /// One round of the cleanup `run`: one batch of expired and revoked tokens, then the old
    /// audit events this backend's policy allows; returns what went and when the next round
    /// may start ([`CleanupRound`]).
    async fn cleanup_round(
        &self,
        run: &mut CleanupRun,
        retention: Retention,
    ) -> StoreResult<CleanupRound> {
        cleanup::round(self, run, retention).await
    }
}

/// JWT ids used once (`private_key_jwt` assertions, DPoP proofs), shared by every instance
/// on the database. An id is a SHA-256 digest the caller computes (see
/// [`crate::service::replay`]); a row is kept until `expires_at`, after which the id may be
/// used again and the cleanup deletes it. "Expired" is judged by the database's clock, so all
/// instances agree on it.
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Records `id` as used until `expires_at`. Ok(true): first use. Ok(false): already used (a replay).
    async fn use_once(&self, id: &[u8; 32], expires_at: UnixTime) -> StoreResult<bool>;
    /// Forgets a use this request recorded, after the request failed.
    async fn forget_use(&self, id: &[u8; 32]) -> StoreResult<()>;
}

/// Tessera's persistence: every role, on one database.
pub trait Store:
    ClientStore + KeyStore + TokenStore + AuditStore + ReplayStore + Maintenance + 'static
{
}

impl<T> Store for T where
    T: ClientStore + KeyStore + TokenStore + AuditStore + ReplayStore + Maintenance + 'static
{
}

/// True if `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
#[must_use]
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `<database file><suffix>` for a SQLite database that is a file; `None` for PostgreSQL and
/// in-memory databases. Where generated credentials are handed to the operator.
#[must_use]
pub fn beside_database(database_url: &str, suffix: &str) -> Option<std::path::PathBuf> {
    if is_postgres_url(database_url) {
        return None;
    }
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .unwrap_or(database_url);
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:")
        .then(|| std::path::PathBuf::from(format!("{path}{suffix}")))
}

pub use postgres::redact_url;

/// Opens the store `settings.url` names: PostgreSQL for `postgres://` and `postgresql://`
/// URLs, otherwise SQLite (`sqlite:` URL or a plain file path). Operations are measured
/// ([`metered`]). The schema is not touched: see [`Maintenance::migrate`].
///
/// # Errors
/// An unsupported URL or a database that cannot be opened.
pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.url.as_str();
    if is_postgres_url(url) {
        let tls = postgres::Tls {
            mode: settings.ssl_mode,
            root_cert: settings.ssl_root_cert.clone(),
            cert: settings.ssl_cert.clone(),
            key: settings.ssl_key.clone(),
        };
        let store = postgres::PostgresStore::open_with_tls(url, settings.max_connections, &tls)
            .await
            .with_context(|| format!("opening {}", postgres::redact_url(url)))?;
        return Ok(Arc::new(metered::Metered(store)));
    }
    let url = if url.starts_with("sqlite:") {
        url.to_owned()
    } else {
        format!("sqlite://{url}")
    };
    let store = sqlite::SqliteStore::open(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    Ok(Arc::new(metered::Metered(store)))
}
