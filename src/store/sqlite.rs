//! The embedded store: one SQLite file.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a transaction is on disk before its
//! commit returns, and therefore before any `2xx` that depends on it is sent. Writes go through
//! a pool of exactly one connection and start with `BEGIN IMMEDIATE`: inside one process writers
//! queue in the pool instead of failing with `SQLITE_BUSY`, and another process (the CLI while
//! the server runs) waits on the busy timeout. Reads use a separate pool and never block writes
//! (WAL readers see the last committed state).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};

use super::{
    AccessKey, AccessRecord, NewAccessToken, NewFamily, NewRefreshToken, PoolStats, RotateOutcome,
    Store, StoreError, StoreResult, StoredKey,
};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::client::{Client, ClientType, Profile, SecretHash, TokenFormat};
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::scope::ScopePattern;
use crate::domain::token::TokenHash;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database named by a `sqlite:` URL or a plain path.
    ///
    /// # Errors
    /// If the file cannot be opened or created.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("invalid SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let path = options.get_filename().to_path_buf();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await
            .map_err(map_err)?;
        Ok(Self {
            reader,
            writer,
            path,
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return StoreError::Conflict(db.message().to_owned());
            }
            // SQLITE_BUSY (5) / SQLITE_LOCKED (6) after the busy timeout: transient.
            match db.code().as_deref() {
                Some("5" | "6" | "261" | "517") => StoreError::Unavailable(db.message().to_owned()),
                _ => StoreError::Other(anyhow::Error::new(e)),
            }
        }
        _ => StoreError::Other(anyhow::Error::new(e)),
    }
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Other(anyhow::anyhow!("stored {what} is invalid: {detail}"))
}

fn hash32(bytes: &[u8], what: &str) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| corrupt(what, "hash is not 32 bytes"))
}

fn client_from_row(row: &SqliteRow) -> StoreResult<Client> {
    let secret: Vec<u8> = row.try_get("secret_hash").map_err(map_err)?;
    let previous: Option<Vec<u8>> = row.try_get("previous_secret_hash").map_err(map_err)?;
    let previous_until: Option<i64> = row.try_get("previous_secret_expires_at").map_err(map_err)?;
    let scopes: String = row.try_get("scopes").map_err(map_err)?;
    let format: String = row.try_get("token_format").map_err(map_err)?;
    let profile: Option<String> = row.try_get("profile").map_err(map_err)?;
    let origins: String = row.try_get("origins").map_err(map_err)?;
    let access_ttl: Option<i64> = row.try_get("access_ttl").map_err(map_err)?;
    let refresh_ttl: Option<i64> = row.try_get("refresh_ttl").map_err(map_err)?;
    Ok(Client {
        id: row.try_get("client_id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        secret: SecretHash(hash32(&secret, "client secret")?),
        previous_secret: match (previous, previous_until) {
            (Some(h), Some(until)) => Some((SecretHash(hash32(&h, "client secret")?), until)),
            _ => None,
        },
        scopes: scopes
            .split_whitespace()
            .map(ScopePattern::from_stored)
            .collect(),
        format: TokenFormat::from_str(&format).map_err(|e| corrupt("client", e))?,
        profile: profile
            .map(|p| Profile::from_str(&p))
            .transpose()
            .map_err(|e| corrupt("client", e))?,
        access_ttl: access_ttl.and_then(|v| u32::try_from(v).ok()),
        refresh_ttl: refresh_ttl.and_then(|v| u32::try_from(v).ok()),
        origins: origins.split_whitespace().map(str::to_owned).collect(),
        audience: row.try_get("audience").map_err(map_err)?,
        resource_server: row.try_get("resource_server").map_err(map_err)?,
        resources: row
            .try_get::<String, _>("resources")
            .map_err(map_err)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        disabled: row.try_get::<i64, _>("disabled").map_err(map_err)? != 0,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

fn joined_scopes(client: &Client) -> String {
    client
        .scopes
        .iter()
        .map(ScopePattern::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn insert_access(
    tx: &mut Transaction<'static, Sqlite>,
    a: &NewAccessToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
         audience, issued_at, expires_at, signing_kid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.hash.0[..])
    .bind(&a.family_id)
    .bind(&a.client_id)
    .bind(a.format.as_str())
    .bind(&a.scope)
    .bind(&a.audience)
    .bind(a.issued_at)
    .bind(a.expires_at)
    .bind(&a.signing_kid)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_refresh(
    tx: &mut Transaction<'static, Sqlite>,
    r: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, client_id, scope, issued_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.hash.0[..])
    .bind(&r.family_id)
    .bind(&r.client_id)
    .bind(&r.scope)
    .bind(r.issued_at)
    .bind(r.expires_at)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_audit(tx: &mut Transaction<'static, Sqlite>, e: &AuditEvent) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.id)
    .bind(e.at)
    .bind(&e.event)
    .bind(&e.client_id)
    .bind(&e.request_id)
    .bind(&e.source)
    .bind(e.detail.to_string())
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("migration failed: {e}")))
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.reader.size() + self.writer.size(),
            idle: u32::try_from(self.reader.num_idle() + self.writer.num_idle())
                .unwrap_or(u32::MAX),
        }
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn meta_insert_or_get(&self, key: &str, value: &str) -> StoreResult<String> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }

    async fn meta_replace(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("UPDATE meta SET value = ? WHERE key = ? AND value = ?")
            .bind(value)
            .bind(key)
            .bind(expected)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_client(&self, c: &Client) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, previous_secret_hash, \
             previous_secret_expires_at, scopes, token_format, profile, access_ttl, refresh_ttl, \
             origins, audience, resource_server, resources, disabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.secret.0[..])
        .bind(c.previous_secret.as_ref().map(|(h, _)| h.0.to_vec()))
        .bind(c.previous_secret.as_ref().map(|(_, t)| *t))
        .bind(joined_scopes(c))
        .bind(c.format.as_str())
        .bind(c.profile.map(Profile::as_str))
        .bind(c.access_ttl.map(i64::from))
        .bind(c.refresh_ttl.map(i64::from))
        .bind(c.origins.join(" "))
        .bind(&c.audience)
        .bind(&c.resource_server)
        .bind(c.resources.join(" "))
        .bind(i64::from(c.disabled))
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        let row = sqlx::query("SELECT * FROM clients WHERE client_id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Client>> {
        let rows = sqlx::query(
            "SELECT * FROM clients WHERE (?1 IS NULL OR client_id > ?1) ORDER BY client_id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn update_client(&self, c: &Client) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE clients SET name = ?, secret_hash = ?, previous_secret_hash = ?, \
             previous_secret_expires_at = ?, scopes = ?, token_format = ?, profile = ?, \
             access_ttl = ?, refresh_ttl = ?, origins = ?, audience = ?, resource_server = ?, \
             resources = ?, disabled = ?, updated_at = ? WHERE client_id = ?",
        )
        .bind(&c.name)
        .bind(&c.secret.0[..])
        .bind(c.previous_secret.as_ref().map(|(h, _)| h.0.to_vec()))
        .bind(c.previous_secret.as_ref().map(|(_, t)| *t))
        .bind(joined_scopes(c))
        .bind(c.format.as_str())
        .bind(c.profile.map(Profile::as_str))
        .bind(c.access_ttl.map(i64::from))
        .bind(c.refresh_ttl.map(i64::from))
        .bind(c.origins.join(" "))
        .bind(&c.audience)
        .bind(&c.resource_server)
        .bind(c.resources.join(" "))
        .bind(i64::from(c.disabled))
        .bind(c.updated_at)
        .bind(&c.id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM clients WHERE client_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, alg, state, private_key, created_at, published_until FROM signing_keys \
             ORDER BY created_at, kid",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid").map_err(map_err)?,
                    alg: r.try_get("alg").map_err(map_err)?,
                    state: r.try_get("state").map_err(map_err)?,
                    sealed_private_key: r.try_get("private_key").map_err(map_err)?,
                    created_at: r.try_get("created_at").map_err(map_err)?,
                    published_until: r.try_get("published_until").map_err(map_err)?,
                })
            })
            .collect()
    }

    async fn insert_first_active_key(&self, k: &StoredKey) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, private_key, created_at, activated_at) \
             SELECT ?, ?, 'active', ?, ?, ? \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = 'active')",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.sealed_private_key)
        .bind(k.created_at)
        .bind(k.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn insert_next_key(&self, k: &StoredKey) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, private_key, created_at) \
             SELECT ?, ?, 'next', ?, ? \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = 'next')",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.sealed_private_key)
        .bind(k.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn activate_next_key(
        &self,
        next_kid: &str,
        now: UnixTime,
        retired_until: UnixTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'retired', retired_at = ?, published_until = ? \
             WHERE state = 'active'",
        )
        .bind(now)
        .bind(retired_until)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let promoted = sqlx::query(
            "UPDATE signing_keys SET state = 'active', activated_at = ? WHERE kid = ? AND state = 'next'",
        )
        .bind(now)
        .bind(next_kid)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if promoted.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn set_key_state(
        &self,
        kid: &str,
        state: &str,
        published_until: Option<UnixTime>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE signing_keys SET state = ?, published_until = ?, \
             retired_at = COALESCE(retired_at, ?) \
             WHERE kid = ? AND state NOT IN ('active', 'revoked')",
        )
        .bind(state)
        .bind(published_until)
        .bind(published_until)
        .bind(kid)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn issue(
        &self,
        family: &NewFamily,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO token_families (family_id, client_id, scope, client_type, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&family.id)
        .bind(&family.client_id)
        .bind(&family.scope)
        .bind(family.client_type.as_str())
        .bind(family.created_at)
        .bind(access.expires_at.max(refresh.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_access(&mut tx, access).await?;
        insert_refresh(&mut tx, refresh).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshRecord>> {
        let row = sqlx::query(
            "SELECT r.family_id, r.client_id, r.scope, r.issued_at, r.expires_at, r.consumed_at, \
             (r.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL) AS revoked, f.client_type \
             FROM refresh_tokens r JOIN token_families f ON f.family_id = r.family_id \
             WHERE r.token_hash = ?",
        )
        .bind(&hash.0[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let client_type: String = row.try_get("client_type").map_err(map_err)?;
        Ok(Some(RefreshRecord {
            family_id: row.try_get("family_id").map_err(map_err)?,
            client_id: row.try_get("client_id").map_err(map_err)?,
            scope: row.try_get("scope").map_err(map_err)?,
            client_type: ClientType::parse(&client_type).map_err(|e| corrupt("family", e))?,
            issued_at: row.try_get("issued_at").map_err(map_err)?,
            expires_at: row.try_get("expires_at").map_err(map_err)?,
            consumed_at: row.try_get("consumed_at").map_err(map_err)?,
            revoked: row.try_get::<i64, _>("revoked").map_err(map_err)? != 0,
        }))
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        reuse_cutoff: UnixTime,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<RotateOutcome> {
        let now = refresh.issued_at;
        let mut tx = self.begin_write().await?;
        let family = sqlx::query(
            "UPDATE token_families SET refreshed_at = ?, expires_at = MAX(expires_at, ?) \
             WHERE family_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(access.expires_at.max(refresh.expires_at))
        .bind(&refresh.family_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let consumed = sqlx::query(
            "UPDATE refresh_tokens SET consumed_at = COALESCE(consumed_at, ?) \
             WHERE token_hash = ? AND family_id = ? AND revoked_at IS NULL \
             AND (consumed_at IS NULL OR consumed_at >= ?)",
        )
        .bind(now)
        .bind(&old.0[..])
        .bind(&refresh.family_id)
        .bind(reuse_cutoff)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if family.rows_affected() != 1 || consumed.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Ok(RotateOutcome::Lost);
        }
        insert_access(&mut tx, access).await?;
        insert_refresh(&mut tx, refresh).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(RotateOutcome::Rotated)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE token_families SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_access(&self, key: AccessKey<'_>) -> StoreResult<Option<AccessRecord>> {
        macro_rules! select_access {
            ($where:literal) => {
                concat!(
                    "SELECT a.token_id, a.client_id, a.family_id, a.format, a.scope, a.audience, \
                     a.issued_at, a.expires_at, \
                     (a.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL OR c.disabled != 0 \
                      OR COALESCE(k.state = 'revoked', 0)) AS revoked \
                     FROM access_tokens a \
                     JOIN token_families f ON f.family_id = a.family_id \
                     JOIN clients c ON c.client_id = a.client_id \
                     LEFT JOIN signing_keys k ON k.kid = a.signing_kid ",
                    $where
                )
            };
        }
        let query = match key {
            AccessKey::Hash(h) => {
                sqlx::query(select_access!("WHERE a.token_hash = ?")).bind(h.0.to_vec())
            }
            AccessKey::Id(id) => {
                sqlx::query(select_access!("WHERE a.token_id = ?")).bind(id.to_owned())
            }
        };
        let row = query.fetch_optional(&self.reader).await.map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let format: String = row.try_get("format").map_err(map_err)?;
        Ok(Some(AccessRecord {
            id: row.try_get("token_id").map_err(map_err)?,
            client_id: row.try_get("client_id").map_err(map_err)?,
            family_id: row.try_get("family_id").map_err(map_err)?,
            format: TokenFormat::from_str(&format).map_err(|e| corrupt("access token", e))?,
            scope: row.try_get("scope").map_err(map_err)?,
            audience: row.try_get("audience").map_err(map_err)?,
            issued_at: row.try_get("issued_at").map_err(map_err)?,
            expires_at: row.try_get("expires_at").map_err(map_err)?,
            revoked: row.try_get::<i64, _>("revoked").map_err(map_err)? != 0,
        }))
    }

    async fn revoke_access(&self, id: &str, now: UnixTime, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE access_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE token_families SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn revoke_issued_before(
        &self,
        before: UnixTime,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let access = sqlx::query(
            "UPDATE access_tokens SET revoked_at = ? WHERE issued_at < ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let refresh = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE issued_at < ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(access.rows_affected() + refresh.rows_affected())
    }

    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, event, client_id, request_id, source, detail FROM audit_events \
             WHERE (?1 IS NULL OR client_id = ?1) AND (?2 IS NULL OR event = ?2) \
             AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR id < ?4) \
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(&q.client_id)
        .bind(&q.event)
        .bind(q.since)
        .bind(&q.before_id)
        .bind(i64::from(q.limit.clamp(1, 1000)))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail").map_err(map_err)?;
                Ok(AuditEvent {
                    id: r.try_get("id").map_err(map_err)?,
                    at: r.try_get("at").map_err(map_err)?,
                    event: r.try_get("event").map_err(map_err)?,
                    client_id: r.try_get("client_id").map_err(map_err)?,
                    request_id: r.try_get("request_id").map_err(map_err)?,
                    source: r.try_get("source").map_err(map_err)?,
                    detail: serde_json::from_str(&detail).map_err(|e| corrupt("audit event", e))?,
                })
            })
            .collect()
    }

    async fn purge_audit(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM audit_events WHERE id IN \
             (SELECT id FROM audit_events WHERE at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn purge_expired(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let families = sqlx::query(
            "DELETE FROM token_families WHERE family_id IN \
             (SELECT family_id FROM token_families WHERE expires_at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let access = sqlx::query(
            "DELETE FROM access_tokens WHERE token_id IN \
             (SELECT token_id FROM access_tokens WHERE expires_at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let refresh = sqlx::query(
            "DELETE FROM refresh_tokens WHERE token_hash IN \
             (SELECT token_hash FROM refresh_tokens WHERE expires_at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // A retired key also stays while any token it signed is unexpired, whatever lifetime
        // the process that retired it assumed.
        let keys = sqlx::query(
            "DELETE FROM signing_keys WHERE state = 'retired' AND published_until < ?1 \
             AND NOT EXISTS (SELECT 1 FROM access_tokens a \
                             WHERE a.signing_kid = signing_keys.kid AND a.expires_at >= ?1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(families.rows_affected()
            + access.rows_affected()
            + refresh.rows_affected()
            + keys.rows_affected())
    }
}
