//! JWT access tokens (RFC 9068), the keys that sign them, and the JWS signing that JWT
//! introspection responses (RFC 9701) share with them.
//!
//! A JWT access token is a JWS in compact form with header `{"alg", "typ": "at+jwt", "kid"}` and
//! the claims of [`AccessClaims`]. Tessera signs with Ed25519 (`EdDSA`) by default. Verification
//! here is strict: the `alg` in the header must be the algorithm of the key named by `kid`
//! (so `none`, `HS256` or any algorithm swap is refused), `typ` must be `at+jwt`, and `exp`,
//! `nbf` and `iss` are checked.
//!
//! Key ids are RFC 7638 JWK thumbprints, so a `kid` names the key's public material and nothing
//! else. Private keys leave this module only as PKCS#8 bytes, which the caller seals under the
//! key-encryption key before storing them.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::clock::UnixTime;
use super::crypto::sha256;

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The `typ` header of JWT introspection responses (RFC 9701 §5).
pub const INTROSPECTION_TYP: &str = "token-introspection+jwt";

/// Signing algorithms. Asymmetric only: never `none`, never HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037), the default.
    EdDsa,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key (mandatory to support, RFC 9068).
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, 32-byte salt) and a 2048-bit key: the RSA
    /// algorithm FAPI 2.0 allows (PKCS#1 v1.5 it does not).
    Ps256,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Self; 4] = [Self::EdDsa, Self::Es256, Self::Rs256, Self::Ps256];

    /// The JOSE name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }

    /// The JWK key type (`kty`) whose keys this algorithm uses.
    #[must_use]
    pub fn key_type(self) -> &'static str {
        match self {
            Self::EdDsa => "OKP",
            Self::Es256 => "EC",
            Self::Rs256 | Self::Ps256 => "RSA",
        }
    }

    /// True for the algorithms FAPI 2.0 permits (PS256, ES256, EdDSA; not RS256).
    #[must_use]
    pub fn fapi2(self) -> bool {
        !matches!(self, Self::Rs256)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unsupported signing algorithm {s:?} (expected EdDSA, ES256, PS256 or RS256)"
                )
            })
    }
}

/// Where a signing key is in its life (SPEC §2.4):
/// `next` (published, not yet signing) → `active` (signing) → `retired` (published until every
/// token it signed has expired, then deleted); `revoked` (withdrawn at once: unpublished, and
/// every token it signed stops being active).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published ahead of use, so verifiers have it before the first token it signs.
    Next,
    /// Signs new tokens.
    Active,
    /// No longer signs; still published.
    Retired,
    /// Withdrawn.
    Revoked,
}

impl KeyState {
    /// The storage name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }
}

impl FromStr for KeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Next, Self::Active, Self::Retired, Self::Revoked]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown key state {s:?}"))
    }
}

/// Why a key could not be created or loaded.
#[derive(Debug, thiserror::Error)]
#[error("signing key error: {0}")]
pub struct KeyError(String);

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signing key pair.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    pair: Pair,
    jwk: serde_json::Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

fn key_err(what: &str) -> impl Fn(aws_lc_rs::error::Unspecified) -> KeyError + '_ {
    move |_| KeyError(format!("{what} failed"))
}

impl SigningKey {
    /// Generates a key; returns it with its PKCS#8 encoding (to be sealed before storing).
    ///
    /// # Errors
    /// Fails only if key generation fails.
    pub fn generate(alg: Algorithm) -> Result<(Self, Vec<u8>), KeyError> {
        let pkcs8 = match alg {
            Algorithm::EdDsa => Ed25519KeyPair::generate()
                .and_then(|p| p.to_pkcs8())
                .map_err(key_err("Ed25519 key generation"))?
                .as_ref()
                .to_vec(),
            Algorithm::Es256 => EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|p| p.to_pkcs8v1())
                .map_err(key_err("P-256 key generation"))?
                .as_ref()
                .to_vec(),
            Algorithm::Rs256 | Algorithm::Ps256 => {
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .and_then(|p| p.as_der())
                    .map_err(key_err("RSA key generation"))?
                    .as_ref()
                    .to_vec()
            }
        };
        let key = Self::from_pkcs8(alg, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Loads a key from its PKCS#8 encoding.
    ///
    /// # Errors
    /// When the bytes are not a key of that algorithm.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError(format!("not a {alg} key: {e}"));
        let (pair, canonical, mut jwk) = match alg {
            Algorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                (
                    Pair::Ed(pair),
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
                )
            }
            Algorithm::Es256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                        .map_err(rejected)?;
                // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = pair.public_key().as_ref();
                let (x, y) = point
                    .get(1..33)
                    .zip(point.get(33..65))
                    .ok_or_else(|| KeyError("unexpected P-256 public key encoding".into()))?;
                let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
                (
                    Pair::Ec(pair),
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
                )
            }
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
                let public = pair.public_key();
                let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
                let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
                (
                    Pair::Rsa(pair),
                    format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
                    serde_json::json!({ "kty": "RSA", "n": n, "e": e }),
                )
            }
        };
        // RFC 7638 thumbprint: required members in lexicographic order, no whitespace.
        let kid = URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes()));
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), kid.clone().into());
            obj.insert("alg".into(), alg.as_str().into());
            obj.insert("use".into(), "sig".into());
        }
        Ok(Self {
            kid,
            alg,
            pair,
            jwk,
        })
    }

    /// The key id (RFC 7638 thumbprint).
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    #[must_use]
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public key as a JWK, for the JWKS document.
    #[must_use]
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(key_err("ES256 signing")),
            Pair::Rsa(p) => {
                let padding: &dyn signature::RsaEncoding = if self.alg == Algorithm::Ps256 {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0u8; p.public_modulus_len()];
                p.sign(padding, &SystemRandom::new(), message, &mut sig)
                    .map_err(key_err("RSA signing"))?;
                Ok(sig)
            }
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let (alg, public): (&dyn signature::VerificationAlgorithm, &[u8]) = match &self.pair {
            Pair::Ed(p) => (&signature::ED25519, p.public_key().as_ref()),
            Pair::Ec(p) => (&signature::ECDSA_P256_SHA256_FIXED, p.public_key().as_ref()),
            Pair::Rsa(p) if self.alg == Algorithm::Ps256 => (
                &signature::RSA_PSS_2048_8192_SHA256,
                p.public_key().as_ref(),
            ),
            Pair::Rsa(p) => (
                &signature::RSA_PKCS1_2048_8192_SHA256,
                p.public_key().as_ref(),
            ),
        };
        UnparsedPublicKey::new(alg, public)
            .verify(message, sig)
            .is_ok()
    }
}

/// The claims of a Tessera access token (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the client id (a client acting on its own behalf).
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry.
    pub exp: UnixTime,
    /// Issued at.
    pub iat: UnixTime,
    /// Not before.
    pub nbf: UnixTime,
    /// Token id.
    pub jti: String,
    /// The client.
    pub client_id: String,
    /// Space-delimited scopes.
    pub scope: String,
    /// The key a DPoP-bound token is bound to (RFC 9449 §6.1); absent for a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The confirmation claim of a DPoP-bound token (RFC 7800, RFC 9449 §6.1), in JWTs and in
/// introspection responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 SHA-256 thumbprint of the proof key.
    pub jkt: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
}

/// Signs `claims` with `key` into a compact JWS with header `{"alg", "typ", "kid"}`: `typ` is
/// [`ACCESS_TOKEN_TYP`] for access tokens, [`INTROSPECTION_TYP`] for introspection responses.
///
/// # Errors
/// Only if the claims cannot be serialised or the signer fails.
pub fn encode(key: &SigningKey, typ: &str, claims: &impl Serialize) -> anyhow::Result<String> {
    let header = Header {
        alg: key.alg.as_str().to_owned(),
        typ: Some(typ.to_owned()),
        kid: Some(key.kid.clone()),
    };
    let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(out)
}

/// Why a JWT was not accepted. The variants are for logs; clients only learn "invalid".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// `typ` is not `at+jwt`.
    #[error("wrong typ")]
    WrongType,
    /// No published key has this `kid`.
    #[error("unknown key")]
    UnknownKey,
    /// The header's `alg` is not the key's.
    #[error("algorithm mismatch")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Issued by someone else.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
}

/// Verifies a compact JWS access token against `keys` (looked up by `kid`).
///
/// # Errors
/// A [`JwtError`] saying what failed.
pub fn decode<'k>(
    token: &str,
    keys: impl Fn(&str) -> Option<&'k SigningKey>,
    issuer: &str,
    now: UnixTime,
) -> Result<AccessClaims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(JwtError::WrongType);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(&keys)
        .ok_or(JwtError::UnknownKey)?;
    if header.alg != key.alg.as_str() {
        return Err(JwtError::AlgorithmMismatch);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let signed_len = h.len() + 1 + c.len();
    let signed = token.get(..signed_len).ok_or(JwtError::Malformed)?;
    if !key.verify(signed.as_bytes(), &sig) {
        return Err(JwtError::BadSignature);
    }
    let claims: AccessClaims = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if claims.iss != issuer {
        return Err(JwtError::WrongIssuer);
    }
    if now >= claims.exp {
        return Err(JwtError::Expired);
    }
    if now < claims.nbf {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

/// True if `token` has the shape of a compact JWS (three dot-separated parts).
#[must_use]
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: UnixTime) -> AccessClaims {
        AccessClaims {
            iss: "https://issuer.test".into(),
            sub: "client".into(),
            aud: "https://api.test".into(),
            exp: now + 60,
            iat: now,
            nbf: now,
            jti: "id".into(),
            client_id: "client".into(),
            scope: "/ping.read".into(),
            cnf: None,
        }
    }

    fn fixture() -> Result<(SigningKey, String), Box<dyn std::error::Error>> {
        fixture_for(Algorithm::EdDsa)
    }

    fn fixture_for(alg: Algorithm) -> Result<(SigningKey, String), Box<dyn std::error::Error>> {
        let (key, _) = SigningKey::generate(alg)?;
        let token = encode(&key, ACCESS_TOKEN_TYP, &claims(1000))?;
        Ok((key, token))
    }

    #[test]
    fn signed_tokens_verify_with_their_key() -> Result<(), Box<dyn std::error::Error>> {
        let (key, token) = fixture()?;
        let got = decode(
            &token,
            |kid| (kid == key.kid()).then_some(&key),
            "https://issuer.test",
            1000,
        )?;
        assert_eq!(got, claims(1000));
        Ok(())
    }

    #[test]
    fn every_algorithm_signs_and_verifies_and_rsa_paddings_do_not_mix()
    -> Result<(), Box<dyn std::error::Error>> {
        for alg in Algorithm::ALL {
            let (key, token) = fixture_for(alg)?;
            let find = |kid: &str| (kid == key.kid()).then_some(&key);
            assert_eq!(
                decode(&token, find, "https://issuer.test", 1000)?,
                claims(1000)
            );
            assert_eq!(key.public_jwk()["alg"], alg.as_str());
            assert_eq!(key.public_jwk()["kty"], alg.key_type());
        }
        // The same RSA key material loaded for the other padding refuses the signature.
        let (ps, pkcs8) = SigningKey::generate(Algorithm::Ps256)?;
        let rs = SigningKey::from_pkcs8(Algorithm::Rs256, &pkcs8)?;
        assert_eq!(ps.kid(), rs.kid());
        let token = encode(&ps, ACCESS_TOKEN_TYP, &claims(1000))?;
        let (signed, sig) = token.rsplit_once('.').ok_or("shape")?;
        let sig = URL_SAFE_NO_PAD.decode(sig)?;
        assert!(ps.verify(signed.as_bytes(), &sig));
        assert!(!rs.verify(signed.as_bytes(), &sig));
        Ok(())
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_kid() -> Result<(), Box<dyn std::error::Error>> {
        let (key, pkcs8) = SigningKey::generate(Algorithm::EdDsa)?;
        let again = SigningKey::from_pkcs8(Algorithm::EdDsa, &pkcs8)?;
        assert_eq!(key.kid(), again.kid());
        Ok(())
    }

    #[test]
    fn tampering_is_detected() -> Result<(), Box<dyn std::error::Error>> {
        let (key, token) = fixture()?;
        let find = |kid: &str| (kid == key.kid()).then_some(&key);
        let parts: Vec<&str> = token.split('.').collect();
        let [h, c, s] = parts.as_slice() else {
            return Err("shape".into());
        };
        // Changed claim.
        let mut cl = claims(1000);
        cl.scope = "/accounts.write".into();
        let forged = format!(
            "{h}.{}.{s}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cl)?)
        );
        assert_eq!(
            decode(&forged, find, "https://issuer.test", 1000),
            Err(JwtError::BadSignature)
        );
        // alg swapped to none / HS256.
        for alg in ["none", "HS256"] {
            let hdr = format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#, key.kid());
            let swapped = format!("{}.{c}.{s}", URL_SAFE_NO_PAD.encode(hdr));
            assert_eq!(
                decode(&swapped, find, "https://issuer.test", 1000),
                Err(JwtError::AlgorithmMismatch)
            );
        }
        // Wrong typ, unknown kid.
        let hdr = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, key.kid());
        let wrong_typ = format!("{}.{c}.{s}", URL_SAFE_NO_PAD.encode(hdr));
        assert_eq!(
            decode(&wrong_typ, find, "https://issuer.test", 1000),
            Err(JwtError::WrongType)
        );
        let hdr = r#"{"alg":"EdDSA","typ":"at+jwt","kid":"nope"}"#;
        let unknown = format!("{}.{c}.{s}", URL_SAFE_NO_PAD.encode(hdr));
        assert_eq!(
            decode(&unknown, find, "https://issuer.test", 1000),
            Err(JwtError::UnknownKey)
        );
        // Time and issuer.
        assert_eq!(
            decode(&token, find, "https://issuer.test", 1060),
            Err(JwtError::Expired)
        );
        assert_eq!(
            decode(&token, find, "https://issuer.test", 999),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            decode(&token, find, "https://other.test", 1000),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            decode("a.b", find, "https://issuer.test", 1000),
            Err(JwtError::Malformed)
        );
        Ok(())
    }
}
