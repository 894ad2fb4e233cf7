//! The embedded store: one SQLite file.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a transaction is on disk before its
//! commit returns, and therefore before any `2xx` that depends on it is sent. Writes go through
//! a pool of exactly one connection and start with `BEGIN IMMEDIATE`: inside one process writers
//! queue instead of failing with `SQLITE_BUSY`, and another process (the CLI while the server
//! runs) waits on the busy timeout. The hot-path writes (issue, refresh, revoke, audit) are
//! group-committed: many requests share one transaction and one flush (see
//! [`super::writer`]). Reads use a separate pool and never block writes (WAL readers see
//! the last committed state).
//!
//! Faults of the environment (docs/fault-model.md): a full disk, an I/O error, a file that
//! cannot be opened or written, are [`StoreError::Unavailable`] on every connection (`503`);
//! the database files are checked before every commit ([`super::files`]); readiness
//! commits a probe write; migrations run inside one write transaction, so that processes
//! starting together on a new file apply them one after the other.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod audit;
mod client_cache;
mod clients;
mod files;
mod keys;
mod maintenance;
mod reads;
mod replay;
mod tokens;
mod writer;

use rusqlite::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::{Maintenance as _, StoreError, StoreResult};
use client_cache::ClientCache;
use files::DatabaseFiles;
use maintenance::MIGRATOR;
use reads::ReadPool;
use writer::{GroupWriter, is_environmental_code, map_err as writer_err};

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
    pub(super) async fn begin_client_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        if !self.clients.can_signal() {
            return Err(StoreError::Other(anyhow::anyhow!(
                "cannot change clients: the file {} beside the database cannot be opened for \
                 writing, so running servers would not see the change",
                self.clients.signal_path().display()
            )));
        }
        self.begin_write().await
    }

    pub(super) async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.files.check()?;
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }

    /// Commits a transaction of [`begin_write`](Self::begin_write), unless a database file
    /// was removed or replaced since it began (then it is rolled back: nothing would last).
    pub(super) async fn commit(&self, tx: Transaction<'static, Sqlite>) -> StoreResult<()> {
        if let Err(e) = self.files.check() {
            let _ = tx.rollback().await;
            return Err(e);
        }
        tx.commit().await.map_err(map_err)
    }

    /// Whether a migration of this binary has not been applied yet. True when that cannot be
    /// told (a new database has no `_sqlx_migrations` table), so that a doubt signals.
    pub(super) async fn migrations_pending(&self) -> bool {
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
            // same codes as on the group writer's connection (`writer::map_err`).
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

/// Runs one statement (prepared once, cached) on the writer's connection; returns the rows it
/// changed.
pub(super) fn change(
    conn: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(values))
        .map_err(writer_err)
}

#[cfg(test)]
mod tests {
    use super::maintenance::PURGE_TOKENS_SQL;
    use super::*;
    use crate::domain::client::Client;
    use crate::store::ClientStore as _;
    use rusqlite::params;

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
