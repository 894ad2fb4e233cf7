//! The admin credential.
//!
//! The admin API accepts `Authorization: Bearer <admin token>`. The token is either given by
//! configuration (`admin_token`, usually `TESSERA_ADMIN_TOKEN`) or generated on the first
//! start: then only its keyed hash is stored (like a client secret), and the token itself is
//! handed to the operator once — written to `<database file>.admin-token` (mode 0600) on the
//! embedded SQLite default, printed to standard output otherwise. `tessera admin-token rotate`
//! replaces it. Comparison is constant-time.
//!
//! `/metrics` has a credential of its own, `metrics_token` (read-only: it opens nothing else),
//! or none: see [`Tessera::check_metrics_token`].

use std::path::PathBuf;

use crate::config::Settings;
use crate::domain::audit::{Actor, AuditEvent, AuditKind};
use crate::domain::crypto::{constant_time_eq, hex};
use crate::domain::token;

use super::keys::write_private_file;
use super::{ServiceError, Tessera};
use crate::store::beside_database;

const ADMIN_TOKEN_HASH: &str = "admin_token_hash";
const ADMIN_TOKEN_PREFIX: &str = "tes_ak_";

fn new_admin_token() -> anyhow::Result<String> {
    Ok(token::new_secret()?.replacen(token::SECRET_PREFIX, ADMIN_TOKEN_PREFIX, 1))
}

/// Where a generated admin token is written for the operator (SQLite only).
#[must_use]
pub fn admin_token_file(database_url: &str) -> Option<PathBuf> {
    beside_database(database_url, ".admin-token")
}

fn hand_over(settings: &Settings, token: &str) -> anyhow::Result<()> {
    match admin_token_file(&settings.database.url) {
        Some(path) => {
            write_private_file(&path, token, true)?;
            tracing::warn!(path = %path.display(), "generated an admin token (stored hashed); it is in this file for you");
        }
        None => {
            // Not through the log (standard error): the log must never carry a credential.
            println!("Generated admin token (shown once, stored hashed): {token}");
        }
    }
    Ok(())
}

impl Tessera {
    /// Makes sure an admin credential exists: the configured one, or a stored hash (generating
    /// and handing over a new token on first start).
    ///
    /// # Errors
    /// Store failures, or the token file cannot be written.
    pub async fn ensure_admin_token(&self, settings: &Settings) -> anyhow::Result<()> {
        if settings.admin.token.is_some() {
            return Ok(());
        }
        let token = new_admin_token()?;
        let hash = hex(&self.keys.hash_secret(&token));
        let stored = self
            .store
            .meta_insert_or_get(ADMIN_TOKEN_HASH, &hash)
            .await?;
        if stored == hash {
            hand_over(settings, &token)?;
        }
        Ok(())
    }

    /// Replaces the stored admin token; returns the new one (shown once).
    ///
    /// # Errors
    /// Store failures.
    pub async fn rotate_admin_token(&self, actor: &Actor) -> Result<String, ServiceError> {
        let token = new_admin_token()?;
        let hash = hex(&self.keys.hash_secret(&token));
        let current = self
            .store
            .meta_insert_or_get(ADMIN_TOKEN_HASH, &hash)
            .await?;
        if current != hash
            && !self
                .store
                .meta_replace(ADMIN_TOKEN_HASH, &current, &hash)
                .await?
        {
            return Err(ServiceError::Conflict(
                "the admin token was replaced at the same time by another call; run the command \
                 again"
                    .into(),
            ));
        }
        self.audit(AuditEvent::new(
            AuditKind::AdminTokenRotated,
            self.clock.now(),
            actor,
            None,
            serde_json::json!({}),
        ))
        .await;
        Ok(token)
    }

    /// Checks a presented admin token.
    ///
    /// # Errors
    /// Store failures.
    pub async fn check_admin_token(&self, presented: &str) -> Result<bool, ServiceError> {
        let hash = hex(&self.keys.hash_secret(presented));
        let expected = match &self.admin_token_hash {
            Some(configured) => configured.clone(),
            // Read on every call so a rotation by the CLI or another instance applies at once.
            None => match self.store.meta_get(ADMIN_TOKEN_HASH).await? {
                Some(stored) => stored,
                None => return Ok(false),
            },
        };
        Ok(constant_time_eq(hash.as_bytes(), expected.as_bytes()))
    }

    /// Whether a request for `/metrics` presenting `presented` (a bearer token, if any) may
    /// scrape: always when no `metrics_token` is configured, otherwise only with that token
    /// (compared in constant time, as keyed hashes). The admin token is not a metrics token.
    #[must_use]
    pub fn check_metrics_token(&self, presented: Option<&str>) -> bool {
        let Some(expected) = &self.metrics_token_hash else {
            return true;
        };
        presented.is_some_and(|token| {
            let hash = hex(&self.keys.hash_secret(token));
            constant_time_eq(hash.as_bytes(), expected.as_bytes())
        })
    }
}
