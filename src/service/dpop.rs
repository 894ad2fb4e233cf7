//! DPoP (RFC 9449) at Tessera's endpoints: proofs checked against the issuer's public URL, the
//! server nonce, and the rules of which requests need a proof.
//!
//! The proof checks themselves are [`crate::domain::dpop`]; this module gives them the URL of
//! the endpoint (the issuer's public URL and the endpoint's path, since Tessera may sit behind
//! a proxy and the `Host` a request arrived with is not what the client signed), the clock, the
//! nonce key and the nonce setting; and it claims each proof's `jti` in the store that every
//! instance shares ([`super::replay`]), so that a proof is used once across all of them.

use crate::domain::client::Client;
use crate::domain::dpop::{self, Expected, Proof, ProofError};
use crate::domain::error::{ErrorCode, OAuthError};

use super::replay::{DPOP_PROOF, JwtUses, jwt_id};
use super::{ServiceError, Tessera};

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/token";

/// The path of the reference resource server.
pub const PING_PATH: &str = "/ping";

/// What a DPoP proof is checked for: the request's method and the endpoint's path, and at a
/// resource server the access token sent with it.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The request's HTTP method.
    pub method: &'a str,
    /// The endpoint's path ([`TOKEN_PATH`], [`PING_PATH`]).
    pub path: &'a str,
    /// The access token the proof comes with (resource servers: `ath`).
    pub access_token: Option<&'a str>,
}

impl Tessera {
    /// The public URL of the endpoint at `path`: the issuer's URL and the path. What a DPoP
    /// proof's `htu` must name.
    #[must_use]
    pub fn endpoint_url(&self, path: &str) -> String {
        format!("{}{path}", self.policy.issuer.trim_end_matches('/'))
    }

    /// True if DPoP proofs must carry a server nonce.
    #[must_use]
    pub fn dpop_nonces(&self) -> bool {
        self.policy.dpop_nonce
    }

    /// A fresh nonce for a `DPoP-Nonce` header, when nonces are on.
    #[must_use]
    pub fn dpop_nonce(&self) -> Option<String> {
        self.policy
            .dpop_nonce
            .then(|| dpop::nonce(&self.keys, self.clock.now()))
    }

    /// Checks a DPoP proof sent to `target`. The algorithms are those for the client when it is
    /// known (no RS256 for a FAPI 2.0 client), else all. The proof's `jti` is not claimed here:
    /// see [`Tessera::claim_proof`].
    ///
    /// # Errors
    /// [`ProofError`] (`invalid_dpop_proof` or `use_dpop_nonce`).
    pub fn check_proof(
        &self,
        proof: &str,
        target: ProofTarget<'_>,
        client: Option<&Client>,
    ) -> Result<Proof, ProofError> {
        let url = self.endpoint_url(target.path);
        let expected = Expected {
            method: target.method,
            url: &url,
            access_token: target.access_token,
            nonce_required: self.policy.dpop_nonce,
            fapi2: client.is_some_and(fapi2),
            now: self.clock.now(),
        };
        dpop::check(proof, &expected, &self.keys)
    }

    /// Claims `proof`'s `jti` (under its key's thumbprint) in the replay store, until the proof
    /// is too old to be accepted anyway. The caller keeps the claim if its request succeeds
    /// and releases it ([`JwtUses::release`]) if it fails, so that a proof is recorded as used
    /// only by a request that succeeded.
    ///
    /// # Errors
    /// `invalid_dpop_proof` for a proof already used (here or on another instance), or a store
    /// failure.
    pub async fn use_proof(&self, proof: &Proof) -> Result<JwtUses, ServiceError> {
        let mut uses = JwtUses::new(self.store.clone());
        let id = jwt_id(DPOP_PROOF, proof.jkt(), proof.jti());
        if !uses.claim(id, proof.replay_until()).await? {
            metrics::counter!("tessera_dpop_replays_total").increment(1);
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "DPoP proof: this proof was already used (RFC 9449 §11.1); make a new one for each request",
            )
            .into());
        }
        Ok(uses)
    }
}

/// True if FAPI 2.0 rules apply to `client` (no RS256 proofs).
fn fapi2(client: &Client) -> bool {
    client.auth.fapi2
}
