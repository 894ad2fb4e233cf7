//! How a client authenticates: the token-endpoint auth methods it may use, the public keys its
//! `private_key_jwt` assertions are checked with, and the stricter rules it asked for (DPoP
//! required, FAPI 2.0).
//!
//! The settings are stored as one JSON text column (`clients.auth`), so a later setting needs
//! no migration: members this version does not know are ignored when read, a method it does
//! not know is dropped (an older instance then refuses that method, the safe direction).
//!
//! The rules, checked here once for the admin API and the CLI ([`ClientAuth::check`]):
//!
//! - at least one method; `private_key_jwt` needs keys: `jwks` or `jwks_uri`, never both;
//! - `jwks` is parsed strictly ([`JwkSet::parse`]): public signing keys only;
//! - `jwks_uri` is an absolute `https` URL without user info or fragment; plain `http` only
//!   when the server setting `jwks_uri_allow_http` is on (tests and development);
//! - a `fapi2` client may use only `private_key_jwt` (FAPI 2.0 Security Profile §5.3.2.1;
//!   mTLS methods will join it), and its registered keys only FAPI algorithms (no RS256).
//!
//! A client without a secret method still has a (random) secret hash, as the `secret_hash`
//! column requires one, but nobody is shown that secret and the token endpoint refuses secrets
//! from it (`client_secret_* is not allowed for this client`). Rotating its secret is how an
//! operator gets one after allowing a secret method again.

use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};

use super::{MAX_VALUE_CHARS, check_text, quoted, refuse};
use crate::domain::error::OAuthError;
use crate::domain::jose::JwkSet;
use crate::domain::jwt::Algorithm;

/// A token-endpoint authentication method (RFC 7591 §2, OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// The secret in HTTP Basic (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// The secret in the form body (`client_id` + `client_secret`).
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523 §2.2).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// Every method this version knows, in the order discovery lists them.
    pub const ALL: [Self; 3] = [
        Self::ClientSecretBasic,
        Self::ClientSecretPost,
        Self::PrivateKeyJwt,
    ];

    /// The registered name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// True for the methods that present the shared secret.
    #[must_use]
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }

    /// True for the methods a FAPI 2.0 client may use.
    #[must_use]
    pub fn fapi2(self) -> bool {
        matches!(self, Self::PrivateKeyJwt)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown auth method {} (expected client_secret_basic, client_secret_post or private_key_jwt)",
                    quoted(s)
                )
            })
    }
}

/// The algorithms a FAPI 2.0 client's assertions may use.
pub const FAPI2_ALGS: [Algorithm; 3] = [Algorithm::Ps256, Algorithm::Es256, Algorithm::EdDsa];

/// The algorithms other clients' assertions may use.
pub const ASSERTION_ALGS: [Algorithm; 4] = [
    Algorithm::Ps256,
    Algorithm::Es256,
    Algorithm::EdDsa,
    Algorithm::Rs256,
];

/// A client's authentication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The token-endpoint auth methods it may use (also at revocation and introspection).
    pub methods: Vec<AuthMethod>,
    /// Its registered public keys.
    pub jwks: Option<JwkSet>,
    /// Where its public keys are published instead.
    pub jwks_uri: Option<String>,
    /// Its access tokens must be DPoP-bound (RFC 9449).
    pub require_dpop: bool,
    /// FAPI 2.0 Security Profile rules apply to it.
    pub fapi2: bool,
}

impl Default for ClientAuth {
    /// The two secret methods; no keys; no DPoP or FAPI rule.
    fn default() -> Self {
        Self {
            methods: vec![AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost],
            jwks: None,
            jwks_uri: None,
            require_dpop: false,
            fapi2: false,
        }
    }
}

impl ClientAuth {
    /// May the client authenticate with `method`?
    #[must_use]
    pub fn allows(&self, method: AuthMethod) -> bool {
        self.methods.contains(&method)
    }

    /// Does the client authenticate with its secret at all?
    #[must_use]
    pub fn uses_secret(&self) -> bool {
        self.methods.iter().any(|m| m.uses_secret())
    }

    /// Must its access tokens be DPoP-bound? When it asked for it, and always in FAPI 2.0 mode.
    #[must_use]
    pub fn dpop_required(&self) -> bool {
        self.require_dpop || self.fapi2
    }

    /// The algorithms its assertions may be signed with: [`FAPI2_ALGS`] for a FAPI 2.0 client,
    /// else [`ASSERTION_ALGS`].
    #[must_use]
    pub fn assertion_algs(&self) -> &'static [Algorithm] {
        if self.fapi2 {
            &FAPI2_ALGS
        } else {
            &ASSERTION_ALGS
        }
    }

    /// The settings as stored in `clients.auth`.
    #[must_use]
    pub fn to_stored(&self) -> String {
        let mut v = json!({
            "methods": self.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "require_dpop": self.require_dpop,
            "fapi2": self.fapi2,
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(jwks) = &self.jwks {
                o.insert("jwks".into(), jwks.to_json());
            }
            if let Some(uri) = &self.jwks_uri {
                o.insert("jwks_uri".into(), Value::String(uri.clone()));
            }
        }
        v.to_string()
    }

    /// Reads the stored settings. Unknown members and methods are ignored (see the module
    /// documentation); a missing `methods` reads as the default.
    ///
    /// # Errors
    /// Text that is not the JSON object written by [`Self::to_stored`].
    pub fn from_stored(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let o = v.as_object().ok_or("not a JSON object")?;
        let methods = match o.get("methods") {
            None => Self::default().methods,
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|m| m.parse().ok())
                .collect(),
            Some(_) => return Err("methods is not an array".into()),
        };
        let jwks = match o.get("jwks") {
            None | Some(Value::Null) => None,
            Some(set) => Some(JwkSet::parse(set).map_err(|e| e.to_string())?),
        };
        let jwks_uri = match o.get("jwks_uri") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("jwks_uri is not a string".into()),
        };
        let flag = |name: &str| o.get(name).and_then(Value::as_bool).unwrap_or(false);
        Ok(Self {
            methods,
            jwks,
            jwks_uri,
            require_dpop: flag("require_dpop"),
            fapi2: flag("fapi2"),
        })
    }

    /// Checks the settings as a whole (the rules of the module documentation); the fields were
    /// parsed one by one before ([`parse_methods`], [`parse_jwks`], [`parse_jwks_uri`]).
    ///
    /// # Errors
    /// `invalid_request` about `auth_methods`, `jwks` or `jwks_uri`.
    pub fn check(&self) -> Result<(), OAuthError> {
        if self.methods.is_empty() {
            return Err(refuse("auth_methods", "must name at least one method"));
        }
        if self.jwks.is_some() && self.jwks_uri.is_some() {
            return Err(refuse(
                "jwks_uri",
                "cannot be set together with jwks: register keys one way",
            ));
        }
        if self.allows(AuthMethod::PrivateKeyJwt) && self.jwks.is_none() && self.jwks_uri.is_none()
        {
            return Err(refuse(
                "jwks",
                "or jwks_uri is required for private_key_jwt (the keys its assertions are checked with)",
            ));
        }
        if self.fapi2 {
            if let Some(m) = self.methods.iter().find(|m| !m.fapi2()) {
                return Err(refuse(
                    "auth_methods",
                    format_args!(
                        "of a fapi2 client may only be private_key_jwt (not {m}): FAPI 2.0 forbids shared secrets"
                    ),
                ));
            }
            if let Some(k) = self
                .jwks
                .iter()
                .flat_map(JwkSet::keys)
                .find(|k| k.alg().is_some_and(|a| !a.fapi2()))
            {
                return Err(refuse(
                    "jwks",
                    format_args!(
                        "of a fapi2 client may only hold keys for PS256, ES256 or EdDSA (key {} has alg {})",
                        quoted(k.kid().unwrap_or("without kid")),
                        k.alg().map_or("?", Algorithm::as_str)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Parses a list of method names: each known, none twice (a repetition is dropped), at least
/// one.
///
/// # Errors
/// `invalid_request` about `auth_methods`.
pub fn parse_methods(values: &[String]) -> Result<Vec<AuthMethod>, OAuthError> {
    let mut methods: Vec<AuthMethod> = Vec::with_capacity(values.len());
    for v in values {
        let m: AuthMethod = v.parse().map_err(|e| refuse("auth_methods", e))?;
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    if methods.is_empty() {
        return Err(refuse("auth_methods", "must name at least one method"));
    }
    Ok(methods)
}

/// Parses a registered JWK Set strictly ([`JwkSet::parse`]).
///
/// # Errors
/// `invalid_request` about `jwks`, saying which key is wrong and why.
pub fn parse_jwks(value: &Value) -> Result<JwkSet, OAuthError> {
    JwkSet::parse(value).map_err(|e| refuse("jwks", format_args!("is not usable: {e}")))
}

/// Checks a `jwks_uri`: an absolute `https` URL (or `http` when `allow_http`) with a host, no
/// user info or fragment, at most [`MAX_VALUE_CHARS`] characters.
///
/// # Errors
/// `invalid_request` about `jwks_uri`.
pub fn parse_jwks_uri(value: &str, allow_http: bool) -> Result<String, OAuthError> {
    check_text("jwks_uri", value, MAX_VALUE_CHARS)?;
    let url = url::Url::parse(value)
        .map_err(|e| refuse("jwks_uri", format_args!("is not an absolute URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(refuse(
                "jwks_uri",
                "must be https (plain http only with the server setting jwks_uri_allow_http)",
            ));
        }
        other => {
            return Err(refuse(
                "jwks_uri",
                format_args!("must be https, not {}", quoted(other)),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("jwks_uri", "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("jwks_uri", "must not contain user info"));
    }
    if url.fragment().is_some() {
        return Err(refuse("jwks_uri", "must not have a fragment"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed_jwks(alg: &str) -> Value {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": alg,
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})
    }

    fn field_of(e: &OAuthError) -> Option<&str> {
        e.field
    }

    #[test]
    fn the_migration_default_reads_as_the_two_secret_methods() {
        let auth =
            ClientAuth::from_stored(r#"{"methods":["client_secret_basic","client_secret_post"]}"#);
        assert_eq!(auth, Ok(ClientAuth::default()));
    }

    #[test]
    fn stored_settings_round_trip_and_unknown_members_are_ignored() {
        let auth = ClientAuth {
            methods: vec![AuthMethod::PrivateKeyJwt],
            jwks: JwkSet::parse(&ed_jwks("EdDSA")).ok(),
            jwks_uri: None,
            require_dpop: true,
            fapi2: true,
        };
        assert_eq!(ClientAuth::from_stored(&auth.to_stored()), Ok(auth));
        let later = ClientAuth::from_stored(
            r#"{"methods":["tls_client_auth","client_secret_post"],"later":1}"#,
        );
        assert_eq!(
            later.map(|a| a.methods),
            Ok(vec![AuthMethod::ClientSecretPost])
        );
    }

    #[test]
    fn private_key_jwt_needs_exactly_one_source_of_keys() {
        let mut auth = ClientAuth {
            methods: vec![AuthMethod::PrivateKeyJwt],
            ..ClientAuth::default()
        };
        assert_eq!(auth.check().err().as_ref().and_then(field_of), Some("jwks"));
        auth.jwks = JwkSet::parse(&ed_jwks("EdDSA")).ok();
        assert_eq!(auth.check(), Ok(()));
        auth.jwks_uri = Some("https://keys.example/jwks".into());
        assert_eq!(
            auth.check().err().as_ref().and_then(field_of),
            Some("jwks_uri")
        );
    }

    #[test]
    fn a_fapi2_client_uses_only_private_key_jwt_and_fapi_algorithms() {
        let mut auth = ClientAuth {
            fapi2: true,
            jwks: JwkSet::parse(&ed_jwks("EdDSA")).ok(),
            ..ClientAuth::default()
        };
        assert_eq!(
            auth.check().err().as_ref().and_then(field_of),
            Some("auth_methods")
        );
        auth.methods = vec![AuthMethod::PrivateKeyJwt];
        assert_eq!(auth.check(), Ok(()));
        assert!(auth.dpop_required());
        assert!(!auth.assertion_algs().contains(&Algorithm::Rs256));
        assert!(
            ClientAuth::default()
                .assertion_algs()
                .contains(&Algorithm::Rs256)
        );
    }

    #[test]
    fn a_jwks_uri_is_https_unless_http_is_allowed() {
        assert!(parse_jwks_uri("https://keys.example/jwks", false).is_ok());
        assert!(parse_jwks_uri("http://127.0.0.1:9/jwks", false).is_err());
        assert!(parse_jwks_uri("http://127.0.0.1:9/jwks", true).is_ok());
        assert!(parse_jwks_uri("ftp://keys.example/jwks", true).is_err());
        assert!(parse_jwks_uri("https://u:p@keys.example/jwks", false).is_err());
        assert!(parse_jwks_uri("https://keys.example/jwks#x", false).is_err());
        assert!(parse_jwks_uri("/jwks", false).is_err());
    }

    #[test]
    fn methods_are_known_and_at_least_one() {
        assert!(parse_methods(&[]).is_err());
        assert!(parse_methods(&["client_secret_jwt".into()]).is_err());
        assert_eq!(
            parse_methods(&["private_key_jwt".into(), "private_key_jwt".into()]),
            Ok(vec![AuthMethod::PrivateKeyJwt])
        );
    }
}
