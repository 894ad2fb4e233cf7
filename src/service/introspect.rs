//! Token introspection (RFC 7662).
//!
//! A token is reported active only if it is well formed, known, unexpired, unrevoked (token,
//! family, client and — for JWTs — signing key), and visible to the caller: its own tokens, or
//! tokens addressed to the audience it serves as a resource server (or every token, with `*`).
//! Everything else, including "exists but not yours", is the same `{"active": false}`, so
//! introspection reveals nothing about tokens a caller may not see. A refresh token is active
//! while it can still be exchanged: unconsumed (or consumed within the grace window).
//!
//! The answer is JSON, or signed as a JWT introspection response (RFC 9701) when the caller
//! asks for one ([`Tessera::sign_introspection`]).

use serde::Serialize;

use crate::domain::client::Client;
use crate::domain::clock::UnixTime;
use crate::domain::crypto::hex;
use crate::domain::jwt;
use crate::domain::token::{self, OpaqueKind};
use crate::store::{AccessKey, AccessRecord};

use super::{ServiceError, Tessera};

/// Which kind of token was introspected: the response's `token_use`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// An access token.
    Access,
    /// A refresh token.
    Refresh,
}

impl TokenUse {
    /// `access_token` or `refresh_token` (the names of RFC 7009's `token_type_hint`, and the
    /// `token_use` member ORY Hydra answers).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access_token",
            Self::Refresh => "refresh_token",
        }
    }
}

/// The `token_type` of an active access token (RFC 7662 §2.2): its type in the sense of
/// RFC 6749 §7.1, i.e. how a resource server must accept it. This is the one place that
/// decides it, from the token's record: a DPoP-bound access token (RFC 9449 §6.2) is `DPoP`,
/// every other one, opaque or JWT, a bearer token (RFC 6750). A refresh token has no `token_type`: it is never presented to a
/// resource server.
fn access_token_type(record: &AccessRecord) -> &'static str {
    if record.dpop_jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// What introspection says about an active token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Access or refresh token (`token_use`).
    pub token_use: TokenUse,
    /// `token_type` (RFC 7662 §2.2): for access tokens, see [`access_token_type`]; `None` for
    /// refresh tokens.
    pub token_type: Option<&'static str>,
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
                token_use: TokenUse::Refresh,
                token_type: None,
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
            token_use: TokenUse::Access,
            token_type: Some(access_token_type(&a)),
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

/// The claims of a JWT introspection response (RFC 9701 §5): who signed it, for whom, when,
/// and the introspection response itself. `sub` and `exp` are left out (RFC 9701 §5 advises
/// it), so the JWT cannot pass for an access token.
#[derive(Serialize)]
struct IntrospectionJwt<'a, R: Serialize> {
    iss: &'a str,
    aud: &'a str,
    iat: UnixTime,
    token_introspection: &'a R,
}

impl Tessera {
    /// Signs `response` (the JSON introspection response, `{"active": false}` included) for
    /// `caller` as a JWT introspection response (RFC 9701): a JWS with `typ`
    /// `token-introspection+jwt`, signed by the active signing key (published in the JWKS),
    /// with `iss` the issuer and `aud` the caller's client id.
    ///
    /// # Errors
    /// Only internal ones: no active key, or the signer failed.
    pub fn sign_introspection(
        &self,
        caller: &Client,
        response: &impl Serialize,
    ) -> Result<String, ServiceError> {
        let claims = IntrospectionJwt {
            iss: &self.policy.issuer,
            aud: &caller.id,
            iat: self.clock.now(),
            token_introspection: response,
        };
        let ring = self.keyring();
        let key = ring
            .active()
            .ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        Ok(jwt::encode(key, jwt::INTROSPECTION_TYP, &claims)?)
    }
}
