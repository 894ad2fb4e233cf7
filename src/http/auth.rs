//! Client authentication for the OAuth endpoints, in one extractor.
//!
//! [`AuthenticatedClient`] reads the request once (the body as [`OAuthRequest`], the client
//! credentials from `Authorization: Basic` or the body) and authenticates the client under the
//! rate limits of [`super::limits`]:
//!
//! 1. the body is read and parsed;
//! 2. the source address is counted (`rate_limit_per_ip`);
//! 3. the credentials are taken from Basic or the body — a secret, or a `private_key_jwt`
//!    assertion (exactly one method per request) — and checked, including that the client is
//!    allowed that method ([`crate::service::assertion`] for assertions); a request with only
//!    `client_id` authenticates by its TLS client certificate ([`crate::service::mtls`]);
//! 4. a failed check is counted per (client id, source) (`auth_failures_per_minute`), and past
//!    that limit answered `429` instead of `401`;
//! 5. the authenticated client is counted (`rate_limit_per_client`).
//!
//! Every refusal up to and including step 4 is in the server's default wire profile: the client
//! is not known yet — except a refused assertion that named an existing client, answered in
//! that client's profile. From then on the handler answers in the client's profile, which the
//! extractor hands on with the client and the parsed body.
//!
//! An assertion's `jti` is claimed as used when it is checked; [`release_on_failure`], around
//! the OAuth endpoints, releases it again when the response is not a success, so that nothing
//! is recorded as used unless the request succeeded ([`crate::service::replay`]).

use std::sync::Mutex;

use std::sync::Arc;

use axum::extract::{FromRequest, Request};

use super::AppState;
use super::error::ApiError;
use super::request::{ClientCredentials, OAuthRequest};
use super::tls::ClientCertificate;
use crate::domain::audit::Actor;
use crate::domain::client::{AuthMethod, Client, Profile};
use crate::service::ServiceError;
use crate::service::assertion::{Presented, Refused};
use crate::service::mtls::PresentedCert;
use crate::service::replay::JwtUses;

/// The JWT ids a request claimed (assertion `jti`s, DPoP proofs), shared between the
/// extractors that claim them and [`release_on_failure`], which releases them if the request
/// fails. In the request's extensions on the OAuth endpoints.
#[derive(Clone, Default)]
pub struct ClaimedIds(Arc<Mutex<Option<JwtUses>>>);

impl ClaimedIds {
    /// Adds `uses` to the request's claims.
    pub fn add(&self, uses: JwtUses) {
        if let Ok(mut slot) = self.0.lock() {
            match slot.as_mut() {
                Some(held) => held.absorb(uses),
                None => *slot = Some(uses),
            }
        }
    }

    fn take(&self) -> Option<JwtUses> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Middleware of the OAuth endpoints: gives the request its [`ClaimedIds`], and releases them
/// before a response that is not a success (2xx) is sent.
pub async fn release_on_failure(
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let claimed = ClaimedIds::default();
    req.extensions_mut().insert(claimed.clone());
    let response = next.run(req).await;
    if !response.status().is_success()
        && let Some(uses) = claimed.take()
    {
        uses.release().await;
    }
    response
}

/// An OAuth request from an authenticated client, within its rate limits.
#[derive(Debug)]
pub struct AuthenticatedClient {
    /// The client.
    pub client: Client,
    /// The client's wire profile: how every answer from here on is shaped.
    pub profile: Profile,
    /// The request's fields (credentials included).
    pub form: OAuthRequest,
    /// Who asked, for the audit trail.
    pub actor: Actor,
    /// The client certificate of the connection (or from the trusted proxy), if any.
    pub certificate: Option<ClientCertificate>,
    /// True if the client authenticated with its certificate (RFC 8705 §2).
    pub mtls: bool,
}

impl AuthenticatedClient {
    /// A refusal or failure answered in the client's wire profile.
    #[must_use]
    pub fn error(&self, e: impl Into<ServiceError>) -> ApiError {
        ApiError::service(self.profile, e.into())
    }
}

impl FromRequest<Arc<AppState>> for AuthenticatedClient {
    type Rejection = ApiError;

    async fn from_request(
        mut req: Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let default = state.tessera.policy().default_profile;
        // The envelope middleware sets the actor on every request; taken, not cloned, since
        // nothing reads the request after this extractor.
        let actor = req.extensions_mut().remove::<Actor>().ok_or_else(|| {
            ApiError::service(
                default,
                ServiceError::Internal(anyhow::anyhow!("no request envelope (Actor) set")),
            )
        })?;
        let claimed = req.extensions().get::<ClaimedIds>().cloned();
        let certificate = req.extensions().get::<ClientCertificate>().cloned();
        let endpoint = format!(
            "{}{}",
            state.tessera.policy().issuer.trim_end_matches('/'),
            req.uri().path()
        );
        let form = OAuthRequest::from_request(req, state).await?;
        let source = actor.source.as_deref();
        state
            .limits
            .source(source)
            .map_err(|l| ApiError::limited(default, l))?;
        if let Some(client_id) = form.certificate_client_id() {
            let presented = certificate.as_ref().map(|c| PresentedCert {
                leaf: &c.leaf,
                chain: &c.chain,
            });
            let client = check_certificate(state, client_id, presented, &actor).await?;
            return Ok(Self {
                profile: state.tessera.profile_of(&client),
                client,
                form,
                actor,
                certificate,
                mtls: true,
            });
        }
        let creds = form.client_credentials().map_err(|(e, challenge)| {
            ApiError::oauth(default, e).with_basic_challenge(challenge)
        })?;
        let client = match creds {
            ClientCredentials::Secret(creds) => {
                let method = if creds.basic {
                    AuthMethod::ClientSecretBasic
                } else {
                    AuthMethod::ClientSecretPost
                };
                check_secret(state, &creds.client_id, &creds.secret, method, &actor).await?
            }
            ClientCredentials::Assertion {
                assertion,
                client_id,
            } => {
                let presented = Presented {
                    assertion,
                    client_id,
                    endpoint: &endpoint,
                };
                check_assertion(state, &presented, claimed.as_ref(), &actor).await?
            }
        };
        Ok(Self {
            profile: state.tessera.profile_of(&client),
            client,
            form,
            actor,
            certificate,
            mtls: false,
        })
    }
}

/// Checks a client's certificate (RFC 8705 §2), then counts the client against its rate:
/// [`check_secret`] for `tls_client_auth` and `self_signed_tls_client_auth`.
///
/// # Errors
/// `401 invalid_client` (in the named client's profile when it exists), `429` past a limit, or
/// the service failure (e.g. `503`).
async fn check_certificate(
    state: &AppState,
    client_id: &str,
    presented: Option<PresentedCert<'_>>,
    actor: &Actor,
) -> Result<Client, ApiError> {
    let client = state
        .tessera
        .authenticate_certificate(client_id, presented, actor)
        .await
        // Without a certificate the client may simply have left out its secret: the answer
        // offers Basic, as a request without credentials always got.
        .map_err(|r| refusal(state, r, presented.is_none(), actor))?;
    admit(state, client)
}

/// The answer to a refused key or certificate authentication: `invalid_client` in the named
/// client's profile (the server default when it does not exist), counted against the
/// (client id, source) failure limit and `429` past it; other failures as they are.
fn refusal(state: &AppState, refused: Refused, basic: bool, actor: &Actor) -> ApiError {
    let profile = refused
        .client
        .as_ref()
        .map_or(state.tessera.policy().default_profile, |c| {
            state.tessera.profile_of(c)
        });
    let err = ApiError::service(profile, refused.error).with_basic_challenge(basic);
    if err.is_invalid_client()
        && let Err(l) = state.limits.auth_failure(
            refused.client_id.as_deref().unwrap_or(""),
            actor.source.as_deref(),
        )
    {
        return ApiError::limited(profile, l);
    }
    err
}

/// An authenticated client, named in the request's span and counted against its rate
/// (`rate_limit_per_client`): the last step of every method.
fn admit(state: &AppState, client: Client) -> Result<Client, ApiError> {
    tracing::Span::current().record("client_id", client.id.as_str());
    state
        .limits
        .client(&client.id)
        .map_err(|l| ApiError::limited(state.tessera.profile_of(&client), l))?;
    Ok(client)
}

/// Checks a client's secret, then counts the client against its rate; a failed check is
/// counted against the (client id, source) pair, in the server's default profile. Steps 3 to 5
/// of the module docs, shared with the Basic form of `/ping`.
///
/// # Errors
/// `401 invalid_client` (with the Basic challenge when `basic`), `429` past a limit, or the
/// service failure (e.g. `503`).
pub async fn check_secret(
    state: &AppState,
    client_id: &str,
    secret: &str,
    method: AuthMethod,
    actor: &Actor,
) -> Result<Client, ApiError> {
    let basic = method == AuthMethod::ClientSecretBasic;
    let default = state.tessera.policy().default_profile;
    let client = state
        .tessera
        .authenticate(client_id, secret, method, actor)
        .await
        .map_err(|e| {
            let err = ApiError::service(default, e).with_basic_challenge(basic);
            if err.is_invalid_client()
                && let Err(l) = state
                    .limits
                    .auth_failure(client_id, actor.source.as_deref())
            {
                return ApiError::limited(default, l);
            }
            err
        })?;
    admit(state, client)
}

/// Checks a client assertion, then counts the client against its rate: [`check_secret`] for
/// `private_key_jwt`. The claimed `jti` goes into `claimed`, released if the request fails;
/// without `claimed` (not behind [`release_on_failure`]) it is kept.
///
/// # Errors
/// `401 invalid_client` (in the named client's profile when it exists), `429` past a limit, or
/// the service failure (e.g. `503`).
async fn check_assertion(
    state: &AppState,
    presented: &Presented<'_>,
    claimed: Option<&ClaimedIds>,
    actor: &Actor,
) -> Result<Client, ApiError> {
    let (client, uses) = state
        .tessera
        .authenticate_assertion(presented, actor)
        .await
        .map_err(|r| refusal(state, r, false, actor))?;
    if let Some(claimed) = claimed {
        claimed.add(uses);
    }
    admit(state, client)
}
