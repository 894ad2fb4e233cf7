//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OIDC Core §9) at the token,
//! revocation and introspection endpoints.
//!
//! An assertion is accepted when, in this order:
//!
//! 1. it is a compact JWS whose `alg` is PS256, ES256, EdDSA or RS256 (never `none`, never an
//!    HMAC; [`crate::domain::jose::Jws::parse`]);
//! 2. `iss` and `sub` are both the client id (and the `client_id` field, if sent, too);
//! 3. the client exists, is enabled, and is allowed `private_key_jwt`;
//! 4. `alg` is allowed for the client: RS256 not for a FAPI 2.0 client;
//! 5. a registered key verifies it: from `jwks`, or from `jwks_uri` ([`super::jwks`]), the one
//!    named by `kid` (any fitting key without a `kid`); an unknown `kid` refetches the
//!    `jwks_uri` once (rate-limited);
//! 6. `aud` (a string or an array) contains the issuer, the token endpoint URL, or the URL of
//!    the endpoint called;
//! 7. `exp` is present, not past (beyond [`CLOCK_SKEW`]), and at most [`MAX_LIFETIME`] (plus
//!    the skew) ahead; `iat` and `nbf`, when present, are at most [`CLOCK_SKEW`] ahead (10 s
//!    ahead is accepted, 60 s refused);
//! 8. `jti` is present and was never used by this client before ([`super::replay`]): it is
//!    claimed until `exp` + [`CLOCK_SKEW`], and released again when the request fails.
//!
//! Every refusal is `invalid_client` with a description of the rule broken (never the
//! assertion itself), audited as `auth.failed` with reason `bad_assertion` (or
//! `unknown_client`, `disabled`, `method_not_allowed`, `replayed_assertion`).

use serde::Deserialize;
use serde_json::Value;

use super::replay::{JwtUses, PRIVATE_KEY_JWT, jwt_id};
use super::{ServiceError, Tessera};
use crate::domain::audit::Actor;
use crate::domain::client::auth::ASSERTION_ALGS;
use crate::domain::client::{AuthMethod, Client};
use crate::domain::clock::UnixTime;
use crate::domain::error::{ErrorCode, OAuthError};
use crate::domain::jose::{JoseError, JwkSet, Jws};

/// The only `client_assertion_type` (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may be valid from now: `exp` at most this far ahead (seconds).
pub const MAX_LIFETIME: i64 = 300;

/// Clock difference tolerated between the client and the server (seconds): an `iat` or `nbf`
/// up to this far ahead is accepted, an `exp` up to this far past too.
pub const CLOCK_SKEW: i64 = 30;

/// The longest accepted `jti`, in bytes.
const MAX_JTI_LEN: usize = 256;

/// An assertion as presented.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// `client_assertion`.
    pub assertion: &'a str,
    /// The `client_id` field, if sent.
    pub client_id: Option<&'a str>,
    /// The URL of the endpoint called (issuer + path).
    pub endpoint: &'a str,
}

/// A refused assertion: the error, and the client when it is known (whose wire profile the
/// answer takes, and whose failure count it raises).
#[derive(Debug)]
pub struct Refused {
    /// The client the assertion named, if it exists.
    pub client: Option<Client>,
    /// The client id the assertion (or the request) named, for the failure limit.
    pub client_id: Option<String>,
    /// `invalid_client`, or a store failure.
    pub error: ServiceError,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<Value>,
    sub: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    jti: Option<Value>,
}

fn bad(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, description.into())
}

fn seconds(v: Option<&Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| bad(format!("the assertion's {name} is not a NumericDate"))),
        Some(_) => Err(bad(format!("the assertion's {name} is not a NumericDate"))),
    }
}

fn audience_ok(aud: Option<&Value>, accepted: &[&str]) -> bool {
    match aud {
        Some(Value::String(s)) => accepted.contains(&s.as_str()),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|s| accepted.contains(&s)),
        _ => false,
    }
}

/// Checks the claims (rules 6 and 7); returns `jti` and `exp`.
fn check_claims(c: &Claims, accepted: &[&str], now: UnixTime) -> Result<(String, i64), OAuthError> {
    if !audience_ok(c.aud.as_ref(), accepted) {
        return Err(bad(format!(
            "the assertion's aud must be the issuer or the token endpoint URL ({})",
            accepted.join(" or ")
        )));
    }
    let exp = seconds(c.exp.as_ref(), "exp")?.ok_or_else(|| bad("the assertion has no exp"))?;
    if exp + CLOCK_SKEW < now {
        return Err(bad("the assertion has expired (exp)"));
    }
    if exp > now + MAX_LIFETIME + CLOCK_SKEW {
        return Err(bad(format!(
            "the assertion's exp is more than {MAX_LIFETIME} seconds ahead: use short-lived assertions"
        )));
    }
    for (name, v) in [("iat", &c.iat), ("nbf", &c.nbf)] {
        if seconds(v.as_ref(), name)?.is_some_and(|t| t > now + CLOCK_SKEW) {
            return Err(bad(format!(
                "the assertion's {name} is in the future (more than {CLOCK_SKEW} seconds ahead)"
            )));
        }
    }
    let jti = match &c.jti {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_JTI_LEN => s.clone(),
        Some(Value::String(_)) => {
            return Err(bad(format!(
                "the assertion's jti must be 1 to {MAX_JTI_LEN} bytes"
            )));
        }
        _ => return Err(bad("the assertion has no jti (a unique id is required)")),
    };
    Ok((jti, exp))
}

fn jose(e: &JoseError) -> OAuthError {
    bad(format!("the client assertion is refused: {e}"))
}

impl Tessera {
    /// Authenticates a client by a `private_key_jwt` assertion (the module documentation's
    /// rules). On success the assertion's `jti` is claimed in the returned [`JwtUses`]: the
    /// caller releases it if the request then fails.
    ///
    /// # Errors
    /// [`Refused`]: `invalid_client` with the rule broken, or a store failure.
    pub async fn authenticate_assertion(
        &self,
        presented: &Presented<'_>,
        actor: &Actor,
    ) -> Result<(Client, JwtUses), Refused> {
        let now = self.clock.now();
        let mut client: Option<Client> = None;
        let mut named: Option<String> = presented.client_id.map(str::to_owned);
        let result = self
            .check_assertion(presented, now, &mut client, &mut named)
            .await;
        match result {
            Ok(uses) => match client {
                Some(c) => Ok((c, uses)),
                None => Err(Refused {
                    client: None,
                    client_id: named,
                    error: ServiceError::Internal(anyhow::anyhow!("assertion without client")),
                }),
            },
            Err(AssertionError::Store(e)) => Err(Refused {
                client,
                client_id: named,
                error: e,
            }),
            Err(AssertionError::Refused(reason, e)) => {
                let known = client.as_ref().map(|c| c.id.as_str());
                self.record_auth_failure(
                    known,
                    reason,
                    Some(("private_key_jwt", &e.description)),
                    actor,
                    now,
                )
                .await;
                Err(Refused {
                    client,
                    client_id: named,
                    error: e.into(),
                })
            }
        }
    }

    async fn check_assertion(
        &self,
        p: &Presented<'_>,
        now: UnixTime,
        found: &mut Option<Client>,
        named: &mut Option<String>,
    ) -> Result<JwtUses, AssertionError> {
        use AssertionError::Refused as R;
        let jws =
            Jws::parse(p.assertion, &ASSERTION_ALGS).map_err(|e| R("bad_assertion", jose(&e)))?;
        // Read before the signature is checked only to find the client (and so its keys);
        // nothing else is trusted until the signature verifies.
        let claims: Claims = jws.claims().map_err(|e| R("bad_assertion", jose(&e)))?;
        let iss = claims.iss.as_ref().and_then(Value::as_str);
        let sub = claims.sub.as_ref().and_then(Value::as_str);
        let Some(iss) = iss else {
            return Err(R("bad_assertion", bad("the assertion has no iss")));
        };
        if named.is_none() {
            *named = Some(iss.to_owned());
        }
        if sub != Some(iss) {
            return Err(R(
                "bad_assertion",
                bad("the assertion's iss and sub must both be the client id"),
            ));
        }
        if p.client_id.is_some_and(|id| id != iss) {
            return Err(R(
                "bad_assertion",
                bad("client_id differs from the assertion's iss and sub"),
            ));
        }
        let client = if iss.is_empty() || iss.len() > 128 {
            None
        } else {
            self.store
                .get_client(iss)
                .await
                .map_err(|e| AssertionError::Store(e.into()))?
        };
        let Some(client) = client else {
            return Err(R("unknown_client", OAuthError::invalid_client()));
        };
        *found = Some(client.clone());
        if client.disabled {
            return Err(R("disabled", OAuthError::invalid_client()));
        }
        if !client.auth.allows(AuthMethod::PrivateKeyJwt) {
            return Err(R(
                "method_not_allowed",
                bad("private_key_jwt is not allowed for this client"),
            ));
        }
        if !client.auth.assertion_algs().contains(&jws.alg()) {
            return Err(R(
                "bad_assertion",
                bad(format!(
                    "{} is not allowed for this client's assertions (FAPI 2.0: PS256, ES256 or EdDSA)",
                    jws.alg()
                )),
            ));
        }
        self.verify_with_client_keys(&client, &jws).await?;
        let issuer = self.policy.issuer.trim_end_matches('/');
        let token_endpoint = format!("{issuer}/oauth2/token");
        let accepted = [
            issuer,
            self.policy.issuer.as_str(),
            token_endpoint.as_str(),
            p.endpoint,
        ];
        let (jti, exp) =
            check_claims(&claims, &accepted, now).map_err(|e| R("bad_assertion", e))?;
        let mut uses = JwtUses::new(self.store.clone());
        let first = uses
            .claim(jwt_id(PRIVATE_KEY_JWT, &client.id, &jti), exp + CLOCK_SKEW)
            .await
            .map_err(|e| AssertionError::Store(e.into()))?;
        if !first {
            return Err(R(
                "replayed_assertion",
                bad("the assertion was already used (its jti): sign a new one for each request"),
            ));
        }
        Ok(uses)
    }

    /// Rule 5: a key of the client verifies the assertion.
    async fn verify_with_client_keys(
        &self,
        client: &Client,
        jws: &Jws<'_>,
    ) -> Result<(), AssertionError> {
        use AssertionError::Refused as R;
        let kid = jws.header_str("kid");
        let try_set = |set: &JwkSet| -> Option<Result<(), OAuthError>> {
            let mut candidates = set.candidates(kid, jws.alg()).peekable();
            candidates.peek()?;
            Some(if candidates.any(|k| jws.verify(k).is_ok()) {
                Ok(())
            } else {
                Err(bad(
                    "the client assertion's signature does not verify with the client's keys",
                ))
            })
        };
        let no_key = || {
            bad(match kid {
                Some(_) => {
                    "no registered key of the client has the assertion's kid (and fits its alg)"
                }
                None => "no registered key of the client fits the assertion's alg",
            })
        };
        if let Some(set) = &client.auth.jwks {
            return match try_set(set) {
                Some(r) => r.map_err(|e| R("bad_assertion", e)),
                None => Err(R("bad_assertion", no_key())),
            };
        }
        let Some(uri) = &client.auth.jwks_uri else {
            return Err(R("bad_assertion", bad("the client has no registered keys")));
        };
        let fetch_failed = |e: String| {
            R(
                "bad_assertion",
                bad(format!("the client's keys could not be read: {e}")),
            )
        };
        let set = self.jwks.get(uri).await.map_err(fetch_failed)?;
        if let Some(r) = try_set(&set) {
            return r.map_err(|e| R("bad_assertion", e));
        }
        // The key may be new: the client rotated. Fetch again, at most once per interval.
        match self.jwks.refetch(uri).await.map_err(fetch_failed)? {
            Some(set) => match try_set(&set) {
                Some(r) => r.map_err(|e| R("bad_assertion", e)),
                None => Err(R("bad_assertion", no_key())),
            },
            None => Err(R("bad_assertion", no_key())),
        }
    }
}

enum AssertionError {
    Refused(&'static str, OAuthError),
    Store(ServiceError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: UnixTime = 1_800_000_000;
    const AUD: [&str; 2] = ["https://as.example", "https://as.example/oauth2/token"];

    fn claims(v: Value) -> Claims {
        let mut base = json!({"iss": "c", "sub": "c", "aud": "https://as.example",
            "exp": NOW + 60, "jti": "j"});
        for (k, val) in v.as_object().into_iter().flatten() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn ok(v: Value) -> bool {
        check_claims(&claims(v), &AUD, NOW).is_ok()
    }

    #[test]
    fn the_clock_rules_have_the_documented_bounds() {
        assert!(ok(json!({"iat": NOW + 10, "nbf": NOW + 10})));
        assert!(ok(json!({"iat": NOW + CLOCK_SKEW})));
        assert!(!ok(json!({"iat": NOW + 60})));
        assert!(!ok(json!({"nbf": NOW + 60})));
        assert!(ok(json!({"exp": NOW + MAX_LIFETIME})));
        assert!(!ok(json!({"exp": NOW + MAX_LIFETIME + CLOCK_SKEW + 1})));
        assert!(ok(json!({"exp": NOW - CLOCK_SKEW})));
        assert!(!ok(json!({"exp": NOW - CLOCK_SKEW - 1})));
        assert!(!ok(json!({"exp": "soon"})));
        assert!(!ok(json!({"exp": null})));
    }

    #[test]
    fn aud_may_be_a_string_or_an_array_naming_an_accepted_value() {
        assert!(ok(json!({"aud": "https://as.example/oauth2/token"})));
        assert!(ok(
            json!({"aud": ["https://x.example", "https://as.example"]})
        ));
        assert!(!ok(json!({"aud": "https://x.example"})));
        assert!(!ok(json!({"aud": []})));
        assert!(!ok(json!({"aud": 1})));
    }

    #[test]
    fn jti_is_required_and_bounded() {
        assert!(!ok(json!({"jti": null})));
        assert!(!ok(json!({"jti": ""})));
        assert!(!ok(json!({"jti": 5})));
        assert!(!ok(json!({"jti": "j".repeat(MAX_JTI_LEN + 1)})));
        assert!(ok(json!({"jti": "j".repeat(MAX_JTI_LEN)})));
    }
}
