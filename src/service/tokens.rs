//! Grants, revocation and bearer checks.

use serde_json::json;

use crate::domain::audit::{Actor, AuditEvent, AuditKind};
use crate::domain::client::{AuthMethod, Client, ClientType, TokenFormat};
use crate::domain::clock::UnixTime;
use crate::domain::dpop::Proof;
use crate::domain::error::{ErrorCode, OAuthError};
use crate::domain::grant::{self, RefreshVerdict};
use crate::domain::jwt::{self, AccessClaims};
use crate::domain::scope::ScopeSet;
use crate::domain::token::{self, OpaqueKind, TokenHash, TokenRef};
use crate::store::{
    AccessKey, NewAccessToken, NewFamily, NewRefreshToken, RotateOutcome, StoreError,
};

use super::dpop::{ProofTarget, TOKEN_PATH};
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
    /// The `DPoP` proof header (RFC 9449), if the request had one (the HTTP layer refuses
    /// more than one).
    pub dpop: Option<&'a str>,
    /// The `x5t#S256` of the client certificate the request came with, if any (RFC 8705 §3).
    pub certificate: Option<&'a str>,
    /// Bind the access token to `certificate`: the client authenticated with mTLS, or asked
    /// for certificate-bound tokens (`tls_client_certificate_bound_access_tokens`).
    pub bind_certificate: bool,
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
    /// True if the access token is DPoP-bound (`token_type: DPoP`).
    pub dpop_bound: bool,
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
    /// The thumbprint of the key a DPoP-bound token is bound to.
    pub dpop_jkt: Option<String>,
    /// The `x5t#S256` of the certificate a certificate-bound token is bound to.
    pub cert_thumbprint: Option<String>,
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

/// What a new access token may be bound to: the DPoP proof's key, else the presented
/// certificate (only one of the two is set).
#[derive(Debug, Clone, Copy)]
struct Binding<'a> {
    jkt: Option<&'a str>,
    x5t: Option<&'a str>,
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The shortest refresh retry window of a FAPI 2.0 client, seconds. FAPI 2.0 Security Profile
/// §5.3.2.1 forbids rotating refresh tokens unless a client whose response was lost can retry;
/// a FAPI client's consumed refresh token may therefore be exchanged again for at least this
/// long (or `refresh_grace`, if longer) before reuse revokes its family.
pub const FAPI2_REFRESH_GRACE: u32 = 60;

impl Tessera {
    /// The refresh retry window of `client`: `refresh_grace`, at least
    /// [`FAPI2_REFRESH_GRACE`] for a FAPI 2.0 client.
    #[must_use]
    pub fn refresh_grace_for(&self, client: &Client) -> u32 {
        if client.auth.fapi2 {
            self.policy.refresh_grace.max(FAPI2_REFRESH_GRACE)
        } else {
            self.policy.refresh_grace
        }
    }

    /// Authenticates a client by id and secret, presented by `method` (Basic or the body).
    ///
    /// # Errors
    /// `invalid_client` for an unknown client, a wrong secret, a disabled client, or a client
    /// not allowed `method` (said only once the secret matched, so that the answer tells
    /// nothing to someone without it).
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: &str,
        method: AuthMethod,
        actor: &Actor,
    ) -> Result<Client, ServiceError> {
        let now = self.clock.now();
        let client = if client_id.is_empty() || client_id.len() > 128 {
            None
        } else {
            self.store.get_client(client_id).await?
        };
        let mut refusal = OAuthError::invalid_client();
        let (known, reason) = match client {
            Some(c)
                if c.secret_matches(secret, &self.keys, now)
                    && !c.disabled
                    && c.auth.allows(method) =>
            {
                return Ok(c);
            }
            Some(c) if c.secret_matches(secret, &self.keys, now) && !c.disabled => {
                refusal = OAuthError::new(
                    ErrorCode::InvalidClient,
                    format!("{method} is not allowed for this client"),
                );
                (Some(c.id), "method_not_allowed")
            }
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
        self.record_auth_failure(known.as_deref(), reason, None, actor, now)
            .await;
        Err(refusal.into())
    }

    /// Counts, logs and audits a failed client authentication: the client (when known), the
    /// reason and, for the key and certificate methods, the method and what was wrong. Never
    /// the credential. The presented id of an unknown client is not recorded: it may be a
    /// mistyped secret.
    pub(super) async fn record_auth_failure(
        &self,
        known: Option<&str>,
        reason: &'static str,
        method: Option<(&'static str, &str)>,
        actor: &Actor,
        now: UnixTime,
    ) {
        metrics::counter!("tessera_auth_failures_total", "reason" => reason).increment(1);
        let why = method.map(|(_, detail)| detail);
        tracing::info!(
            client_id = known,
            reason,
            why,
            "client authentication failed"
        );
        let detail = match method {
            None => json!({ "reason": reason }),
            Some((method, why)) => json!({ "reason": reason, "method": method, "detail": why }),
        };
        let event = AuditEvent::new(AuditKind::AuthFailed, now, actor, known, detail);
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "could not record an authentication failure");
        }
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
        let grant_type = required(req.grant_type, "grant_type")?;
        let cert_bound = req.bind_certificate && req.certificate.is_some();
        let proof = self.token_proof(client, req.dpop, cert_bound)?;
        let uses = match &proof {
            Some(p) => Some(self.use_proof(p).await?),
            None => None,
        };
        let jkt = proof.as_ref().map(Proof::jkt);
        // A token is bound to one thing: the DPoP key when a proof was sent, else the
        // certificate (docs/protocol.md, "Certificate-bound access tokens").
        let bind = Binding {
            jkt,
            x5t: if jkt.is_some() { None } else { req.certificate },
        };
        let result = self
            .run_grant(client, req, grant_type, client_type, bind, actor)
            .await;
        // A proof is used up only by a request that succeeded.
        if let (Err(_), Some(uses)) = (&result, uses) {
            uses.release().await;
        }
        result
    }

    async fn run_grant(
        &self,
        client: &Client,
        req: &TokenRequest<'_>,
        grant_type: &str,
        client_type: Option<ClientType>,
        bind: Binding<'_>,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        match grant_type {
            "client_credentials" => {
                self.client_credentials(client, req, client_type.unwrap_or_default(), bind, actor)
                    .await
            }
            "refresh_token" => self.refresh(client, req, bind, actor).await,
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

    /// The DPoP proof of a token request, checked: `None` without one, which a client whose
    /// tokens must be DPoP-bound may not send.
    ///
    /// A missing proof is `invalid_dpop_proof`, like a bad one: the client must send a (valid)
    /// proof, which is what that code tells a DPoP client library (Keycloak answers the same).
    ///
    /// A FAPI 2.0 client needs a sender constraint, which a certificate binding (`cert_bound`,
    /// RFC 8705) gives as well as DPoP; `require_dpop` asks for DPoP itself.
    fn token_proof(
        &self,
        client: &Client,
        header: Option<&str>,
        cert_bound: bool,
    ) -> Result<Option<Proof>, OAuthError> {
        let Some(header) = header else {
            if client.auth.require_dpop || (client.dpop_required() && !cert_bound) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    if client.auth.require_dpop {
                        "this client's access tokens must be DPoP-bound: send a DPoP proof (RFC 9449)"
                    } else {
                        "a FAPI 2.0 client's access tokens must be sender-constrained: send a DPoP proof (RFC 9449) or authenticate with a client certificate (RFC 8705)"
                    },
                ));
            }
            return Ok(None);
        };
        let target = ProofTarget {
            method: "POST",
            path: TOKEN_PATH,
            access_token: None,
        };
        Ok(Some(self.check_proof(header, target, Some(client))?))
    }

    async fn client_credentials(
        &self,
        client: &Client,
        req: &TokenRequest<'_>,
        client_type: ClientType,
        bind: Binding<'_>,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        let jkt = bind.jkt;
        let x5t = bind.x5t.filter(|_| req.bind_certificate);
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
            dpop_bound: jkt.is_some(),
            cert_bound: x5t.is_some(),
        };
        let (access_token, access) = self.mint_access(
            client,
            &family.id,
            &scope,
            audience,
            Binding { jkt, x5t },
            now,
        )?;
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
        bind: Binding<'_>,
        actor: &Actor,
    ) -> Result<Issued, ServiceError> {
        let jkt = bind.jkt;
        let presented = required(req.refresh_token, "refresh_token")?;
        let found = token::verify(OpaqueKind::Refresh, presented, &self.keys)
            .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid"))?;
        let hash = found.hash;
        let grace = self.refresh_grace_for(client);
        // Two rounds at most: if another request consumes the token between our read and our
        // conditional write, the second read sees it consumed and treats this as reuse.
        for _ in 0..2 {
            let now = self.clock.now();
            let record = self
                .store
                .find_refresh(&found)
                .await?
                .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid"))?;
            match grant::judge_refresh(&record, &client.id, now, grace)? {
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
            // A DPoP-bound grant stays bound: its refresh needs a proof, and the new access
            // token is bound to that proof's key (which may be a new key).
            if record.dpop_bound && jkt.is_none() {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "this grant is DPoP-bound: refreshing it needs a DPoP proof (RFC 9449 §5)",
                )
                .into());
            }
            // A certificate-bound grant stays bound the same way: its refresh must come with a
            // client certificate, and the new access token is bound to that certificate (which
            // may be a new one: RFC 8705 §4 lets a confidential client change certificates).
            if record.cert_bound && req.certificate.is_none() {
                return Err(OAuthError::invalid_grant(
                    "this grant is certificate-bound: refreshing it needs the client certificate (RFC 8705 §3)",
                )
                .into());
            }
            let x5t = bind
                .x5t
                .filter(|_| req.bind_certificate || record.cert_bound);
            let scope = grant::refresh_scope(req.scope, &record.scope, client, &self.registry)?;
            if record.client_type == ClientType::Web {
                client.check_origin(req.origin)?;
            }
            let audience = client.audience_for(req.resource, &self.policy.audience)?;
            let (access_token, access) = self.mint_access(
                client,
                &record.family_id,
                &scope,
                audience,
                Binding { jkt, x5t },
                now,
            )?;
            let (refresh_token, refresh) =
                self.mint_refresh(client, &record.family_id, &record.scope, now)?;
            let cutoff = if grace > 0 {
                now - i64::from(grace)
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
        bind: Binding<'_>,
        now: UnixTime,
    ) -> Result<(String, NewAccessToken), ServiceError> {
        let (dpop_jkt, cert_thumbprint) = (bind.jkt, bind.x5t);
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
                    cnf: jwt::Confirmation::of(dpop_jkt, cert_thumbprint),
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
            dpop_jkt: dpop_jkt.map(str::to_owned),
            cert_thumbprint: cert_thumbprint.map(str::to_owned),
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
            dpop_bound: access.dpop_jkt.is_some(),
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
            dpop_jkt: record.dpop_jkt,
            cert_thumbprint: record.cert_thumbprint,
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
