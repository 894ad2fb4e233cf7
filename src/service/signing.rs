//! Signing-key lifecycle for operators: list, rotate, retire, revoke (SPEC §2.4).
//!
//! There is always a `next` key published beside the `active` one. `rotate` activates the
//! `next` key (which verifiers have had since the previous rotation), retires the old active
//! key, and publishes a fresh `next` key. A retired key stays in the JWKS until every token it
//! can have signed has expired: `published_until = now + longest access-token lifetime +
//! 2 × key_reload_interval` (other instances may sign with it until they reload). `revoke` is
//! the emergency exit: the key leaves the JWKS at once, and every token it signed stops being
//! active (the store joins each JWT to its signing key).

use serde::Serialize;

use serde_json::json;

use crate::domain::audit::{Actor, AuditEvent, AuditKind};
use crate::domain::clock::UnixTime;
use crate::domain::jwt::KeyState;

use super::keys::ensure_keys;
use super::{ServiceError, Tessera};

/// A key as shown to operators.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// `next`, `active`, `retired` or `revoked`.
    pub state: String,
    /// Creation time (Unix seconds).
    pub created_at: UnixTime,
    /// For retired keys: when the key leaves the JWKS.
    pub published_until: Option<UnixTime>,
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rotation {
    /// The key that now signs.
    pub active: String,
    /// The key that stopped signing.
    pub retired: Option<String>,
    /// The key published for the next rotation.
    pub next: Option<String>,
}

fn not_found(kid: &str) -> ServiceError {
    ServiceError::NotFound(format!("no signing key {kid:?}"))
}

/// The answer to a rotation that lost to another one (from this instance, another instance or
/// the CLI). Not retried here: the keys have just been rotated, which is what was asked, and
/// rotating again at once would activate a `next` key that verifiers have not had time to
/// fetch.
fn concurrent_rotation() -> ServiceError {
    ServiceError::Conflict(
        "another key rotation happened at the same time; list the keys, and rotate again only \
         if another rotation is still wanted"
            .into(),
    )
}

/// The answer when a key's state changed between reading it and changing it (a rotation
/// activated it, or someone else revoked it).
fn key_changed(kid: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "signing key {kid:?} changed state at the same time (a rotation or a revocation); \
         list the keys and try again"
    ))
}

impl Tessera {
    /// Every key, revoked ones included, oldest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_keys(&self) -> Result<Vec<KeyView>, ServiceError> {
        Ok(self
            .store
            .list_keys()
            .await?
            .into_iter()
            .map(|k| KeyView {
                kid: k.kid,
                alg: k.alg,
                state: k.state.as_str().to_owned(),
                created_at: k.created_at,
                published_until: k.published_until,
            })
            .collect())
    }

    /// How long a retired key must stay published.
    async fn retired_until(&self, now: UnixTime) -> Result<UnixTime, ServiceError> {
        let longest = self
            .all_clients()
            .await?
            .iter()
            .filter_map(|c| c.access_ttl)
            .fold(self.policy.access_ttl, u32::max);
        Ok(now + i64::from(longest) + 2 * i64::from(self.policy.key_reload_interval))
    }

    /// Activates the next key, retires the active one, and publishes a new next key.
    ///
    /// # Errors
    /// Store failures, or a concurrent rotation (try again).
    pub async fn rotate_keys(&self, actor: &Actor) -> Result<Rotation, ServiceError> {
        let now = self.clock.now();
        // A next key normally exists; create one if an earlier step was interrupted.
        ensure_keys(
            self.store.as_ref(),
            &self.keys,
            self.policy.signing_alg,
            now,
        )
        .await?;
        let before = self.store.list_keys().await?;
        // No next key here means a concurrent rotation activated it between the two reads
        // (`ensure_keys` has just made sure there was one).
        let next = before
            .iter()
            .find(|k| k.state == KeyState::Next)
            .ok_or_else(concurrent_rotation)?;
        let retired = before
            .iter()
            .find(|k| k.state == KeyState::Active)
            .map(|k| k.kid.clone());
        let until = self.retired_until(now).await?;
        if !self.store.activate_next_key(&next.kid, now, until).await? {
            return Err(concurrent_rotation());
        }
        ensure_keys(
            self.store.as_ref(),
            &self.keys,
            self.policy.signing_alg,
            now,
        )
        .await?;
        self.reload_keys().await?;
        let after = self.store.list_keys().await?;
        let rotation = Rotation {
            active: next.kid.clone(),
            retired,
            next: after
                .iter()
                .find(|k| k.state == KeyState::Next)
                .map(|k| k.kid.clone()),
        };
        tracing::info!(active = %rotation.active, retired = ?rotation.retired, "signing keys rotated");
        self.audit(AuditEvent::new(
            AuditKind::KeyRotated,
            now,
            actor,
            None,
            json!({ "active": rotation.active, "retired": rotation.retired, "next": rotation.next }),
        ))
        .await;
        Ok(rotation)
    }

    /// Rotates so that the key that was active when its state was read stops signing. A
    /// rotation that lost to a concurrent one is as good: the other rotation retired it.
    async fn rotate_away_from(&self, actor: &Actor) -> Result<(), ServiceError> {
        match self.rotate_keys(actor).await {
            Ok(_) | Err(ServiceError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn key_state(&self, kid: &str) -> Result<KeyState, ServiceError> {
        let key = self
            .store
            .list_keys()
            .await?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| not_found(kid))?;
        Ok(key.state)
    }

    /// Stops a key from signing; it stays published until its tokens have expired. Retiring
    /// the active key is a rotation; retiring the next key replaces it.
    ///
    /// # Errors
    /// An unknown or revoked key; store failures.
    pub async fn retire_key(&self, kid: &str, actor: &Actor) -> Result<(), ServiceError> {
        let now = self.clock.now();
        match self.key_state(kid).await? {
            KeyState::Active => self.rotate_away_from(actor).await?,
            KeyState::Next => {
                // It never signed anything: it only has to outlive cached JWKS copies.
                if !self
                    .store
                    .set_key_state(kid, KeyState::Retired, Some(now))
                    .await?
                {
                    return Err(key_changed(kid));
                }
                ensure_keys(
                    self.store.as_ref(),
                    &self.keys,
                    self.policy.signing_alg,
                    now,
                )
                .await?;
            }
            KeyState::Retired => {}
            KeyState::Revoked => {
                return Err(ServiceError::invalid("kid", "the key is revoked"));
            }
        }
        self.reload_keys().await?;
        tracing::info!(kid, "signing key retired");
        self.audit(AuditEvent::new(
            AuditKind::KeyRetired,
            now,
            actor,
            None,
            json!({ "kid": kid }),
        ))
        .await;
        Ok(())
    }

    /// Withdraws a key at once: unpublished, and every token it signed stops being active.
    /// Revoking the active key first rotates to the next one.
    ///
    /// # Errors
    /// An unknown key; store failures.
    pub async fn revoke_key(&self, kid: &str, actor: &Actor) -> Result<(), ServiceError> {
        let now = self.clock.now();
        match self.key_state(kid).await? {
            KeyState::Revoked => return Ok(()),
            KeyState::Active => self.rotate_away_from(actor).await?,
            KeyState::Next | KeyState::Retired => {}
        }
        if !self
            .store
            .set_key_state(kid, KeyState::Revoked, None)
            .await?
        {
            // Revoked meanwhile by another call: done, as the early return above.
            return match self.key_state(kid).await? {
                KeyState::Revoked => Ok(()),
                _ => Err(key_changed(kid)),
            };
        }
        ensure_keys(
            self.store.as_ref(),
            &self.keys,
            self.policy.signing_alg,
            now,
        )
        .await?;
        self.reload_keys().await?;
        tracing::warn!(kid, "signing key revoked");
        self.audit(AuditEvent::new(
            AuditKind::KeyRevoked,
            now,
            actor,
            None,
            json!({ "kid": kid }),
        ))
        .await;
        Ok(())
    }
}
