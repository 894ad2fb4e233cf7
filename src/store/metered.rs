//! A [`Store`] decorator that records each operation's latency and outcome as Prometheus
//! metrics (`tessera_store_operation_duration_seconds{op, outcome}`), whatever the backend.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    AccessKey, AccessRecord, AuditStore, CleanupPolicy, ClientStore, ClientUpdate, KeyStore,
    Maintenance, NewAccessToken, NewFamily, NewRefreshToken, PoolStats, Purged, ReplayStore,
    RotateOutcome, StoreResult, StoredKey, TokenStore,
};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::domain::client::Client;
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::jwt::KeyState;
use crate::domain::token::TokenRef;

/// Wraps a store and measures it.
pub struct Metered<S>(pub S);

async fn timed<T>(op: &'static str, fut: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let started = Instant::now();
    let result = fut.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(super::StoreError::Unavailable(_)) => "unavailable",
        Err(super::StoreError::Conflict(_)) => "conflict",
        Err(super::StoreError::Other(_)) => "error",
    };
    metrics::histogram!("tessera_store_operation_duration_seconds", "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

#[async_trait]
impl<S: ClientStore> ClientStore for Metered<S> {
    async fn insert_client(&self, client: &Client) -> StoreResult<()> {
        timed("insert_client", self.0.insert_client(client)).await
    }
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        timed("get_client", self.0.get_client(id)).await
    }
    async fn list_clients(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<Client>> {
        timed("list_clients", self.0.list_clients(after, limit)).await
    }
    async fn update_client(&self, client: &Client) -> StoreResult<ClientUpdate> {
        timed("update_client", self.0.update_client(client)).await
    }
    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        timed("delete_client", self.0.delete_client(id)).await
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for Metered<S> {
    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        timed("meta_get", self.0.meta_get(key)).await
    }
    async fn meta_insert_or_get(&self, key: &str, value: &str) -> StoreResult<String> {
        timed("meta_insert_or_get", self.0.meta_insert_or_get(key, value)).await
    }
    async fn meta_replace(&self, key: &str, expected: &str, value: &str) -> StoreResult<bool> {
        timed("meta_replace", self.0.meta_replace(key, expected, value)).await
    }
    async fn list_keys(&self) -> StoreResult<Vec<StoredKey>> {
        timed("list_keys", self.0.list_keys()).await
    }
    async fn insert_first_active_key(&self, key: &StoredKey) -> StoreResult<()> {
        timed(
            "insert_first_active_key",
            self.0.insert_first_active_key(key),
        )
        .await
    }
    async fn insert_next_key(&self, key: &StoredKey) -> StoreResult<()> {
        timed("insert_next_key", self.0.insert_next_key(key)).await
    }
    async fn activate_next_key(
        &self,
        next_kid: &str,
        now: UnixTime,
        retired_until: UnixTime,
    ) -> StoreResult<bool> {
        timed(
            "activate_next_key",
            self.0.activate_next_key(next_kid, now, retired_until),
        )
        .await
    }
    async fn set_key_state(
        &self,
        kid: &str,
        state: KeyState,
        published_until: Option<UnixTime>,
    ) -> StoreResult<bool> {
        timed(
            "set_key_state",
            self.0.set_key_state(kid, state, published_until),
        )
        .await
    }
}

#[async_trait]
impl<S: TokenStore> TokenStore for Metered<S> {
    async fn issue(
        &self,
        family: &NewFamily,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        timed("issue", self.0.issue(family, access, refresh, audit)).await
    }
    async fn find_refresh(&self, token: &TokenRef) -> StoreResult<Option<RefreshRecord>> {
        timed("find_refresh", self.0.find_refresh(token)).await
    }
    async fn rotate_refresh(
        &self,
        old: &TokenRef,
        reuse_cutoff: UnixTime,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<RotateOutcome> {
        timed(
            "rotate_refresh",
            self.0
                .rotate_refresh(old, reuse_cutoff, access, refresh, audit),
        )
        .await
    }
    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        timed("revoke_family", self.0.revoke_family(family_id, now, audit)).await
    }
    async fn find_access(&self, key: AccessKey<'_>) -> StoreResult<Option<AccessRecord>> {
        timed("find_access", self.0.find_access(key)).await
    }
    async fn revoke_access(&self, id: &str, now: UnixTime, audit: &AuditEvent) -> StoreResult<()> {
        timed("revoke_access", self.0.revoke_access(id, now, audit)).await
    }
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        timed(
            "revoke_client_tokens",
            self.0.revoke_client_tokens(client_id, now, audit),
        )
        .await
    }
    async fn revoke_issued_before(
        &self,
        before: UnixTime,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        timed(
            "revoke_issued_before",
            self.0.revoke_issued_before(before, now, audit),
        )
        .await
    }
}

#[async_trait]
impl<S: AuditStore> AuditStore for Metered<S> {
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        timed("record_audit", self.0.record_audit(event)).await
    }
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        timed("list_audit", self.0.list_audit(query)).await
    }
}

#[async_trait]
impl<S: ReplayStore> ReplayStore for Metered<S> {
    async fn use_once(&self, id: &[u8; 32], expires_at: UnixTime) -> StoreResult<bool> {
        timed("use_once", self.0.use_once(id, expires_at)).await
    }
    async fn forget_use(&self, id: &[u8; 32]) -> StoreResult<()> {
        timed("forget_use", self.0.forget_use(id)).await
    }
}

#[async_trait]
impl<S: Maintenance> Maintenance for Metered<S> {
    async fn migrate(&self) -> StoreResult<()> {
        timed("migrate", self.0.migrate()).await
    }
    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.0.ping()).await
    }
    async fn ready(&self) -> StoreResult<()> {
        timed("ready", self.0.ready()).await
    }
    fn pool_stats(&self) -> PoolStats {
        self.0.pool_stats()
    }
    fn cleanup_policy(&self) -> CleanupPolicy {
        self.0.cleanup_policy()
    }
    async fn close(&self) {
        self.0.close().await;
    }
    async fn purge_audit(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        timed("purge_audit", self.0.purge_audit(before, batch)).await
    }
    async fn purge_expired(&self, before: UnixTime, batch: u32) -> StoreResult<Purged> {
        timed("purge_expired", self.0.purge_expired(before, batch)).await
    }
}
