//! DPoP proofs (RFC 9449): what makes an access token usable only by the holder of a key.
//!
//! A client sends a proof in the `DPoP` request header: a compact JWS it signed with a key whose
//! public half is in the proof's own `jwk` header. [`check`] applies RFC 9449 §4.3:
//!
//! 1. a compact JWS ([`Jws::parse`]) whose `alg` is allow-listed ([`algorithms`]: EdDSA, ES256,
//!    PS256, and RS256 except for FAPI 2.0 clients; never `none` or an HMAC);
//! 2. header `typ` = `dpop+jwt`;
//! 3. header `jwk` = a public key only ([`PublicJwk::parse`] refuses private members);
//! 4. the signature verifies with that key;
//! 5. claims: `jti` present (at most [`MAX_JTI_LEN`] bytes), `htm` = the request's method,
//!    `htu` = the endpoint's URL (both normalised by [`normalize_htu`]: no query or fragment,
//!    RFC 3986 §6 syntax-based normalisation), `iat` no more than [`MAX_AHEAD`] seconds in
//!    the future and no more than [`MAX_AGE`] seconds in the past;
//! 6. at a resource server, `ath` = base64url(SHA-256(access token)) ([`ath`]);
//! 7. when server nonces are on, `nonce` = a current nonce ([`nonce`], [`nonce_is_current`]);
//!    checked last, so a proof that is wrong in any other way is told so first.
//!
//! What this module cannot check is that a `jti` is used once: the caller claims the proof's
//! key thumbprint and `jti` in the store (shared by every instance) until
//! [`Proof::replay_until`], after which [`MAX_AGE`] refuses the proof anyway.
//!
//! Nonces are stateless: a nonce is base64url(HMAC-SHA-256(DPoP nonce key, time window)), the
//! key derived from the root key ([`DerivedKeys::dpop_nonce_mac`]), the window
//! [`NONCE_WINDOW`] seconds long. Every instance computes the same nonce, and the current and
//! the previous window's are accepted, so a nonce lives between one and two windows.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use super::clock::UnixTime;
use super::crypto::{DerivedKeys, constant_time_eq, sha256};
use super::error::{ErrorCode, OAuthError};
use super::jose::{Jws, PublicJwk};
use super::jwt::Algorithm;

/// The `typ` header of a DPoP proof (RFC 9449 §4.2).
pub const PROOF_TYP: &str = "dpop+jwt";

/// The longest `jti` accepted, in bytes (a UUID is 36; RFC 9449 suggests 96 random bits).
pub const MAX_JTI_LEN: usize = 128;

/// How old a proof's `iat` may be, in seconds. A proof is made for one request and sent at
/// once; a minute allows for slow networks and retries, and bounds how long a `jti` must be
/// remembered.
pub const MAX_AGE: i64 = 60;

/// How far in the future a proof's `iat` may be, in seconds (clock skew between the client and
/// Tessera).
pub const MAX_AHEAD: i64 = 10;

/// The length of a nonce window, in seconds: a nonce is accepted during its own window and the
/// next one.
pub const NONCE_WINDOW: i64 = 300;

/// Why a proof was refused. The messages are safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof is missing where one is required, or is invalid (`invalid_dpop_proof`).
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    /// The proof lacks a current server nonce (`use_dpop_nonce`).
    #[error("a DPoP nonce is required: sign the proof again with the nonce in DPoP-Nonce")]
    UseNonce,
}

impl ProofError {
    fn invalid(why: impl Into<Cow<'static, str>>) -> Self {
        Self::Invalid(why.into())
    }
}

impl From<ProofError> for OAuthError {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::Invalid(why) => {
                OAuthError::new(ErrorCode::InvalidDpopProof, format!("DPoP proof: {why}"))
            }
            e @ ProofError::UseNonce => OAuthError::new(ErrorCode::UseDpopNonce, e.to_string()),
        }
    }
}

/// The algorithms a proof may use: every supported one, RS256 excepted for FAPI 2.0 clients.
#[must_use]
pub fn algorithms(fapi2: bool) -> Vec<Algorithm> {
    Algorithm::ALL
        .into_iter()
        .filter(|a| !fapi2 || a.fapi2())
        .collect()
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's HTTP method (`htm`).
    pub method: &'a str,
    /// The endpoint's URL, built from the issuer's public URL (`htu`).
    pub url: &'a str,
    /// The access token presented with the proof, at a resource server (`ath`).
    pub access_token: Option<&'a str>,
    /// True if the proof must carry a current server nonce.
    pub nonce_required: bool,
    /// True for a FAPI 2.0 client (no RS256).
    pub fapi2: bool,
    /// The time to judge `iat` and the nonce by.
    pub now: UnixTime,
}

/// A proof that passed every check but the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    jkt: String,
    jti: String,
    iat: UnixTime,
}

impl Proof {
    /// The RFC 7638 thumbprint of the proof's key: what a token is bound to (`cnf.jkt`).
    #[must_use]
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The proof's `jti`: with [`Self::jkt`], what the store remembers (as a digest) to refuse
    /// a second use.
    #[must_use]
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// Until when the `jti` must be remembered: after that, [`MAX_AGE`] refuses the proof.
    #[must_use]
    pub fn replay_until(&self) -> UnixTime {
        self.iat.saturating_add(MAX_AGE).saturating_add(1)
    }
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

fn claim_str<'a>(value: Option<&'a Value>, name: &'static str) -> Result<&'a str, ProofError> {
    match value {
        None | Some(Value::Null) => {
            Err(ProofError::invalid(format!("the {name} claim is missing")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ProofError::invalid(format!(
            "the {name} claim is not a string"
        ))),
    }
}

/// base64url(SHA-256(access token)): the `ath` claim of a proof sent with that token.
#[must_use]
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(access_token.as_bytes()))
}

/// Checks a proof (the value of the one `DPoP` header); see the module docs for the steps.
///
/// # Errors
/// [`ProofError::Invalid`] saying what is wrong, or [`ProofError::UseNonce`] when only the
/// nonce is missing or stale.
pub fn check(
    proof: &str,
    expected: &Expected<'_>,
    keys: &DerivedKeys,
) -> Result<Proof, ProofError> {
    let jws = Jws::parse(proof.trim(), &algorithms(expected.fapi2))
        .map_err(|e| ProofError::invalid(e.to_string()))?;
    if jws.header_str("typ") != Some(PROOF_TYP) {
        return Err(ProofError::invalid("the typ header must be dpop+jwt"));
    }
    let jwk = jws
        .header("jwk")
        .ok_or_else(|| ProofError::invalid("the jwk header is missing"))?;
    let key = PublicJwk::parse(jwk).map_err(|e| ProofError::invalid(e.to_string()))?;
    jws.verify(&key)
        .map_err(|e| ProofError::invalid(e.to_string()))?;
    let claims: Claims = jws
        .claims()
        .map_err(|e| ProofError::invalid(e.to_string()))?;

    let jti = claim_str(claims.jti.as_ref(), "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ProofError::invalid(format!(
            "the jti claim must be 1 to {MAX_JTI_LEN} bytes"
        )));
    }
    if claim_str(claims.htm.as_ref(), "htm")? != expected.method {
        return Err(ProofError::invalid(format!(
            "htm is not {}, the method of this request",
            expected.method
        )));
    }
    let htu = claim_str(claims.htu.as_ref(), "htu")?;
    let wanted = normalize_htu(expected.url);
    if wanted.is_none() || normalize_htu(htu) != wanted {
        return Err(ProofError::invalid(format!(
            "htu is not {}, the URL of this endpoint",
            expected.url
        )));
    }
    let iat = match claims.iat.as_ref() {
        None | Some(Value::Null) => return Err(ProofError::invalid("the iat claim is missing")),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))
            .ok_or_else(|| ProofError::invalid("the iat claim is not a time"))?,
        Some(_) => return Err(ProofError::invalid("the iat claim is not a number")),
    };
    if iat > expected.now.saturating_add(MAX_AHEAD) {
        return Err(ProofError::invalid(format!(
            "iat is more than {MAX_AHEAD} s in the future"
        )));
    }
    if iat < expected.now.saturating_sub(MAX_AGE) {
        return Err(ProofError::invalid(format!(
            "iat is more than {MAX_AGE} s in the past: make a new proof for each request"
        )));
    }
    if let Some(token) = expected.access_token {
        let sent = claim_str(claims.ath.as_ref(), "ath")?;
        if !constant_time_eq(sent.as_bytes(), ath(token).as_bytes()) {
            return Err(ProofError::invalid(
                "ath is not the hash of the access token sent with the proof",
            ));
        }
    }
    if expected.nonce_required {
        let current = match claims.nonce.as_ref() {
            Some(Value::String(n)) => nonce_is_current(keys, n, expected.now),
            _ => false,
        };
        if !current {
            return Err(ProofError::UseNonce);
        }
    }
    Ok(Proof {
        jkt: key.thumbprint().to_owned(),
        jti: jti.to_owned(),
        iat,
    })
}

fn nonce_of(keys: &DerivedKeys, window: i64) -> String {
    let mut input = b"dpop-nonce\0".to_vec();
    input.extend_from_slice(&window.to_be_bytes());
    URL_SAFE_NO_PAD.encode(keys.dpop_nonce_mac(&input))
}

/// The nonce of the current window, for a `DPoP-Nonce` header.
#[must_use]
pub fn nonce(keys: &DerivedKeys, now: UnixTime) -> String {
    nonce_of(keys, now.div_euclid(NONCE_WINDOW))
}

/// True if `presented` is the nonce of the current or the previous window.
#[must_use]
pub fn nonce_is_current(keys: &DerivedKeys, presented: &str, now: UnixTime) -> bool {
    let window = now.div_euclid(NONCE_WINDOW);
    [window, window.saturating_sub(1)]
        .into_iter()
        .any(|w| constant_time_eq(presented.as_bytes(), nonce_of(keys, w).as_bytes()))
}

/// An `htu` (or the endpoint URL it is compared with) normalised for comparison: an absolute
/// `http` or `https` URL without query and fragment, scheme and host in lower case, the
/// default port dropped, dot segments resolved, an empty path as `/` (what the `url` crate
/// does when it parses), and percent-encoding normalised (RFC 3986 §6.2.2: hex digits in upper
/// case, unreserved characters decoded). `None` if it is not such a URL.
#[must_use]
pub fn normalize_htu(value: &str) -> Option<String> {
    let mut url = url::Url::parse(value).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(normalize_percent(url.as_str()))
}

fn normalize_percent(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hex(*c)),
                bytes.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            let decoded = u8::try_from(h * 16 + l).unwrap_or(0);
            if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(decoded));
            } else {
                out.push('%');
                out.push_str(&format!("{decoded:02X}"));
            }
            i += 3;
            continue;
        }
        out.push(char::from(b));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
