//! Used JWT ids on SQLite, written through the group writer like every hot-path write: a use
//! is recorded (and answered) only once its batch committed, so two instances on one file, or
//! two requests in one batch, cannot both see a first use.

use async_trait::async_trait;
use rusqlite::params;

use super::super::{ReplayStore, StoreResult};
use super::{SqliteStore, change};
use crate::domain::clock::UnixTime;

/// Takes the id when it is new, or when its row has expired by the database's clock; changes
/// nothing (zero rows) when it is in use.
const USE_ONCE_SQL: &str = "INSERT INTO used_jwt_ids (id, expires_at) VALUES (?1, ?2) \
     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at \
     WHERE used_jwt_ids.expires_at < CAST(strftime('%s', 'now') AS INTEGER)";

#[async_trait]
impl ReplayStore for SqliteStore {
    async fn use_once(&self, id: &[u8; 32], expires_at: UnixTime) -> StoreResult<bool> {
        let id = *id;
        self.group
            .write(move |conn| {
                let first = change(conn, USE_ONCE_SQL, params![&id[..], expires_at])? == 1;
                // A replay wrote nothing: nothing to keep (see the writer's module docs).
                Ok((first, first))
            })
            .await
    }
    async fn forget_use(&self, id: &[u8; 32]) -> StoreResult<()> {
        let id = *id;
        self.group
            .write(move |conn| {
                let n = change(
                    conn,
                    "DELETE FROM used_jwt_ids WHERE id = ?1",
                    params![&id[..]],
                )?;
                Ok(((), n > 0))
            })
            .await
    }
}
