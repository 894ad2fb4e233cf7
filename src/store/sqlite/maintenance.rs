//! The SQLite database itself: migrations, readiness, and the cleanup.

use async_trait::async_trait;
use rusqlite::params;

use super::super::{CleanupPolicy, Maintenance, PoolStats, Purged, StoreError, StoreResult};
use super::{SqliteStore, change, map_err};
use crate::domain::clock::UnixTime;

/// One cleanup batch: expired or revoked families, access and refresh tokens, and expired used
/// JWT ids ($1 the cutoff, $2 the batch size). Each `OR` is served by two indexes (expiry, and the partial index of
/// revoked rows), so a batch never scans a table: it runs inside the group writer's
/// transaction, and a scan there stalls every token request batched with it (the test below).
pub(super) const PURGE_TOKENS_SQL: [&str; 4] = [
    "DELETE FROM token_families WHERE family_id IN (SELECT family_id FROM token_families \
     WHERE expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
    "DELETE FROM access_tokens WHERE token_id IN (SELECT token_id FROM access_tokens \
     WHERE expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
    "DELETE FROM refresh_tokens WHERE token_id IN (SELECT token_id FROM refresh_tokens \
     WHERE expires_at < ?1 OR revoked_at < ?1 LIMIT ?2)",
    "DELETE FROM used_jwt_ids WHERE id IN (SELECT id FROM used_jwt_ids \
     WHERE expires_at < ?1 LIMIT ?2)",
];

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
