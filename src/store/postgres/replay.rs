//! Used JWT ids on PostgreSQL: one statement each, so every instance on the database sees a
//! use the moment it commits, and two concurrent first uses of one id cannot both succeed (the
//! primary key serialises them: the second waits for the first and then updates nothing).

use async_trait::async_trait;

use super::super::{ReplayStore, StoreResult};
use super::{PostgresStore, map_err};
use crate::domain::clock::UnixTime;

#[async_trait]
impl ReplayStore for PostgresStore {
    async fn use_once(&self, id: &[u8; 32], expires_at: UnixTime) -> StoreResult<bool> {
        self.written(async {
            let mut conn = self.conn().await?;
            // An expired row (by the database's clock) is taken over; a live one is left alone
            // and the statement affects no row.
            let done = sqlx::query(
                "INSERT INTO used_jwt_ids (id, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE used_jwt_ids.expires_at < EXTRACT(EPOCH FROM clock_timestamp())::BIGINT",
            )
            .bind(&id[..])
            .bind(expires_at)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
    async fn forget_use(&self, id: &[u8; 32]) -> StoreResult<()> {
        self.written(async {
            let mut conn = self.conn().await?;
            sqlx::query("DELETE FROM used_jwt_ids WHERE id = $1")
                .bind(&id[..])
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
}
