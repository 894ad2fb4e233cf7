//! Other parties' JWS: public JWKs (RFC 7517) and compact JWS signatures (RFC 7515) made by
//! keys Tessera does not hold. Client assertions (`private_key_jwt`, RFC 7523) are verified
//! against the keys a client registered; DPoP proofs (RFC 9449) against the key they embed.
//!
//! The rules are strict on purpose, since everything here comes from the network:
//!
//! - **Keys** are public only: a JWK with a private member (`d`, `p`, `q`, `dp`, `dq`, `qi`,
//!   `oth`, `k`) is refused, so that a client that pasted its private key learns so at
//!   registration rather than having it stored. Only the key types of [`Algorithm`] are known:
//!   `OKP`/`Ed25519`, `EC`/`P-256`, and `RSA` of 2048 to 8192 bits with a sane exponent.
//! - **Algorithms** come from an allow-list the caller passes: never `none`, never an HMAC, and
//!   the header's `alg` must fit the key's type and the key's own `alg` when it has one.
//! - **Headers** with `crit` are refused (no extension is understood), as are tokens over
//!   [`MAX_JWS_LEN`] bytes.
//!
//! Thumbprints are RFC 7638: SHA-256 over the required members in lexicographic order, base64url.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::crypto::sha256;
use super::jwt::Algorithm;

/// The longest compact JWS accepted (bytes). An assertion or proof with an embedded RSA key is
/// well under 4 KiB.
pub const MAX_JWS_LEN: usize = 8 * 1024;

/// The most keys one JWK Set may hold.
pub const MAX_KEYS: usize = 20;

/// The algorithm an `alg` value of another party's key or JWS names: the names of
/// [`Algorithm::as_str`], and `Ed25519`, RFC 9864's fully-specified name for EdDSA over
/// Ed25519 (the only EdDSA curve known here), which oauth4webapi and openid-client send.
fn parse_alg(name: &str) -> Option<Algorithm> {
    match name {
        "Ed25519" => Some(Algorithm::EdDsa),
        other => other.parse().ok(),
    }
}

/// The `alg` names accepted for `algs` in other parties' JWS, for discovery metadata: each
/// algorithm's name, and `Ed25519` beside `EdDSA` (see [`parse_alg`]), so that a client that
/// checks the list before using the fully-specified name finds it.
#[must_use]
pub fn accepted_names(algs: &[Algorithm]) -> Vec<&'static str> {
    let mut names = Vec::with_capacity(algs.len() + 1);
    for alg in algs {
        names.push(alg.as_str());
        if *alg == Algorithm::EdDsa {
            names.push("Ed25519");
        }
    }
    names
}

/// Members that only a private or symmetric JWK has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a key or a JWS was refused. The messages are safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    /// The JWK is not a usable public key.
    #[error("invalid JWK: {0}")]
    Key(String),
    /// The JWS is not a compact JWS of JSON parts.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is missing, not allowed here, or does not fit the key.
    #[error("algorithm not allowed: {0}")]
    Algorithm(String),
    /// The header names an extension (`crit`).
    #[error("the JWS header has crit, and no extension is supported")]
    Critical,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    Ed25519 { x: Vec<u8> },
    P256 { x: Vec<u8>, y: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// A public key from a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    material: Material,
    kid: Option<String>,
    alg: Option<Algorithm>,
    thumbprint: String,
    /// The JWK as given, minus nothing: it is public.
    json: Value,
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JoseError> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| JoseError::Key(format!("{name} is missing or not a string")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JoseError::Key(format!("{name} is not base64url without padding")))
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, JoseError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JoseError::Key(format!("{name} is not a string"))),
    }
}

impl PublicJwk {
    /// Parses one JWK.
    ///
    /// # Errors
    /// [`JoseError::Key`] saying what is wrong with it.
    pub fn parse(value: &Value) -> Result<Self, JoseError> {
        let obj = value
            .as_object()
            .ok_or_else(|| JoseError::Key("a JWK is a JSON object".into()))?;
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(JoseError::Key(format!(
                "the JWK has the private member {member:?}: register public keys only"
            )));
        }
        if let Some(u) = str_member(obj, "use")?
            && u != "sig"
        {
            return Err(JoseError::Key(format!("use is {u:?}, not \"sig\"")));
        }
        if let Some(ops) = obj.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
            if !verifies {
                return Err(JoseError::Key("key_ops does not include \"verify\"".into()));
            }
        }
        let kty = str_member(obj, "kty")?.ok_or_else(|| JoseError::Key("kty is missing".into()))?;
        let (material, canonical) = match kty {
            "OKP" => {
                let crv = str_member(obj, "crv")?;
                if crv != Some("Ed25519") {
                    return Err(JoseError::Key("an OKP key must have crv Ed25519".into()));
                }
                let x = b64_member(obj, "x")?;
                if x.len() != 32 {
                    return Err(JoseError::Key("an Ed25519 x is 32 bytes".into()));
                }
                let canonical = format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(&x)
                );
                (Material::Ed25519 { x }, canonical)
            }
            "EC" => {
                let crv = str_member(obj, "crv")?;
                if crv != Some("P-256") {
                    return Err(JoseError::Key("an EC key must have crv P-256".into()));
                }
                let (x, y) = (b64_member(obj, "x")?, b64_member(obj, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JoseError::Key("P-256 x and y are 32 bytes each".into()));
                }
                let canonical = format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(&x),
                    URL_SAFE_NO_PAD.encode(&y)
                );
                (Material::P256 { x, y }, canonical)
            }
            "RSA" => {
                let (n, e) = (b64_member(obj, "n")?, b64_member(obj, "e")?);
                let n_bits = n
                    .iter()
                    .position(|b| *b != 0)
                    .map_or(0, |i| (n.len() - i) * 8);
                if !(2048..=8192).contains(&n_bits) {
                    return Err(JoseError::Key(
                        "an RSA modulus must be 2048 to 8192 bits".into(),
                    ));
                }
                if e.is_empty() || e.len() > 4 || e.first() == Some(&0) {
                    return Err(JoseError::Key("the RSA exponent is not valid".into()));
                }
                let canonical = format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(&e),
                    URL_SAFE_NO_PAD.encode(&n)
                );
                (Material::Rsa { n, e }, canonical)
            }
            other => {
                return Err(JoseError::Key(format!(
                    "kty {other:?} is not supported (OKP, EC or RSA)"
                )));
            }
        };
        let alg = str_member(obj, "alg")?
            .map(|a| {
                parse_alg(a).ok_or_else(|| JoseError::Key(format!("alg {a:?} is not supported")))
            })
            .transpose()?;
        let kid = str_member(obj, "kid")?.map(str::to_owned);
        let key = Self {
            material,
            kid,
            alg,
            thumbprint: URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes())),
            json: value.clone(),
        };
        if let Some(alg) = alg
            && !key.fits(alg)
        {
            return Err(JoseError::Key(format!(
                "alg {alg} does not fit kty {}",
                key.kty()
            )));
        }
        Ok(key)
    }

    /// The key type (`kty`).
    #[must_use]
    pub fn kty(&self) -> &'static str {
        match self.material {
            Material::Ed25519 { .. } => "OKP",
            Material::P256 { .. } => "EC",
            Material::Rsa { .. } => "RSA",
        }
    }

    /// The key id, if the JWK has one.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key's own `alg`, if the JWK has one.
    #[must_use]
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url (DPoP's `jkt`).
    #[must_use]
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The JWK as it was given.
    #[must_use]
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// True if this key can make `alg` signatures: the key type fits, and the key's own `alg`
    /// (if any) is `alg`.
    #[must_use]
    pub fn fits(&self, alg: Algorithm) -> bool {
        alg.key_type() == self.kty() && self.alg.is_none_or(|a| a == alg)
    }

    /// Verifies `sig` over `message` as an `alg` signature.
    #[must_use]
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Ed25519 { x }, Algorithm::EdDsa) => {
                UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::P256 { x, y }, Algorithm::Es256) => {
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::Rsa { n, e }, Algorithm::Rs256 | Algorithm::Ps256) => {
                let params = if alg == Algorithm::Ps256 {
                    &signature::RSA_PSS_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<PublicJwk>,
}

impl JwkSet {
    /// Parses a registered set strictly: every key must be a usable public signing key, and
    /// key ids must be unique.
    ///
    /// # Errors
    /// [`JoseError::Key`] naming the first bad key.
    pub fn parse(value: &Value) -> Result<Self, JoseError> {
        Self::parse_with(value, true)
    }

    /// Parses a set fetched from a `jwks_uri`: keys Tessera cannot use (another `kty`, `use:
    /// enc`) are skipped, as a published set may hold keys for other purposes; at least one
    /// usable key must remain.
    ///
    /// # Errors
    /// [`JoseError::Key`] when the document is not a set or has no usable key.
    pub fn parse_lenient(value: &Value) -> Result<Self, JoseError> {
        Self::parse_with(value, false)
    }

    fn parse_with(value: &Value, strict: bool) -> Result<Self, JoseError> {
        let list = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JoseError::Key("a JWK Set is an object with a keys array".into()))?;
        if list.len() > MAX_KEYS {
            return Err(JoseError::Key(format!(
                "a JWK Set may hold at most {MAX_KEYS} keys"
            )));
        }
        let mut keys: Vec<PublicJwk> = Vec::with_capacity(list.len());
        for (i, k) in list.iter().enumerate() {
            match PublicJwk::parse(k) {
                Ok(key) => {
                    if let Some(kid) = key.kid()
                        && keys.iter().any(|o| o.kid() == Some(kid))
                    {
                        return Err(JoseError::Key(format!("kid {kid:?} is used twice")));
                    }
                    keys.push(key);
                }
                Err(JoseError::Key(why)) if strict => {
                    return Err(JoseError::Key(format!("key {i}: {why}")));
                }
                Err(_) => {}
            }
        }
        if keys.is_empty() {
            return Err(JoseError::Key("the JWK Set has no usable key".into()));
        }
        Ok(Self { keys })
    }

    /// The keys.
    #[must_use]
    pub fn keys(&self) -> &[PublicJwk] {
        &self.keys
    }

    /// The keys that may have made a signature with this header: the one named by `kid` when
    /// there is a `kid`, else every key that fits `alg`.
    pub fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &PublicJwk> {
        self.keys
            .iter()
            .filter(move |k| k.fits(alg) && kid.is_none_or(|id| k.kid() == Some(id)))
    }

    /// The set as JSON, for storage and the admin API.
    #[must_use]
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "keys": self.keys.iter().map(PublicJwk::json).collect::<Vec<_>>() })
    }
}

/// A compact JWS, split and decoded, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    header: Map<String, Value>,
    alg: Algorithm,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn b64_json(part: &str) -> Option<Value> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

impl<'a> Jws<'a> {
    /// Splits `token` and checks its header: `alg` in `allowed`, no `crit`.
    ///
    /// # Errors
    /// [`JoseError::Malformed`], [`JoseError::Algorithm`] or [`JoseError::Critical`].
    pub fn parse(token: &'a str, allowed: &[Algorithm]) -> Result<Self, JoseError> {
        if token.len() > MAX_JWS_LEN {
            return Err(JoseError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed("not three dot-separated parts"));
        };
        let Some(Value::Object(header)) = b64_json(h) else {
            return Err(JoseError::Malformed("the header is not base64url JSON"));
        };
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JoseError::Algorithm("the header has no alg".into()))?;
        let alg = parse_alg(alg_name)
            .filter(|a| allowed.contains(a))
            .ok_or_else(|| {
                JoseError::Algorithm(format!(
                    "{:?} (allowed: {})",
                    alg_name.chars().take(32).collect::<String>(),
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if header.contains_key("crit") {
            return Err(JoseError::Critical);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| JoseError::Malformed("the payload is not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JoseError::Malformed("the signature is not base64url"))?;
        let signing_input = token
            .get(..h.len() + 1 + p.len())
            .ok_or(JoseError::Malformed("not three dot-separated parts"))?;
        Ok(Self {
            header,
            alg,
            signing_input,
            payload,
            signature,
        })
    }

    /// The header's `alg`.
    #[must_use]
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// A header member.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&Value> {
        self.header.get(name)
    }

    /// A header member that must be a string, if present.
    #[must_use]
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// Checks the signature with `key`.
    ///
    /// # Errors
    /// [`JoseError::Algorithm`] if the key cannot make `alg` signatures,
    /// [`JoseError::BadSignature`] if it did not make this one.
    pub fn verify(&self, key: &PublicJwk) -> Result<(), JoseError> {
        if !key.fits(self.alg) {
            return Err(JoseError::Algorithm(format!(
                "{} does not fit the key (kty {})",
                self.alg,
                key.kty()
            )));
        }
        if key.verify(self.alg, self.signing_input.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(JoseError::BadSignature)
        }
    }

    /// The payload as JSON claims (call after [`Self::verify`]).
    ///
    /// # Errors
    /// [`JoseError::Malformed`] if the payload is not that JSON.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, JoseError> {
        serde_json::from_slice(&self.payload)
            .map_err(|_| JoseError::Malformed("the claims are not the expected JSON object"))
    }
}

#[cfg(test)]
pub(crate) mod tests;
