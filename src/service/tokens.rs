//! Grants, revocation and bearer checks.

use serde_json::json;

use crate::domain::audit::{Actor, AuditEvent, AuditKind};
use crate::domain::client::{Client, ClientType, TokenFormat};
use crate::domain::clock::UnixTime;
use crate::domain::error::{ErrorCode, OAuthError};
use crate::domain::grant::{self, RefreshVerdict};
use crate::domain::jwt::{self, AccessClaims};
use crate::domain::scope::ScopeSet;
use crate::domain::token::{self, OpaqueKind, TokenHash, TokenRef};
use crate::store::{
    AccessKey, NewAccessToken, NewFamily, NewRefreshToken, RotateOutcome, StoreError,
};

use super::{ServiceError, Tessera};

/// A token request, already split into fields by the HTTP layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// `grant_type`.
    pub grant_type: Option<&'a str>,
    /// `scope`.
    pub scope: Option<&'a str>,
    /// `refresh_token`.
    pub refresh_token: Option<&'a str>,
    /// `client_type`.
    pub client_type: Option<&'a str>,
    /// The browser origin (`Origin`, else the origin of `Referer`).
    pub origin: Option<&'a str>,
    /// RFC 8707 `resource`: the audience asked for.
    pub resource: Option<&'a str>,
}

/// A freshly issued AuthToken, before a wire profile shapes it.
pub struct Issued {
    /// The access token (opaque or JWT).
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The access token's format.
    pub format: TokenFormat,
    /// When the access token expires (Unix seconds).
    pub expires_at: UnixTime,
    /// Its lifetime in seconds.
    pub lifetime: u32,
    /// Granted scopes.
    pub scope: ScopeSet,
    /// Token id of the access token, for logs.
    pub token_id: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token_id", &self.token_id)
            .field("format", &self.format)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a valid bearer token grants.
#[derive(Debug, Clone)]
pub struct BearerGrant {
    /// The client it was issued to.
    pub client_id: String,
    /// Its scopes.
    pub scope: ScopeSet,
}

/// Why a bearer token was not accepted (RFC 6750 `invalid_token`).
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// Malformed, unknown, expired, revoked, or its client is disabled.
    #[error("the access token is invalid, expired or revoked")]
    Invalid,
    /// The store failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

fn required<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::missing(field))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Tessera {
    /// Authenticates a client by id and secret.
    ///
    /// # Errors
    /// `invalid_client` for an unknown client, a wrong secret or a disabled client.
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &str,
        actor: &Actor,
    ) -> Result<Client, ServiceError> {
        let now = self.clock.now();
        let client = if client_id.is_empty() || client_id.len() > 128 {
            None
        } else {
            self.store.get_client(client_id).await?
        };
        let (known, reason) = match client {
            Some(c) if c.secret_matches(secret, &self.keys, now) && !c.disabled => return Ok(c),
            Some(c) => (
                Some(c.id),
                if c.disabled {
                    "disabled"
                } else {
                    "wrong_secret"
                },
            ),
            None => {
                // Same work as for a known client, so timing does not reveal which ids exist.
                let _ = self.keys.hash_secret(secret);
                (None, "unknown_client")
            }
        };
        metrics::counter!("tessera_auth_failures_total", "reason" => reason).increment(1);
        tracing::info!(
            client_id = known.as_deref(),
            reason,
            "client authentication failed"
        );
        // The presented id of an unknown client is not recorded: it may be a mistyped secret.
        let event = AuditEvent::new(
            AuditKind::AuthFailed,
            now,
            actor,
            known.as_deref(),
            json!({ "reason": reason }),
        );
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "could not record an authentication failure");
        }
        Err(OAuthError::invalid_client().into())
    }

    /// `POST /oauth2/token` for an authenticated client.
    ///
    /// # Errors
    /// The OAuth refusal, or a store failure.
    pub async fn token(
        &self,
        client: &Client,
        req: &TokenRequest<'_>,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        let result = self.grant(client, req, actor).await;
        let grant: &'static str = match req.grant_type {
            Some("client_credentials") => "client_credentials",
            Some("refresh_token") => "refresh_token",
            _ => "other",
        };
        let outcome = match &result {
            Ok(_) => "issued",
            Err(ServiceError::OAuth(e)) => e.code.as_str(),
            Err(_) => "error",
        };
        metrics::counter!("tessera_tokens_total", "grant" => grant, "format" => client.format.as_str(), "outcome" => outcome)
            .increment(1);
        result
    }

    async fn grant(
        &self,
        client: &Client,
        req: &TokenRequest<'_>,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        let client_type = req
            .client_type
            .filter(|t| !t.is_empty())
            .map(ClientType::parse)
            .transpose()?;
        match required(req.grant_type, "grant_type")? {
            "client_credentials" => {
                self.client_credentials(client, req, client_type.unwrap_or_default(), actor)
                    .await
            }
            "refresh_token" => self.refresh(client, req, actor).await,
            other => Err(OAuthError::field(
                ErrorCode::UnsupportedGrantType,
                "grant_type",
                format!(
                    "grant_type {:?} is not supported (use client_credentials or refresh_token)",
                    other.chars().take(64).collect::<String>()
                ),
            )
            .into()),
        }
    }

    async fn client_credentials(
        &self,
        client: &Client,
        req: &TokenRequest<'_>,
        client_type: ClientType,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        let scope = ScopeSet::parse(required(req.scope, "scope")?)?;
        if scope.is_empty() {
            return Err(OAuthError::missing("scope").into());
        }
        self.registry.check_allowed(&scope, &client.scopes)?;
        if client_type == ClientType::Web {
            client.check_origin(req.origin)?;
        }
        let audience = client.audience_for(req.resource, &self.policy.audience)?;
        let now = self.clock.now();
        let family = NewFamily {
            id: new_id(),
            client_id: client.id.clone(),
            scope: scope.to_string(),
            client_type,
            created_at: now,
        };
        let (access_token, access) = self.mint_access(client, &family.id, &scope, audience, now)?;
        let (refresh_token, refresh) = self.mint_refresh(client, &family.id, &family.scope, now)?;
        let audit = AuditEvent::new(
            AuditKind::TokenIssued,
            now,
            actor,
            Some(&client.id),
            json!({ "token_id": access.id, "family_id": family.id, "scope": family.scope }),
        );
        match self.store.issue(&family, &access, &refresh, &audit).await {
            Ok(()) => {}
            // The client was deleted between reading it and writing its grant: it no longer
            // exists, so it cannot authenticate (as on a retry).
            Err(StoreError::Conflict(cause))
                if self.store.get_client(&client.id).await?.is_none() =>
            {
                tracing::info!(client_id = %client.id, %cause, "client deleted while a grant was written");
                return Err(OAuthError::invalid_client().into());
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(client_id = %client.id, token_id = %access.id, family_id = %family.id, "issued");
        Ok(self.issued(client, access_token, refresh_token, &access, scope))
    }

    async fn refresh(
        &self,
        client: &Client,
        req: &TokenRequest<'_>,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        let presented = required(req.refresh_token, "refresh_token")?;
        let found = token::verify(OpaqueKind::Refresh, presented, &self.keys)
            .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid"))?;
        let hash = found.hash;
        // Two rounds at most: if another request consumes the token between our read and our
        // conditional write, the second read sees it consumed and treats this as reuse.
        for _ in 0..2 {
            let now = self.clock.now();
            let record = self
                .store
                .find_refresh(&found)
                .await?
                .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid"))?;
            match grant::judge_refresh(&record, &client.id, now, self.policy.refresh_grace)? {
                RefreshVerdict::Rotate => {}
                RefreshVerdict::Reused => {
                    let audit = AuditEvent::new(
                        AuditKind::ReuseDetected,
                        now,
                        actor,
                        Some(&client.id),
                        json!({ "family_id": record.family_id, "token": hash.log_id() }),
                    );
                    self.store
                        .revoke_family(&record.family_id, now, &audit)
                        .await?;
                    metrics::counter!("tessera_refresh_reuse_detected_total").increment(1);
                    tracing::warn!(
                        client_id = %client.id, family_id = %record.family_id, token = %hash.log_id(),
                        "refresh token reuse detected: family revoked"
                    );
                    return Err(grant::reuse_error().into());
                }
            }
            let scope = grant::refresh_scope(req.scope, &record.scope, client, &self.registry)?;
            if record.client_type == ClientType::Web {
                client.check_origin(req.origin)?;
            }
            let audience = client.audience_for(req.resource, &self.policy.audience)?;
            let (access_token, access) =
                self.mint_access(client, &record.family_id, &scope, audience, now)?;
            let (refresh_token, refresh) =
                self.mint_refresh(client, &record.family_id, &record.scope, now)?;
            let cutoff = if self.policy.refresh_grace > 0 {
                now - i64::from(self.policy.refresh_grace)
            } else {
                UnixTime::MAX
            };
            let audit = AuditEvent::new(
                AuditKind::TokenRefreshed,
                now,
                actor,
                Some(&client.id),
                json!({ "token_id": access.id, "family_id": record.family_id, "scope": access.scope }),
            );
            match self
                .store
                .rotate_refresh(&found, cutoff, &access, &refresh, &audit)
                .await?
            {
                RotateOutcome::Rotated => {
                    tracing::info!(client_id = %client.id, token_id = %access.id, family_id = %record.family_id, "refreshed");
                    return Ok(self.issued(client, access_token, refresh_token, &access, scope));
                }
                RotateOutcome::Lost => continue,
            }
        }
        Err(OAuthError::invalid_grant("refresh token is no longer valid").into())
    }

    fn access_ttl(&self, client: &Client) -> u32 {
        client.access_ttl.unwrap_or(self.policy.access_ttl)
    }

    fn mint_access(
        &self,
        client: &Client,
        family_id: &str,
        scope: &ScopeSet,
        audience: String,
        now: UnixTime,
    ) -> Result<(String, NewAccessToken), ServiceError> {
        let uuid = uuid::Uuid::now_v7();
        let id = uuid.to_string();
        let expires_at = now + i64::from(self.access_ttl(client));
        let mut signing_kid = None;
        let token = match client.format {
            TokenFormat::Opaque => token::mint(OpaqueKind::Access, uuid, &self.keys)?.token,
            TokenFormat::Jwt => {
                let claims = AccessClaims {
                    iss: self.policy.issuer.clone(),
                    sub: client.id.clone(),
                    aud: audience.clone(),
                    exp: expires_at,
                    iat: now,
                    nbf: now,
                    jti: id.clone(),
                    client_id: client.id.clone(),
                    scope: scope.to_string(),
                };
                let ring = self.keyring();
                let key = ring
                    .active()
                    .ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
                signing_kid = Some(key.kid().to_owned());
                jwt::encode(key, jwt::ACCESS_TOKEN_TYP, &claims)?
            }
        };
        let record = NewAccessToken {
            id,
            hash: TokenHash::of(&token),
            family_id: family_id.to_owned(),
            client_id: client.id.clone(),
            format: client.format,
            scope: scope.to_string(),
            audience,
            issued_at: now,
            expires_at,
            signing_kid,
        };
        Ok((token, record))
    }

    fn mint_refresh(
        &self,
        client: &Client,
        family_id: &str,
        family_scope: &str,
        now: UnixTime,
    ) -> Result<(String, NewRefreshToken), ServiceError> {
        let uuid = uuid::Uuid::now_v7();
        let minted = token::mint(OpaqueKind::Refresh, uuid, &self.keys)?;
        let ttl = client.refresh_ttl.unwrap_or(self.policy.refresh_ttl);
        let record = NewRefreshToken {
            id: uuid.to_string(),
            hash: minted.hash,
            family_id: family_id.to_owned(),
            client_id: client.id.clone(),
            scope: family_scope.to_owned(),
            issued_at: now,
            expires_at: now + i64::from(ttl),
        };
        Ok((minted.token, record))
    }

    fn issued(
        &self,
        client: &Client,
        access_token: String,
        refresh_token: String,
        access: &NewAccessToken,
        scope: ScopeSet,
    ) -> Issued {
        Issued {
            access_token,
            refresh_token,
            format: client.format,
            expires_at: access.expires_at,
            lifetime: self.access_ttl(client),
            scope,
            token_id: access.id.clone(),
        }
    }

    /// `POST /oauth2/revoke` (RFC 7009) for an authenticated client. Unknown, malformed,
    /// expired and already revoked tokens succeed with nothing to do. The hint is not needed:
    /// every Tessera token says what it is (prefix or JWT shape).
    ///
    /// # Errors
    /// `unauthorized_client` if the token belongs to another client (nothing is changed), or a
    /// store failure.
    pub async fn revoke(
        &self,
        client: &Client,
        presented: &str,
        actor: &Actor,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        let not_yours = || {
            OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the token was not issued to this client",
            )
        };
        if let Some(found) = token::verify(OpaqueKind::Refresh, presented, &self.keys) {
            let Some(record) = self.store.find_refresh(&found).await? else {
                return Ok(());
            };
            if record.client_id != client.id {
                return Err(not_yours().into());
            }
            let audit = AuditEvent::new(
                AuditKind::FamilyRevoked,
                now,
                actor,
                Some(&client.id),
                json!({ "family_id": record.family_id, "by": "refresh_token" }),
            );
            self.store
                .revoke_family(&record.family_id, now, &audit)
                .await?;
            metrics::counter!("tessera_revocations_total", "kind" => "refresh_token").increment(1);
            tracing::info!(client_id = %client.id, family_id = %record.family_id, "refresh token revoked with its family");
            return Ok(());
        }
        let key = if let Some(found) = token::verify(OpaqueKind::Access, presented, &self.keys) {
            Some(OwnedAccessKey::Opaque(found))
        } else if jwt::looks_like_jwt(presented) {
            // Signature and issuer must check out; an expired JWT is nothing to revoke.
            let ring = self.keyring();
            jwt::decode(presented, |kid| ring.find(kid), &self.policy.issuer, now)
                .ok()
                .map(|claims| OwnedAccessKey::Id(claims.jti))
        } else {
            None
        };
        let Some(key) = key else { return Ok(()) };
        let Some(record) = self.store.find_access(key.borrow()).await? else {
            return Ok(());
        };
        if record.client_id != client.id {
            return Err(not_yours().into());
        }
        let audit = AuditEvent::new(
            AuditKind::TokenRevoked,
            now,
            actor,
            Some(&client.id),
            json!({ "token_id": record.id }),
        );
        self.store.revoke_access(&record.id, now, &audit).await?;
        metrics::counter!("tessera_revocations_total", "kind" => "access_token").increment(1);
        tracing::info!(client_id = %client.id, token_id = %record.id, "access token revoked");
        Ok(())
    }

    /// Checks a bearer access token the way a resource server would, plus revocation.
    ///
    /// # Errors
    /// [`BearerError::Invalid`] for any token that is not currently valid.
    pub async fn check_bearer(&self, presented: &str) -> Result<BearerGrant, BearerError> {
        let now = self.clock.now();
        let key = if let Some(found) = token::verify(OpaqueKind::Access, presented, &self.keys) {
            OwnedAccessKey::Opaque(found)
        } else if jwt::looks_like_jwt(presented) {
            let ring = self.keyring();
            let claims = jwt::decode(presented, |kid| ring.find(kid), &self.policy.issuer, now)
                .map_err(|_| BearerError::Invalid)?;
            OwnedAccessKey::Id(claims.jti)
        } else {
            return Err(BearerError::Invalid);
        };
        let record = self
            .store
            .find_access(key.borrow())
            .await
            .map_err(ServiceError::from)?
            .ok_or(BearerError::Invalid)?;
        if record.revoked || now >= record.expires_at {
            return Err(BearerError::Invalid);
        }
        let scope = ScopeSet::parse(&record.scope).map_err(|_| BearerError::Invalid)?;
        Ok(BearerGrant {
            client_id: record.client_id,
            scope,
        })
    }
}

/// An owned [`AccessKey`].
enum OwnedAccessKey {
    Opaque(TokenRef),
    Id(String),
}

impl OwnedAccessKey {
    fn borrow(&self) -> AccessKey<'_> {
        match self {
            Self::Opaque(t) => AccessKey::Opaque(t),
            Self::Id(id) => AccessKey::Id(id),
        }
    }
}
