//! Signing keys and `meta` on PostgreSQL.

use async_trait::async_trait;

use super::super::rows::KeyRow;
use super::super::{KeyStore, StoreResult, StoredKey};
use super::{PostgresStore, map_err};
use crate::domain::clock::UnixTime;
use crate::domain::jwt::KeyState;

impl PostgresStore {
    /// Inserts `k` in `state` (active or next, with its activation time if active) unless a
    /// key in that state exists already. NOT EXISTS alone would let two instances starting
    /// together both insert (neither sees the other's uncommitted row); the unique index on
    /// each of the two states makes the second insert wait for the first and then do nothing.
    async fn insert_key_unless_one_is(&self, k: &StoredKey, state: KeyState) -> StoreResult<()> {
        self.written(async {
            let mut conn = self.conn().await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, state, private_key, created_at, activated_at) \
                 SELECT $1, $2, $3, $4, $5, $6 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE state = $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&k.kid)
            .bind(&k.alg)
            .bind(state.as_str())
            .bind(&k.sealed_private_key)
            .bind(k.created_at)
            .bind((state == KeyState::Active).then_some(k.created_at))
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)
        })
        .await
    }
    async fn meta_insert_or_get(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            // If another instance inserts the same key concurrently, ON CONFLICT waits for its
            // transaction and then does nothing; the SELECT, a new statement, sees its value.
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key)
            .bind(&value)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(&key)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(stored)
        })
        .await
    }
    async fn meta_replace(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool> {
        self.written(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query("UPDATE meta SET value = $1 WHERE key = $2 AND value = $3")
                .bind(value)
                .bind(key)
                .bind(expected)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows: Vec<KeyRow> = sqlx::query_as(
                "SELECT kid, alg, state, private_key, created_at, published_until \
                 FROM signing_keys ORDER BY created_at, kid",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            rows.into_iter().map(StoredKey::try_from).collect()
        })
        .await
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
        let next_kid = next_kid.to_owned();
        self.detached(move |store| async move {
            let mut tx = store.begin().await?;
            // Lock the next key first: of two concurrent activations, the second waits here,
            // then finds the key no longer `next` and changes nothing.
            let next: Option<String> = sqlx::query_scalar(
                "SELECT kid FROM signing_keys WHERE kid = $1 AND state = 'next' FOR UPDATE",
            )
            .bind(&next_kid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
            if next.is_none() {
                tx.rollback().await.map_err(map_err)?;
                return Ok(false);
            }
            sqlx::query(
                "UPDATE signing_keys SET state = 'retired', retired_at = $1, published_until = $2 \
                 WHERE state = 'active'",
            )
            .bind(now)
            .bind(retired_until)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            sqlx::query(
                "UPDATE signing_keys SET state = 'active', activated_at = $1 \
                 WHERE kid = $2 AND state = 'next'",
            )
            .bind(now)
            .bind(&next_kid)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
            Ok(true)
        })
        .await
    }
    async fn set_key_state(
        &self,
        kid: &str,
        state: KeyState,
        published_until: Option<UnixTime>,
    ) -> StoreResult<bool> {
        self.written(async {
            let mut conn = self.conn().await?;
            let done = sqlx::query(
                "UPDATE signing_keys SET state = $1, published_until = $2, \
                 retired_at = COALESCE(retired_at, $2) \
                 WHERE kid = $3 AND state NOT IN ('active', 'revoked')",
            )
            .bind(state.as_str())
            .bind(published_until)
            .bind(kid)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}
