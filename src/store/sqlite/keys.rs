//! Signing keys and `meta` on SQLite.

use super::super::rows::KeyRow;
use super::super::{KeyStore, StoreResult, StoredKey};
use super::{SqliteStore, map_err};
use crate::domain::clock::UnixTime;
use crate::domain::jwt::KeyState;
use async_trait::async_trait;

impl SqliteStore {
    /// Inserts `k` in `state` (active or next, with its activation time if active) unless a
    /// key in that state exists already.
    async fn insert_key_unless_one_is(&self, k: &StoredKey, state: KeyState) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, private_key, created_at, activated_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = ?3)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(state.as_str())
        .bind(&k.sealed_private_key)
        .bind(k.created_at)
        .bind((state == KeyState::Active).then_some(k.created_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        self.commit(tx).await
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
        rows.into_iter().map(StoredKey::try_from).collect()
    }
    async fn insert_first_active_key(&self, k: &StoredKey) -> StoreResult<()> {
        self.insert_key_unless_one_is(k, KeyState::Active).await
    }
    async fn insert_next_key(&self, k: &StoredKey) -> StoreResult<()> {
        self.insert_key_unless_one_is(k, KeyState::Next).await
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
        state: KeyState,
        published_until: Option<UnixTime>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE signing_keys SET state = ?, published_until = ?, \
             retired_at = COALESCE(retired_at, ?) \
             WHERE kid = ? AND state NOT IN ('active', 'revoked')",
        )
        .bind(state.as_str())
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
