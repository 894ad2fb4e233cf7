//! Token introspection (RFC 7662).
//!
//! A token is reported active only if it is well formed, known, unexpired, unrevoked (token,
//! family, client and — for JWTs — signing key), and visible to the caller: its own tokens, or
//! tokens addressed to the audience it serves as a resource server (or every token, with `*`).
//! Everything else, including "exists but not yours", is the same `{"active": false}`, so
//! introspection reveals nothing about tokens a caller may not see. A refresh token is active
//! while it can still be exchanged: unconsumed (or consumed within the grace window).

use crate::domain::client::Client;
use crate::domain::clock::UnixTime;
use crate::domain::crypto::hex;
use crate::domain::jwt;
use crate::domain::token::{self, OpaqueKind};
use crate::store::AccessKey;

use super::{ServiceError, Tessera};

/// What introspection says about an active token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `access_token` or `refresh_token`.
    pub token_type: &'static str,
    /// Space-delimited scopes.
    pub scope: String,
    /// The client it was issued to (also `sub`).
    pub client_id: String,
    /// Expiry.
    pub exp: UnixTime,
    /// Issue time.
    pub iat: UnixTime,
    /// Not before.
    pub nbf: UnixTime,
    /// Audience (access tokens only).
    pub aud: Option<String>,
    /// Issuer.
    pub iss: String,
    /// Token id: the JWT `jti` / opaque token id, or a digest for refresh tokens.
    pub jti: String,
    /// The thumbprint of the key a DPoP-bound access token is bound to (`cnf.jkt`).
    pub dpop_jkt: Option<String>,
}

impl Tessera {
    /// Introspects `presented` for `caller`; `None` means `{"active": false}`.
    ///
    /// # Errors
    /// Store failures only.
    pub async fn introspect(
        &self,
        caller: &Client,
        presented: &str,
    ) -> Result<Option<TokenInfo>, ServiceError> {
        let now = self.clock.now();
        if let Some(found) = token::verify(OpaqueKind::Refresh, presented, &self.keys) {
            let hash = found.hash;
            let Some(r) = self.store.find_refresh(&found).await? else {
                return Ok(None);
            };
            let grace = i64::from(self.policy.refresh_grace);
            let usable = r
                .consumed_at
                .is_none_or(|at| grace > 0 && now - at <= grace);
            if r.revoked
                || now >= r.expires_at
                || !usable
                || !caller.may_introspect(&r.client_id, None)
            {
                return Ok(None);
            }
            // Refresh tokens of a disabled client are not active either.
            if self
                .store
                .get_client(&r.client_id)
                .await?
                .is_none_or(|c| c.disabled)
            {
                return Ok(None);
            }
            return Ok(Some(TokenInfo {
                token_type: "refresh_token",
                scope: r.scope,
                client_id: r.client_id,
                exp: r.expires_at,
                iat: r.issued_at,
                nbf: r.issued_at,
                aud: None,
                iss: self.policy.issuer.clone(),
                jti: hex(hash.0.get(..16).unwrap_or_default()),
                dpop_jkt: None,
            }));
        }
        let record = if let Some(found) = token::verify(OpaqueKind::Access, presented, &self.keys) {
            self.store.find_access(AccessKey::Opaque(&found)).await?
        } else if jwt::looks_like_jwt(presented) {
            let ring = self.keyring();
            match jwt::decode(presented, |kid| ring.find(kid), &self.policy.issuer, now) {
                Ok(claims) => self.store.find_access(AccessKey::Id(&claims.jti)).await?,
                Err(_) => None,
            }
        } else {
            None
        };
        let Some(a) = record else { return Ok(None) };
        if a.revoked
            || now >= a.expires_at
            || !caller.may_introspect(&a.client_id, Some(&a.audience))
        {
            return Ok(None);
        }
        Ok(Some(TokenInfo {
            token_type: "access_token",
            scope: a.scope,
            client_id: a.client_id,
            exp: a.expires_at,
            iat: a.issued_at,
            nbf: a.issued_at,
            aud: Some(a.audience),
            iss: self.policy.issuer.clone(),
            jti: a.id,
            dpop_jkt: a.dpop_jkt,
        }))
    }
}
