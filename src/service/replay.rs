//! "Used once" for JWTs other parties sign: `private_key_jwt` assertions (RFC 7523 §3 item 7)
//! and DPoP proofs (RFC 9449 §11.1), across every instance on the database
//! ([`crate::store::ReplayStore`]).
//!
//! Issue 16 asks that nothing be recorded as used unless the request succeeded, and a replay
//! must be refused even while the first request is still running. So a request **claims** its
//! ids before it does its work ([`JwtUses::claim`]: a second claim of the same id, here or on
//! another instance, fails at once), and:
//!
//! - when it answers with a failure (a refused scope, a store error, a bad proof checked after
//!   the assertion), it **releases** them all ([`JwtUses::release`]), so the client may send
//!   the same assertion or proof again;
//! - when it succeeds it just drops the claims: the ids stay used until their JWT expires.
//!
//! Dropping without [`JwtUses::release`] keeps the ids used. That is the safe side: a request
//! cut off half-way (the client went away) may have committed its grant, and a replay refused
//! by mistake costs a retry with a fresh JWT, while one accepted by mistake defeats the rule.
//!
//! An id is SHA-256 over a kind tag, the JWT's issuer (the client id for an assertion, the key
//! thumbprint for a proof) and its `jti`, separated by NUL bytes ([`jwt_id`]), so that equal
//! `jti` values from different issuers or of different kinds never collide.

use std::sync::Arc;

use crate::domain::clock::UnixTime;
use crate::domain::crypto::sha256;
use crate::store::{Store, StoreResult};

/// The kind tag of a `private_key_jwt` client assertion.
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";

/// The kind tag of a DPoP proof.
pub const DPOP_PROOF: &str = "dpop";

/// The stored id of a JWT: SHA-256 of `kind \0 issuer \0 jti`.
#[must_use]
pub fn jwt_id(kind: &str, issuer: &str, jti: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(kind.len() + issuer.len() + jti.len() + 2);
    input.extend_from_slice(kind.as_bytes());
    input.push(0);
    input.extend_from_slice(issuer.as_bytes());
    input.push(0);
    input.extend_from_slice(jti.as_bytes());
    sha256(&input)
}

/// The JWT ids one request claimed (see the module documentation).
pub struct JwtUses {
    store: Arc<dyn Store>,
    claimed: Vec<[u8; 32]>,
}

impl std::fmt::Debug for JwtUses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtUses")
            .field("claimed", &self.claimed.len())
            .finish_non_exhaustive()
    }
}

impl JwtUses {
    /// No claim yet, on `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            claimed: Vec::new(),
        }
    }

    /// Claims `id` until `expires_at`: `Ok(true)` if this is its first use (and it is now this
    /// request's to keep or release), `Ok(false)` if it is in use (a replay).
    ///
    /// # Errors
    /// Store failures (nothing was claimed).
    pub async fn claim(&mut self, id: [u8; 32], expires_at: UnixTime) -> StoreResult<bool> {
        let first = self.store.use_once(&id, expires_at).await?;
        if first {
            self.claimed.push(id);
        }
        Ok(first)
    }

    /// How many ids this request holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.claimed.len()
    }

    /// True if it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.claimed.is_empty()
    }

    /// Takes over `other`'s claims, so that one release frees both.
    pub fn absorb(&mut self, mut other: Self) {
        self.claimed.append(&mut other.claimed);
    }

    /// The request failed: forgets every id it claimed, so the same JWTs may be sent again. A
    /// failure to forget is logged and otherwise ignored: the ids then stay used until they
    /// expire, the safe side.
    pub async fn release(mut self) {
        for id in std::mem::take(&mut self.claimed) {
            if let Err(e) = self.store.forget_use(&id).await {
                tracing::warn!(error = %e, "could not release a used JWT id; it stays used until it expires");
            }
        }
    }
}
