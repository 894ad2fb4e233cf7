//! Clients on SQLite: read through the client cache ([`super::client_cache`]), changed on
//! the operator writes' connection, which tells the other processes.

use async_trait::async_trait;
use rusqlite::OptionalExtension as _;

use super::super::rows::{ClientRow, bind_client_fields};
use super::super::{ClientStore, ClientUpdate, StoreResult};
use super::{SqliteStore, map_err};
use crate::domain::client::Client;

/// The hot-path client lookup, its columns in the order `ClientRow` decodes them (built once).
static SELECT_CLIENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM clients WHERE client_id = ?1",
        ClientRow::COLUMNS
    )
});

#[async_trait]
impl ClientStore for SqliteStore {
    async fn insert_client(&self, c: &Client) -> StoreResult<()> {
        let mut tx = self.begin_client_write().await?;
        // Signals after the commit (an absent entry cached for this id must go), or when this
        // future is dropped half-way (`client_cache.rs`).
        let _signal = self.clients.signal_after();
        let query = sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, previous_secret_hash, \
             previous_secret_expires_at, scopes, token_format, profile, access_ttl, refresh_ttl, \
             origins, audience, resource_server, resources, disabled, auth, created_at, updated_at, \
             revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    /// Through the client cache (`client_cache.rs`), which every client write above
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
             resources = ?, disabled = ?, auth = ?, updated_at = ?, revision = revision + 1 \
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
