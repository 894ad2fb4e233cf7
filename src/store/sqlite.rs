//! The embedded store: one SQLite file.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a transaction is on disk before its
//! commit returns, and therefore before any `2xx` that depends on it is sent. Writes go through
//! a pool of exactly one connection and start with `BEGIN IMMEDIATE`: inside one process writers
//! queue instead of failing with `SQLITE_BUSY`, and another process (the CLI while the server
//! runs) waits on the busy timeout. The hot-path writes (issue, refresh, revoke, audit) are
//! group-committed: many requests share one transaction and one flush (see
//! [`super::sqlite_writer`]). Reads use a separate pool and never block writes (WAL readers see
//! the last committed state).
//!
//! Faults of the environment (docs/fault-model.md): a full disk, an I/O error, a file that
//! cannot be opened or written, are [`StoreError::Unavailable`] on every connection (`503`);
//! the database files are checked before every commit ([`super::sqlite_files`]); readiness
//! commits a probe write; migrations run inside one write transaction, so that processes
//! starting together on a new file apply them one after the other.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::rows::{AccessRow, AuditRow, ClientRow, KeyRow, RefreshRow, bind_client_fields};
use super::sqlite_clients::ClientCache;
use super::sqlite_files::DatabaseFiles;
use super::sqlite_read::ReadPool;
use super::sqlite_writer::{GroupWriter, is_environmental_code, map_err as writer_err};
use super::{
    AccessKey, AccessRecord, AuditStore, CleanupPolicy, ClientStore, ClientUpdate, KeyStore,
    Maintenance, NewAccessToken, NewFamily, NewRefreshToken, PoolStats, Purged, RotateOutcome,
    StoreError, StoreResult, StoredKey, TokenStore,
};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::client::Client;
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::token::TokenRef;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    point_reads: std::sync::Arc<ReadPool>,
    clients: std::sync::Arc<ClientCache>,
    writer: SqlitePool,
    group: GroupWriter,
    files: std::sync::Arc<DatabaseFiles>,
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
        switch_to_wal(&path).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            // A transaction future dropped half-way (an admin request whose client went away)
            // can leave the connection inside its transaction, holding SQLite's write lock; the
            // next user would then write into it. No transaction is legitimately open when the
            // connection is handed out, so roll back whatever is (an error when none is open is
            // expected and ignored). Only the rare operator writes use this pool.
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    let _ = sqlx::Executor::execute(&mut *conn, "ROLLBACK").await;
                    Ok(true)
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await
            .map_err(map_err)?;
        let files = std::sync::Arc::new(DatabaseFiles::new(&path));
        let store = Self {
            reader,
            point_reads: std::sync::Arc::new(ReadPool::new(&path)),
            clients: std::sync::Arc::new(ClientCache::open(&path)),
            group: GroupWriter::start(&path, files.clone())?,
            writer,
            files,
            path,
        };
        // A read opens the write-ahead log and its index if they are not open yet, so that
        // all three files are recorded as this process opened them.
        store.ping().await?;
        store.files.record();
        Ok(store)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`begin_write`](Self::begin_write) for a change to the `clients` table, refused when
    /// this process could not tell the others about it (their cached copies would stay).
    async fn begin_client_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        if !self.clients.can_signal() {
            return Err(StoreError::Other(anyhow::anyhow!(
                "cannot change clients: the file {} beside the database cannot be opened for \
                 writing, so running servers would not see the change",
                self.clients.signal_path().display()
            )));
        }
        self.begin_write().await
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.files.check()?;
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }

    /// Commits a transaction of [`begin_write`](Self::begin_write), unless a database file
    /// was removed or replaced since it began (then it is rolled back: nothing would last).
    async fn commit(&self, tx: Transaction<'static, Sqlite>) -> StoreResult<()> {
        if let Err(e) = self.files.check() {
            let _ = tx.rollback().await;
            return Err(e);
        }
        tx.commit().await.map_err(map_err)
    }

    /// Whether a migration of this binary has not been applied yet. True when that cannot be
    /// told (a new database has no `_sqlx_migrations` table), so that a doubt signals.
    async fn migrations_pending(&self) -> bool {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.writer)
                .await
            {
                Ok(applied) => applied,
                Err(_) => return true,
            };
        MIGRATOR
            .iter()
            .any(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
    }
}

/// Puts the database file at `path` (created if missing) in WAL mode, which then persists in
/// the file. Switching needs an exclusive lock, and SQLite answers "database is locked" at once,
/// without waiting out the busy timeout, when two connections that both read the file try it
/// (each would wait for the other): so processes starting together on a new file retry here,
/// for up to the busy timeout, before any other connection opens it. On a file already in WAL
/// mode the first attempt is a no-op.
async fn switch_to_wal(path: &Path) -> StoreResult<()> {
    const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    let started = std::time::Instant::now();
    loop {
        let attempt = Connection::open(path).and_then(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            })
        });
        match attempt {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && started.elapsed() < BUSY_TIMEOUT =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(writer_err(e)),
        }
    }
}

pub(super) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => {
            // A duplicate, or a row written for one that a concurrent call deleted (a grant
            // for a client deleted a moment ago): the write lost a race.
            if db.is_unique_violation() || db.is_foreign_key_violation() {
                return StoreError::Conflict(db.message().to_owned());
            }
            // Busy or locked after the busy timeout, disk full, I/O errors and the like: the
            // same codes as on the group writer's connection (`sqlite_writer::map_err`).
            match db.code().and_then(|code| code.parse::<i32>().ok()) {
                Some(code) if is_environmental_code(code) => {
                    StoreError::Unavailable(db.message().to_owned())
                }
                _ => StoreError::Other(anyhow::Error::new(e)),
            }
        }
        _ => StoreError::Other(anyhow::Error::new(e)),
    }
}

fn insert_access(conn: &Connection, a: &NewAccessToken) -> StoreResult<()> {
    change(
        conn,
        "INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
         audience, issued_at, expires_at, signing_kid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            a.id,
            &a.hash.0[..],
            a.family_id,
            a.client_id,
            a.format.as_str(),
            a.scope,
            a.audience,
            a.issued_at,
            a.expires_at,
            a.signing_kid
        ],
    )?;
    Ok(())
}

fn insert_refresh(conn: &Connection, r: &NewRefreshToken) -> StoreResult<()> {
    change(
        conn,
        "INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
         expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            r.id,
            &r.hash.0[..],
            r.family_id,
            r.client_id,
            r.scope,
            r.issued_at,
            r.expires_at
        ],
    )?;
    Ok(())
}

fn insert_audit(conn: &Connection, e: &AuditEvent) -> StoreResult<()> {
    change(
        conn,
        "INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.id,
            e.at,
            e.event,
            e.client_id,
            e.request_id,
            e.source,
            e.detail.to_string()
        ],
    )?;
    Ok(())
}

/// Runs one statement (prepared once, cached) on the writer's connection; returns the rows it
/// changed.
fn change(conn: &Connection, sql: &str, values: impl rusqlite::Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(values))
        .map_err(writer_err)
}

/// One cleanup batch: expired or revoked families, access and refresh tokens ($1 the cutoff,
/// $2 the batch size). Each `OR` is served by two indexes (expiry, and the partial index of
/// revoked rows), so a batch never scans a table: it runs inside the group writer's
/// transaction, and a scan there stalls every token request batched with it (the test below).
const PURGE_TOKENS_SQL: [&str; 3] = [
    "DELETE FROM token_families WHERE family_id IN (SELECT family_id FROM token_families \
     WHERE expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
    "DELETE FROM access_tokens WHERE token_id IN (SELECT token_id FROM access_tokens \
     WHERE expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
    "DELETE FROM refresh_tokens WHERE token_id IN (SELECT token_id FROM refresh_tokens \
     WHERE expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
];

/// The hot-path client lookup, its columns in the order `ClientRow` decodes them (built once).
static SELECT_CLIENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM clients WHERE client_id = ?1",
        ClientRow::COLUMNS
    )
});

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[async_trait]
impl ClientStore for SqliteStore {
    async fn insert_client(&self, c: &Client) -> StoreResult<()> {
        let mut tx = self.begin_client_write().await?;
        // Signals after the commit (an absent entry cached for this id must go), or when this
        // future is dropped half-way (sqlite_clients.rs).
        let _signal = self.clients.signal_after();
        let query = sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, previous_secret_hash, \
             previous_secret_expires_at, scopes, token_format, profile, access_ttl, refresh_ttl, \
             origins, audience, resource_server, resources, disabled, created_at, updated_at, \
             revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id);
        bind_client_fields(query, c)
            .bind(c.created_at)
            .bind(c.updated_at)
            .bind(c.revision)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        self.commit(tx).await
    }
    /// Through the client cache (`sqlite_clients.rs`), which every client write above
    /// invalidates, in this process and in every other one on the same file.
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.clients.get(id, || {
            let row = self.point_reads.read(|conn| {
                conn.prepare_cached(&SELECT_CLIENT)?
                    .query_row([id], ClientRow::from_rusqlite)
                    .optional()
            })?;
            row.map(Client::try_from).transpose()
        })
    }
    async fn list_clients(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Client>> {
        let rows: Vec<ClientRow> = sqlx::query_as(
            "SELECT * FROM clients WHERE (?1 IS NULL OR client_id > ?1) ORDER BY client_id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(Client::try_from).collect()
    }
    /// The signal fires whatever the outcome: after a stale update, this process's cached copy
    /// (which the caller may have read) is reloaded too.
    async fn update_client(&self, c: &Client) -> StoreResult<ClientUpdate> {
        let mut tx = self.begin_client_write().await?;
        let _signal = self.clients.signal_after();
        let query = sqlx::query(
            "UPDATE clients SET name = ?, secret_hash = ?, previous_secret_hash = ?, \
             previous_secret_expires_at = ?, scopes = ?, token_format = ?, profile = ?, \
             access_ttl = ?, refresh_ttl = ?, origins = ?, audience = ?, resource_server = ?, \
             resources = ?, disabled = ?, updated_at = ?, revision = revision + 1 \
             WHERE client_id = ? AND revision = ?",
        );
        let done = bind_client_fields(query, c)
            .bind(c.updated_at)
            .bind(&c.id)
            .bind(c.revision)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let outcome = if done.rows_affected() == 1 {
            ClientUpdate::Updated
        } else if sqlx::query("SELECT 1 FROM clients WHERE client_id = ?")
            .bind(&c.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .is_some()
        {
            ClientUpdate::Stale
        } else {
            ClientUpdate::NotFound
        };
        self.commit(tx).await?;
        Ok(outcome)
    }
    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_client_write().await?;
        let _signal = self.clients.signal_after();
        let done = sqlx::query("DELETE FROM clients WHERE client_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        self.commit(tx).await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)
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
        self.commit(tx).await?;
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
        self.commit(tx).await?;
        Ok(done.rows_affected() == 1)
    }
    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, alg, state, private_key, created_at, published_until FROM signing_keys \
             ORDER BY created_at, kid",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        Ok(rows.into_iter().map(StoredKey::from).collect())
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
        self.commit(tx).await
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
        self.commit(tx).await
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
        self.commit(tx).await?;
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
        self.commit(tx).await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn issue(
        &self,
        family: &NewFamily,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let (family, access, refresh, audit) = (
            family.clone(),
            access.clone(),
            refresh.clone(),
            audit.clone(),
        );
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "INSERT INTO token_families (family_id, client_id, scope, client_type, \
                     created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        family.id,
                        family.client_id,
                        family.scope,
                        family.client_type.as_str(),
                        family.created_at,
                        access.expires_at.max(refresh.expires_at)
                    ],
                )?;
                insert_access(conn, &access)?;
                insert_refresh(conn, &refresh)?;
                insert_audit(conn, &audit)?;
                Ok(((), true))
            })
            .await
    }
    async fn find_refresh(&self, token: &TokenRef) -> StoreResult<Option<RefreshRecord>> {
        let id = token.refresh_row_id();
        let row = self.point_reads.read(|conn| {
            conn.prepare_cached(
                "SELECT r.family_id, r.client_id, r.scope, r.issued_at, r.expires_at, r.consumed_at, \
                 (r.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL) AS revoked, f.client_type \
                 FROM refresh_tokens r JOIN token_families f ON f.family_id = r.family_id \
                 WHERE r.token_id = ?1 AND r.token_hash = ?2",
            )?
            .query_row(params![id, &token.hash.0[..]], RefreshRow::from_rusqlite)
            .optional()
        })?;
        row.map(RefreshRecord::try_from).transpose()
    }
    async fn rotate_refresh(
        &self,
        old: &TokenRef,
        reuse_cutoff: UnixTime,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<RotateOutcome> {
        let (old_id, old_hash) = (old.refresh_row_id(), old.hash);
        let (access, refresh, audit) = (access.clone(), refresh.clone(), audit.clone());
        self.group
            .write(move |conn| {
                let now = refresh.issued_at;
                // Check first, write after: a lost race then writes nothing at all, which lets
                // the batch skip savepoints (see `sqlite_writer`). Nothing can change in between:
                // this thread is the only writer while its transaction is open.
                let usable: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM refresh_tokens r \
                         JOIN token_families f ON f.family_id = r.family_id \
                         WHERE r.token_id = ?1 AND r.token_hash = ?2 AND r.family_id = ?3 \
                         AND r.revoked_at IS NULL AND f.revoked_at IS NULL \
                         AND (r.consumed_at IS NULL OR r.consumed_at >= ?4))",
                    )
                    .and_then(|mut st| {
                        st.query_row(
                            params![old_id, &old_hash.0[..], refresh.family_id, reuse_cutoff],
                            |row| row.get(0),
                        )
                    })
                    .map_err(writer_err)?;
                if !usable {
                    return Ok((RotateOutcome::Lost, false));
                }
                let family = change(
                    conn,
                    "UPDATE token_families SET refreshed_at = ?1, expires_at = MAX(expires_at, ?2) \
                     WHERE family_id = ?3 AND revoked_at IS NULL",
                    params![
                        now,
                        access.expires_at.max(refresh.expires_at),
                        refresh.family_id
                    ],
                )?;
                let consumed = change(
                    conn,
                    "UPDATE refresh_tokens SET consumed_at = COALESCE(consumed_at, ?1) \
                     WHERE token_id = ?2 AND token_hash = ?3 AND family_id = ?4 \
                     AND revoked_at IS NULL AND (consumed_at IS NULL OR consumed_at >= ?5)",
                    params![
                        now,
                        old_id,
                        &old_hash.0[..],
                        refresh.family_id,
                        reuse_cutoff
                    ],
                )?;
                if family != 1 || consumed != 1 {
                    // Cannot happen after the check above; undone all the same.
                    return Ok((RotateOutcome::Lost, false));
                }
                insert_access(conn, &access)?;
                insert_refresh(conn, &refresh)?;
                insert_audit(conn, &audit)?;
                Ok((RotateOutcome::Rotated, true))
            })
            .await
    }
    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let (family_id, audit) = (family_id.to_owned(), audit.clone());
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "UPDATE token_families SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
                    params![now, family_id],
                )?;
                insert_audit(conn, &audit)?;
                Ok(((), true))
            })
            .await
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
        let row = self.point_reads.read(|conn| match key {
            AccessKey::Opaque(TokenRef { id: Some(id), hash }) => conn
                .prepare_cached(select_access!(
                    "WHERE a.token_id = ?1 AND a.token_hash = ?2"
                ))?
                .query_row(params![id, &hash.0[..]], AccessRow::from_rusqlite)
                .optional(),
            // Minted before ids were embedded: the partial index of such rows (migration 0005).
            AccessKey::Opaque(TokenRef { id: None, hash }) => conn
                .prepare_cached(select_access!(
                    "WHERE a.token_hash = ?1 AND a.legacy_hash = 1"
                ))?
                .query_row([&hash.0[..]], AccessRow::from_rusqlite)
                .optional(),
            AccessKey::Id(id) => conn
                .prepare_cached(select_access!("WHERE a.token_id = ?1"))?
                .query_row([id], AccessRow::from_rusqlite)
                .optional(),
        })?;
        row.map(AccessRecord::try_from).transpose()
    }
    async fn revoke_access(&self, id: &str, now: UnixTime, audit: &AuditEvent) -> StoreResult<()> {
        let (id, audit) = (id.to_owned(), audit.clone());
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "UPDATE access_tokens SET revoked_at = ?1 WHERE token_id = ?2 AND revoked_at IS NULL",
                    params![now, id],
                )?;
                insert_audit(conn, &audit)?;
                Ok(((), true))
            })
            .await
    }
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let (client_id, audit) = (client_id.to_owned(), audit.clone());
        self.group
            .write(move |conn| {
                let n = change(
                    conn,
                    "UPDATE token_families SET revoked_at = ?1 WHERE client_id = ?2 AND revoked_at IS NULL",
                    params![now, client_id],
                )?;
                insert_audit(conn, &audit)?;
                Ok((n as u64, true))
            })
            .await
    }
    async fn revoke_issued_before(
        &self,
        before: UnixTime,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let audit = audit.clone();
        self.group
            .write(move |conn| {
                let access = change(
                    conn,
                    "UPDATE access_tokens SET revoked_at = ?1 WHERE issued_at < ?2 AND revoked_at IS NULL",
                    params![now, before],
                )?;
                let refresh = change(
                    conn,
                    "UPDATE refresh_tokens SET revoked_at = ?1 WHERE issued_at < ?2 AND revoked_at IS NULL",
                    params![now, before],
                )?;
                insert_audit(conn, &audit)?;
                Ok(((access + refresh) as u64, true))
            })
            .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let event = event.clone();
        self.group
            .write(move |conn| {
                insert_audit(conn, &event)?;
                Ok(((), true))
            })
            .await
    }
    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
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
        rows.into_iter().map(AuditEvent::try_from).collect()
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        // A migration may change the `clients` table: other processes must reload. Only when
        // one is pending: every CLI command migrates when it starts, and a signal for nothing
        // made a running server reload every client it had cached, at each `client list`.
        let pending = self.migrations_pending().await;
        let _signal = pending.then(|| self.clients.signal_after());
        if !pending {
            // Nothing to apply (and applied migrations are never undone): the run only checks
            // the applied ones against this binary's, with no write, so it needs no lock. Every
            // CLI command migrates when it starts; this keeps it off a busy server's write lock.
            return MIGRATOR
                .run(&self.writer)
                .await
                .map_err(|e| StoreError::Other(anyhow::anyhow!("migration failed: {e}")));
        }
        // The whole run in one write transaction: SQLite's write lock serialises processes
        // migrating the same file at once (sqlx's migrator takes no lock on SQLite, so two of
        // them would both see a migration as pending and the second fail to apply it). The
        // other process waits on the busy timeout, then finds everything applied; each
        // migration runs in a savepoint inside this transaction.
        // `run_direct` is `run` on a connection already in hand; sqlx keeps it public for
        // callers in `async_trait` methods, where `run`'s `Acquire` bound does not compile.
        let mut tx = self.begin_write().await?;
        MIGRATOR
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => match map_err(e) {
                    StoreError::Other(e) => {
                        StoreError::Other(anyhow::anyhow!("migration failed: {e}"))
                    }
                    transient => transient,
                },
                e => StoreError::Other(anyhow::anyhow!("migration failed: {e}")),
            })?;
        self.commit(tx).await
    }
    /// Ready when the database files are still those this process opened, a read answers,
    /// and a write commits: a small update of one `meta` row through the group writer, so that
    /// a full disk or a failing device shows here as it does to the token requests (and the
    /// first probe that commits again reports ready, with no restart).
    async fn ready(&self) -> StoreResult<()> {
        self.files.check()?;
        self.ping().await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "INSERT INTO meta (key, value) VALUES ('readiness_probe', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![now.to_string()],
                )?;
                Ok(((), true))
            })
            .await
    }
    /// A cleanup round is a job in the one group writer's batch, and every request batched
    /// with it waits for it: rounds are sized to a few milliseconds of deletes, with one batch
    /// of audit events each.
    fn cleanup_policy(&self) -> CleanupPolicy {
        CleanupPolicy {
            requests_wait: true,
        }
    }
    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.reader.size() + self.writer.size(),
            idle: u32::try_from(self.reader.num_idle() + self.writer.num_idle())
                .unwrap_or(u32::MAX),
        }
    }
    async fn close(&self) {
        // The writer finishes its queue first; then every connection closes, the last one
        // checkpointing the log into the database file.
        let group = self.group.clone();
        let _ = tokio::task::spawn_blocking(move || group.close()).await;
        self.point_reads.close();
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
    async fn purge_audit(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        // Through the group writer like the hot path: a cleanup on its own connection would
        // contend with it for SQLite's write lock, and the loser sleeps in the busy handler.
        self.group
            .write(move |conn| {
                let started = std::time::Instant::now();
                let n = change(
                    conn,
                    "DELETE FROM audit_events WHERE id IN \
                     (SELECT id FROM audit_events WHERE at < ?1 LIMIT ?2)",
                    params![before, i64::from(batch)],
                )?;
                Ok((Purged::since(started, n as u64), true))
            })
            .await
    }
    async fn purge_expired(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        // Through the group writer (see `purge_audit`), in one job so that it commits at once.
        self.group
            .write(move |conn| {
                let started = std::time::Instant::now();
                let mut deleted = 0;
                for sql in PURGE_TOKENS_SQL {
                    deleted += change(conn, sql, params![before, i64::from(batch)])?;
                }
                // A retired key also stays while any token it signed is unexpired, whatever
                // lifetime the process that retired it assumed.
                deleted += change(
                    conn,
                    "DELETE FROM signing_keys WHERE state = 'retired' AND published_until < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM access_tokens a \
                                     WHERE a.signing_kid = signing_keys.kid AND a.expires_at >= ?1)",
                    params![before],
                )?;
                Ok((Purged::since(started, deleted as u64), true))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a new database file in a directory of its own (kept while the store is used).
    async fn fresh_store() -> Result<(tempfile::TempDir, SqliteStore), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url).await?;
        Ok((dir, store))
    }

    /// Every cleanup statement finds its rows through indexes: a `SCAN` of a token table in
    /// its query plan would run inside the group writer's transaction on every cleanup batch.
    #[tokio::test]
    async fn the_cleanup_never_scans_a_token_table() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, store) = fresh_store().await?;
        store.migrate().await?;
        let conn = Connection::open(store.path())?;
        for sql in PURGE_TOKENS_SQL {
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let steps = plan
                .query_map(params![0, 1], |row| row.get::<_, String>(3))?
                .collect::<Result<Vec<_>, _>>()?;
            assert!(
                steps.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}: {steps:?}"
            );
        }
        store.close().await;
        Ok(())
    }

    /// Every CLI command migrates when it starts; on an up-to-date database that must not tell
    /// running servers that clients changed (they would reload every cached client).
    #[tokio::test]
    async fn migrating_an_up_to_date_database_signals_nothing()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, store) = fresh_store().await?;
        let before = std::fs::read(store.clients.signal_path())?;
        assert!(store.migrations_pending().await);
        store.migrate().await?;
        let migrated = std::fs::read(store.clients.signal_path())?;
        assert_ne!(migrated, before, "applying migrations signals");
        assert!(!store.migrations_pending().await);
        store.migrate().await?;
        assert_eq!(std::fs::read(store.clients.signal_path())?, migrated);
        store.close().await;
        Ok(())
    }

    /// A process that could not tell the others about a client change must not make one: their
    /// cached copies would outlive it. Reads still work.
    #[tokio::test]
    async fn client_writes_are_refused_without_the_change_signal()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("nosignal.db");
        // A directory where the signal file should be: it cannot be opened for writing (a
        // permission test would not do: the tests may run as root).
        std::fs::create_dir(dir.path().join("nosignal.db.clients-generation"))?;
        let store = SqliteStore::open(&format!("sqlite://{}", db.display())).await?;
        store.migrate().await?;
        let client = Client::fixture();
        let refused = store.insert_client(&client).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("clients-generation")),
            "{refused:?}"
        );
        assert!(store.update_client(&client).await.is_err());
        assert!(store.delete_client("c").await.is_err());
        assert_eq!(store.get_client("c").await?, None);
        store.close().await;
        Ok(())
    }
}
