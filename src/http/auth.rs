//! Client authentication for the OAuth endpoints, in one extractor.
//!
//! [`AuthenticatedClient`] reads the request once (the body as [`OAuthRequest`], the client
//! credentials from `Authorization: Basic` or the body) and authenticates the client under the
//! rate limits of [`super::limits`]:
//!
//! 1. the body is read and parsed;
//! 2. the source address is counted (`rate_limit_per_ip`);
//! 3. the credentials are taken from Basic or the body, and the secret is checked;
//! 4. a failed check is counted per (client id, source) (`auth_failures_per_minute`), and past
//!    that limit answered `429` instead of `401`;
//! 5. the authenticated client is counted (`rate_limit_per_client`).
//!
//! Every refusal up to and including step 4 is in the server's default wire profile: the client
//! is not known yet. From then on the handler answers in the client's profile, which the
//! extractor hands on with the client and the parsed body.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};

use super::AppState;
use super::error::ApiError;
use super::request::OAuthRequest;
use crate::domain::audit::Actor;
use crate::domain::client::{Client, Profile};
use crate::service::ServiceError;

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
        let form = OAuthRequest::from_request(req, state).await?;
        let source = actor.source.as_deref();
        state
            .limits
            .source(source)
            .map_err(|l| ApiError::limited(default, l))?;
        let creds = form.credentials().map_err(|(e, challenge)| {
            ApiError::oauth(default, e).with_basic_challenge(challenge)
        })?;
        let client =
            check_secret(state, &creds.client_id, &creds.secret, creds.basic, &actor).await?;
        Ok(Self {
            profile: state.tessera.profile_of(&client),
            client,
            form,
            actor,
        })
    }
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
    basic: bool,
    actor: &Actor,
) -> Result<Client, ApiError> {
    let default = state.tessera.policy().default_profile;
    let client = state
        .tessera
        .authenticate(client_id, secret, actor)
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
    tracing::Span::current().record("client_id", client.id.as_str());
    state
        .limits
        .client(&client.id)
        .map_err(|l| ApiError::limited(state.tessera.profile_of(&client), l))?;
    Ok(client)
}
