//! Clients on PostgreSQL.

use async_trait::async_trait;

use super::super::rows::{ClientRow, bind_client_fields};
use super::super::{ClientStore, ClientUpdate, StoreResult};
use super::{PostgresStore, map_err, storable};
use crate::domain::client::Client;

#[async_trait]
impl ClientStore for PostgresStore {
    async fn insert_client(&self, c: &Client) -> StoreResult<()> {
        self.written(async {
            let mut conn = self.conn().await?;
            let query = sqlx::query(
                "INSERT INTO clients (client_id, name, secret_hash, previous_secret_hash, \
                 previous_secret_expires_at, scopes, token_format, profile, access_ttl, \
                 refresh_ttl, origins, audience, resource_server, resources, disabled, auth, \
                 created_at, updated_at, revision) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19)",
            )
            .bind(&c.id);
            bind_client_fields(query, c)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(c.revision)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        if !storable(id) {
            return Ok(None);
        }
        self.bounded(self.clients.submit(id.to_owned())).await
    }
    async fn list_clients(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Client>> {
        if after.is_some_and(|a| !storable(a)) {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows: Vec<ClientRow> = sqlx::query_as(
                "SELECT * FROM clients WHERE ($1::TEXT IS NULL OR client_id > $1) \
                 ORDER BY client_id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            rows.into_iter().map(Client::try_from).collect()
        })
        .await
    }
    /// One statement: the update, and whether the client exists (in the statement's snapshot,
    /// so a client deleted meanwhile reads as not found, not as stale).
    async fn update_client(&self, c: &Client) -> StoreResult<ClientUpdate> {
        self.written(async {
            let mut conn = self.conn().await?;
            let query = sqlx::query(
                "WITH updated AS (UPDATE clients SET name = $1, secret_hash = $2, \
                 previous_secret_hash = $3, previous_secret_expires_at = $4, scopes = $5, \
                 token_format = $6, profile = $7, access_ttl = $8, refresh_ttl = $9, \
                 origins = $10, audience = $11, resource_server = $12, resources = $13, \
                 disabled = $14, auth = $15, updated_at = $16, revision = revision + 1 \
                 WHERE client_id = $17 AND revision = $18 RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM updated), \
                 EXISTS (SELECT 1 FROM clients WHERE client_id = $17)",
            );
            let row = bind_client_fields(query, c)
                .bind(c.updated_at)
                .bind(&c.id)
                .bind(c.revision)
                .fetch_one(&mut *conn)
                .await
                .map_err(map_err)?;
            let updated: bool = sqlx::Row::try_get(&row, 0).map_err(map_err)?;
            let exists: bool = sqlx::Row::try_get(&row, 1).map_err(map_err)?;
            Ok(match (updated, exists) {
                (true, _) => ClientUpdate::Updated,
                (false, true) => ClientUpdate::Stale,
                (false, false) => ClientUpdate::NotFound,
            })
        })
        .await
    }
    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let id = id.to_owned();
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            // Two deletions of one client are serialised on its row first. Without that, each
            // could lock a different set of families (a grant committing between their
            // snapshots), then wait in the cascade for the families the other one holds: a
            // deadlock. `FOR NO KEY UPDATE` does not block the `KEY SHARE` locks that grants
            // and rotations take on the client row through their foreign keys while they hold
            // a family's lock, so the order below stays deadlock-free against them.
            sqlx::query("SELECT 1 FROM clients WHERE client_id = $1 FOR NO KEY UPDATE")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            // The deletion cascades to the client's families and their tokens; locking the
            // families first, in family-id order, keeps the lock order of
            // `super::rotations`.
            sqlx::query(
                "SELECT 1 FROM token_families WHERE client_id = $1 ORDER BY family_id FOR UPDATE",
            )
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
