//! The PostgreSQL database itself: migrations, health, pool figures, and the cleanup.

use async_trait::async_trait;

use sqlx::postgres::PgPoolOptions;

use super::super::{CleanupPolicy, Maintenance, PoolStats, Purged, StoreError, StoreResult};
use super::{OPERATION_TIMEOUT, PostgresStore, map_err, unavailable};
use crate::domain::clock::UnixTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[async_trait]
impl Maintenance for PostgresStore {
    /// Applies the embedded migrations on a connection of its own.
    ///
    /// Several instances may start at once: sqlx's PostgreSQL migrator takes a session-level
    /// `pg_advisory_lock` (keyed on the database name) before it even creates its
    /// `_sqlx_migrations` table, and releases it when done (sqlx-postgres 0.9,
    /// `src/migrate.rs`, `lock`/`unlock`, called first and last by `Migrator::run_direct`). The
    /// others wait on that lock, then find every migration applied. The connection is a pool
    /// of one of its own, closed afterwards, so the session lock cannot outlive a failed run
    /// inside a connection the requests share. No [`OPERATION_TIMEOUT`] here: waiting for
    /// another instance's migration is correct.
    async fn migrate(&self) -> StoreResult<()> {
        let single = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(OPERATION_TIMEOUT)
            // "relation _sqlx_migrations already exists, skipping" on every start is noise.
            .connect_with(
                self.options
                    .clone()
                    .options([("client_min_messages", "warning")]),
            )
            .await
            .map_err(unavailable)?;
        let outcome = MIGRATOR
            .run(&single)
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("migration failed: {e}")));
        single.close().await;
        outcome
    }
    /// Nothing waits for a cleanup round here: it runs on a connection of its own and skips
    /// locked rows. So every round is a full batch (rounds sized to a few milliseconds shrink
    /// to the floor under a saturating load, and the database grows without bound) and takes as
    /// many audit events as token rows (one batch a round falls behind the audit trail); the
    /// soaks behind both rules are in docs/benchmarks-history.md.
    fn cleanup_policy(&self) -> CleanupPolicy {
        CleanupPolicy {
            requests_wait: false,
        }
    }
    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        }
    }
    async fn close(&self) {
        self.pool.close().await;
    }
    async fn ping(&self) -> StoreResult<()> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn purge_audit(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        self.written(async {
            let started = std::time::Instant::now();
            let mut conn = self.conn().await?;
            let done = sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
                 WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before)
            .bind(i64::from(batch))
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(Purged::since(started, done.rows_affected()))
        })
        .await
    }
    /// Every instance runs the cleanup. `FOR UPDATE SKIP LOCKED` makes concurrent runs take
    /// disjoint batches instead of waiting on (or deadlocking with) each other, and never
    /// blocks on a family a request is refreshing at that moment.
    async fn purge_expired(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        const BATCHES: [&str; 4] = [
            "DELETE FROM token_families WHERE family_id IN (SELECT family_id FROM token_families \
             WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM access_tokens WHERE token_id IN (SELECT token_id FROM access_tokens \
             WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM refresh_tokens WHERE token_id IN (SELECT token_id FROM refresh_tokens \
             WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM used_jwt_ids WHERE id IN (SELECT id FROM used_jwt_ids \
             WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        ];
        self.detached(move |store| async move {
            let started = std::time::Instant::now();
            let mut tx = store.begin().await?;
            let mut deleted = 0;
            for sql in BATCHES {
                deleted += sqlx::query(sql)
                    .bind(before)
                    .bind(i64::from(batch))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
            }
            // A retired key also stays while any token it signed is unexpired, whatever
            // lifetime the process that retired it assumed.
            deleted += sqlx::query(
                "DELETE FROM signing_keys WHERE state = 'retired' AND published_until < $1 \
                 AND NOT EXISTS (SELECT 1 FROM access_tokens a \
                                 WHERE a.signing_kid = signing_keys.kid AND a.expires_at >= $1)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            tx.commit().await.map_err(map_err)?;
            Ok(Purged::since(started, deleted))
        })
        .await
    }
}
