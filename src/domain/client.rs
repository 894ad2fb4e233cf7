//! API clients: who may ask for tokens, and with what settings.
//!
//! A client is what Moov calls an API key: a public `client_id` and a server-generated secret.
//! The secret is shown once and stored only as HMAC-SHA-256 under the server's pepper (see
//! [`crate::domain::crypto`]); comparing is constant-time. During a rotation a client has two
//! secrets: the new one, and the previous one until its expiry.

use std::fmt;
use std::str::FromStr;

use super::clock::UnixTime;
use super::crypto::{DerivedKeys, constant_time_eq};
use super::error::{ErrorCode, OAuthError};
use super::scope::ScopePattern;

/// The format of a client's access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenFormat {
    /// Tessera's own random bearer string (see [`crate::domain::token`]).
    #[default]
    Opaque,
    /// An RFC 9068 JWT access token.
    Jwt,
}

impl TokenFormat {
    /// The wire and storage name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opaque => "opaque",
            Self::Jwt => "jwt",
        }
    }
}

impl fmt::Display for TokenFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "opaque" => Ok(Self::Opaque),
            "jwt" => Ok(Self::Jwt),
            other => Err(format!(
                "unknown token format {other:?} (expected opaque or jwt)"
            )),
        }
    }
}

/// A wire profile: how AuthTokens and errors look on the wire (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The seed model: `token_type` is the format, `expires_in` a Unix timestamp, Moov errors.
    #[default]
    Seed,
    /// Moov's current SDKs: `token_type: Bearer`, `expires_in` a Unix timestamp, Moov errors.
    Moov,
    /// Plain OAuth 2.0: `token_type: Bearer`, `expires_in` in seconds, RFC 6749 errors.
    Rfc6749,
}

impl Profile {
    /// The configuration name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Moov => "moov",
            Self::Rfc6749 => "rfc6749",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(Self::Seed),
            "moov" => Ok(Self::Moov),
            "rfc6749" => Ok(Self::Rfc6749),
            other => Err(format!(
                "unknown profile {other:?} (expected seed, moov or rfc6749)"
            )),
        }
    }
}

/// Moov's `client_type`: where the token will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientType {
    /// A browser; bound to the client's allowed origins when it has any.
    #[default]
    Web,
    /// A device application.
    Device,
    /// A back-end service.
    Service,
}

impl ClientType {
    /// The storage name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Device => "device",
            Self::Service => "service",
        }
    }

    /// Parses the request field, with Moov's one-letter aliases.
    ///
    /// # Errors
    /// `invalid_request` about `client_type`.
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        match s {
            "web" | "w" => Ok(Self::Web),
            "device" | "d" => Ok(Self::Device),
            "service" | "s" => Ok(Self::Service),
            _ => Err(OAuthError::field(
                ErrorCode::InvalidRequest,
                "client_type",
                "client_type must be one of web, device, service (or w, d, s)",
            )),
        }
    }
}

/// A stored client secret: its keyed hash.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

/// An API client as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The public id.
    pub id: String,
    /// A human name.
    pub name: String,
    /// The current secret's hash.
    pub secret: SecretHash,
    /// The previous secret's hash and when it stops working, during a rotation.
    pub previous_secret: Option<(SecretHash, UnixTime)>,
    /// The scope patterns the client may request.
    pub scopes: Vec<ScopePattern>,
    /// Access token format.
    pub format: TokenFormat,
    /// Wire profile; `None` follows the server default.
    pub profile: Option<Profile>,
    /// Access token lifetime in seconds; `None` follows the server default.
    pub access_ttl: Option<u32>,
    /// Refresh token lifetime in seconds; `None` follows the server default.
    pub refresh_ttl: Option<u32>,
    /// Allowed browser origins (`scheme://host[:port]`) for `web` tokens; empty means any.
    pub origins: Vec<String>,
    /// The `aud` of its tokens; `None` follows the server default.
    pub audience: Option<String>,
    /// Introspection rights beyond its own tokens: `*` (every token) or an audience value
    /// (tokens whose `aud` is that value). `None`: its own tokens only.
    pub resource_server: Option<String>,
    /// RFC 8707 resource indicators the client may request as its tokens' audience.
    pub resources: Vec<String>,
    /// A disabled client cannot authenticate, and its tokens stop working.
    pub disabled: bool,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last change.
    pub updated_at: UnixTime,
    /// Counts the changes since creation (0 when created). An update is written only over the
    /// revision it was made from, so two concurrent changes cannot undo each other
    /// ([`crate::store::Store::update_client`]).
    pub revision: i64,
}

#[cfg(test)]
impl Client {
    /// A plain client for unit tests (id `c`, no scopes, a zero secret hash); override fields
    /// with struct update syntax.
    pub(crate) fn fixture() -> Self {
        Self {
            id: "c".into(),
            name: "n".into(),
            secret: SecretHash([0; 32]),
            previous_secret: None,
            scopes: vec![],
            format: TokenFormat::Opaque,
            profile: None,
            access_ttl: None,
            refresh_ttl: None,
            origins: vec![],
            audience: None,
            resource_server: None,
            resources: vec![],
            disabled: false,
            created_at: 0,
            updated_at: 0,
            revision: 0,
        }
    }
}

impl Client {
    /// Checks a presented secret against the current and (unexpired) previous secret, in
    /// constant time with respect to the secret's content.
    #[must_use]
    pub fn secret_matches(&self, presented: &str, keys: &DerivedKeys, now: UnixTime) -> bool {
        let hash = keys.hash_secret(presented);
        let current = constant_time_eq(&hash, &self.secret.0);
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|(h, until)| constant_time_eq(&hash, &h.0) && now < *until);
        current | previous
    }

    /// Checks the browser origin of a `web` request against the allowed origins.
    ///
    /// # Errors
    /// `unauthorized_client` when origins are configured and the request's origin is absent or
    /// not among them.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), OAuthError> {
        if self.origins.is_empty() {
            return Ok(());
        }
        let Some(origin) = origin else {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client only issues web tokens to its allowed origins; send Origin or Referer",
            ));
        };
        let origin = normalize_origin(origin);
        if self.origins.contains(&origin) {
            Ok(())
        } else {
            Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the request's origin is not allowed for this client",
            ))
        }
    }

    /// May this client introspect a token issued to `owner` for `audience`? Its own tokens
    /// always; others' if it is a resource server for all tokens (`*`) or for that audience.
    #[must_use]
    pub fn may_introspect(&self, owner: &str, audience: Option<&str>) -> bool {
        self.id == owner
            || match self.resource_server.as_deref() {
                Some("*") => true,
                Some(aud) => audience == Some(aud),
                None => false,
            }
    }

    /// The audience of a new token: the RFC 8707 `resource` if one was requested (it must be
    /// among the client's allowed resources), else the client's audience, else `default`.
    ///
    /// # Errors
    /// `invalid_target` about `resource` when the resource is not allowed.
    pub fn audience_for(
        &self,
        resource: Option<&str>,
        default: &str,
    ) -> Result<String, OAuthError> {
        match resource {
            Some(r) if self.resources.iter().any(|allowed| allowed == r) => Ok(r.to_owned()),
            Some(_) => Err(OAuthError::field(
                ErrorCode::InvalidTarget,
                "resource",
                "resource is not an allowed resource for this client",
            )),
            None => Ok(self.audience.clone().unwrap_or_else(|| default.to_owned())),
        }
    }
}

/// Checks an RFC 8707 resource indicator given by an operator: an absolute URI (RFC 3986
/// `scheme ":" hier-part`, e.g. `https://api.example.com` or `urn:example:api`) without a
/// fragment.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_resource(value: &str) -> Result<String, String> {
    let ok = value.split_once(':').is_some_and(|(scheme, rest)| {
        scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            && !rest.is_empty()
    }) && !value.contains('#')
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "resource {value:?} must be an absolute URI without a fragment"
        ))
    }
}

/// Reduces an `Origin` value or a `Referer` URL to `scheme://host[:port]`, lower-cased, without
/// a trailing slash, path, query or fragment.
#[must_use]
pub fn normalize_origin(value: &str) -> String {
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_ascii_lowercase();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

/// Checks an origin given by an operator for a client.
///
/// # Errors
/// A message when it is not `http(s)://host[:port]`.
pub fn parse_origin(value: &str) -> Result<String, String> {
    let normalized = normalize_origin(value);
    let ok = (normalized.starts_with("https://") || normalized.starts_with("http://"))
        && normalized
            .split_once("://")
            .is_some_and(|(_, host)| !host.is_empty() && !host.contains('@'))
        && value.trim_end_matches('/').len() == normalized.len();
    if ok {
        Ok(normalized)
    } else {
        Err(format!(
            "origin {value:?} must be scheme://host[:port] with no path"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::crypto::RootKey;

    fn client(keys: &DerivedKeys, secret: &str) -> Client {
        Client {
            secret: SecretHash(keys.hash_secret(secret)),
            ..Client::fixture()
        }
    }

    #[test]
    fn previous_secret_works_until_its_expiry() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        let mut c = client(&keys, "new");
        c.previous_secret = Some((SecretHash(keys.hash_secret("old")), 100));
        assert!(c.secret_matches("new", &keys, 50));
        assert!(c.secret_matches("old", &keys, 99));
        assert!(!c.secret_matches("old", &keys, 100));
        assert!(!c.secret_matches("other", &keys, 50));
        Ok(())
    }

    #[test]
    fn origins_compare_by_scheme_host_and_port() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        let mut c = client(&keys, "s");
        assert!(c.check_origin(None).is_ok());
        c.origins = vec![parse_origin("https://App.example.com").map_err(anyhow::Error::msg)?];
        assert!(c.check_origin(Some("https://app.example.com")).is_ok());
        assert!(
            c.check_origin(Some("https://app.example.com/page?q=1"))
                .is_ok()
        );
        assert!(
            c.check_origin(Some("https://app.example.com:8443"))
                .is_err()
        );
        assert!(c.check_origin(Some("http://app.example.com")).is_err());
        assert!(
            c.check_origin(Some("https://app.example.com.evil.test"))
                .is_err()
        );
        assert!(c.check_origin(None).is_err());
        assert!(parse_origin("https://a.test/path").is_err());
        assert!(parse_origin("ftp://a.test").is_err());
        Ok(())
    }

    #[test]
    fn introspection_visibility_follows_the_resource_server_setting() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        let mut c = client(&keys, "s");
        assert!(c.may_introspect("c", None));
        assert!(!c.may_introspect("other", Some("https://api")));
        c.resource_server = Some("https://api".into());
        assert!(c.may_introspect("other", Some("https://api")));
        assert!(!c.may_introspect("other", Some("https://else")));
        assert!(!c.may_introspect("other", None));
        c.resource_server = Some("*".into());
        assert!(c.may_introspect("other", None));
        Ok(())
    }

    #[test]
    fn audience_comes_from_an_allowed_resource_or_the_defaults() -> anyhow::Result<()> {
        let keys = RootKey::generate()?.derive()?;
        let mut c = client(&keys, "s");
        assert_eq!(c.audience_for(None, "https://issuer")?, "https://issuer");
        c.audience = Some("https://api".into());
        assert_eq!(c.audience_for(None, "https://issuer")?, "https://api");
        c.resources = vec!["https://payments".into()];
        assert_eq!(
            c.audience_for(Some("https://payments"), "x")?,
            "https://payments"
        );
        assert!(c.audience_for(Some("https://other"), "x").is_err());
        assert!(parse_resource("https://a.test/api").is_ok());
        assert!(parse_resource("urn:example:api").is_ok());
        assert!(parse_resource("no-scheme").is_err());
        assert!(parse_resource("1http://a").is_err());
        assert!(parse_resource("https://a.test/#frag").is_err());
        Ok(())
    }

    #[test]
    fn client_type_accepts_moov_aliases() {
        assert_eq!(ClientType::parse("w").ok(), Some(ClientType::Web));
        assert_eq!(ClientType::parse("device").ok(), Some(ClientType::Device));
        assert_eq!(ClientType::parse("s").ok(), Some(ClientType::Service));
        assert!(ClientType::parse("browser").is_err());
    }
}
