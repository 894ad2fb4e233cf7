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

pub mod auth;

pub use auth::{AuthMethod, ClientAuth};

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
    /// ([`crate::store::ClientStore::update_client`]).
    pub revision: i64,
    /// How it authenticates: methods, keys, DPoP and FAPI 2.0 rules.
    pub auth: ClientAuth,
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
            auth: ClientAuth::default(),
        }
    }
}

impl Client {
    /// Must this client's access tokens be DPoP-bound ([`ClientAuth::dpop_required`])?
    #[must_use]
    pub fn dpop_required(&self) -> bool {
        self.auth.dpop_required()
    }

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
        // Stored origins are normalised when they are written; normalising them again here
        // also reads rows written under looser rules (e.g. with a default port) correctly.
        let origin = normalize_origin(origin);
        if self.origins.iter().any(|o| normalize_origin(o) == origin) {
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

/// The longest client name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The longest origin, audience, resource or `resource_server` value, in characters.
pub const MAX_VALUE_CHARS: usize = 2048;

/// The most allowed origins, and the most allowed resources, one client may have.
pub const MAX_LIST_ENTRIES: usize = 100;

/// The longest a rotated-out client secret may keep working: 30 days, in seconds. A longer
/// overlap would leave a secret that was rotated because it leaked usable for longer than any
/// deployment needs to roll out a new one.
pub const MAX_KEEP_OLD: u32 = 30 * 24 * 3600;

/// True for a character an operator-given value may not contain: Unicode control characters
/// (general category Cc: C0, DEL, C1), line and paragraph separators (Zl, Zp), and the format
/// characters (Cf) that reorder or hide text — bidirectional overrides and isolates, zero-width
/// spaces, the byte-order mark, tag characters. They could forge lines or colours in a terminal
/// or a log, or make two different values look alike. The zero-width (non-)joiners U+200C and
/// U+200D are allowed: they are Cf too, but some scripts and emoji sequences need them.
#[must_use]
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // Zl, Zp
                | '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{200E}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// A refusal of `field` by an operator-facing rule: `invalid_request` about that field, its
/// reason starting with the field's name.
fn refuse(field: &'static str, reason: impl std::fmt::Display) -> OAuthError {
    OAuthError::field(
        ErrorCode::InvalidRequest,
        field,
        format!("{field} {reason}"),
    )
}

/// A value quoted for an error message: Rust's debug escaping (control and invisible
/// characters as `\u{…}`), at most 64 characters of it.
fn quoted(value: &str) -> String {
    let mut short: String = value.chars().take(64).collect();
    if short.len() < value.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// Refuses a value with a forbidden character (naming its code point and position) or longer
/// than `max` characters.
fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), OAuthError> {
    if let Some((i, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| is_forbidden_char(*c))
    {
        return Err(refuse(
            field,
            format_args!(
                "must not contain control or invisible formatting characters (U+{:04X} at character {})",
                u32::from(c),
                i + 1
            ),
        ));
    }
    let n = value.chars().count();
    if n > max {
        return Err(refuse(
            field,
            format_args!("must be at most {max} characters (got {n})"),
        ));
    }
    Ok(())
}

/// Checks a client name: no forbidden character ([`is_forbidden_char`]) anywhere — a trailing
/// newline too is refused, not trimmed — and 1 to [`MAX_NAME_CHARS`] characters once
/// surrounding spaces are trimmed. Returns it trimmed.
///
/// # Errors
/// `invalid_request` about `name`.
pub fn parse_name(value: &str) -> Result<String, OAuthError> {
    check_text("name", value, usize::MAX)?;
    let name = value.trim();
    check_text("name", name, MAX_NAME_CHARS)?;
    if name.is_empty() {
        return Err(refuse(
            "name",
            format_args!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Checks an audience value (`audience`, or the audience a `resource_server` may introspect):
/// 1 to [`MAX_VALUE_CHARS`] characters, no whitespace and no forbidden character.
fn check_audience_value(field: &'static str, value: &str) -> Result<(), OAuthError> {
    check_text(field, value, MAX_VALUE_CHARS)?;
    if value.chars().any(char::is_whitespace) {
        return Err(refuse(field, "must not contain whitespace"));
    }
    Ok(())
}

/// Checks a client's `aud` override; `None` or `""` follow the server default.
///
/// # Errors
/// `invalid_request` about `audience`.
pub fn parse_audience(value: Option<&str>) -> Result<Option<String>, OAuthError> {
    match value {
        None | Some("") => Ok(None),
        Some(aud) => {
            check_audience_value("audience", aud)?;
            Ok(Some(aud.to_owned()))
        }
    }
}

/// Checks introspection rights: `*`, or an audience value; `None`, `""` and `none` take them
/// away.
///
/// # Errors
/// `invalid_request` about `resource_server`.
pub fn parse_resource_server(value: Option<&str>) -> Result<Option<String>, OAuthError> {
    match value {
        None | Some("" | "none") => Ok(None),
        Some(aud) => {
            check_audience_value("resource_server", aud)?;
            Ok(Some(aud.to_owned()))
        }
    }
}

/// Checks an RFC 8707 resource indicator given by an operator: an absolute URI (RFC 3986
/// `scheme ":" hier-part`, e.g. `https://api.example.com` or `urn:example:api`) without a
/// fragment, at most [`MAX_VALUE_CHARS`] characters, without whitespace or forbidden
/// characters.
///
/// # Errors
/// `invalid_request` about `resources`.
pub fn parse_resource(value: &str) -> Result<String, OAuthError> {
    check_text("resources", value, MAX_VALUE_CHARS)?;
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
        && !value.chars().any(char::is_whitespace);
    if ok {
        Ok(value.to_owned())
    } else {
        Err(refuse(
            "resources",
            format_args!(
                "entry {} must be an absolute URI without a fragment",
                quoted(value)
            ),
        ))
    }
}

/// Checks a list of resources: at most [`MAX_LIST_ENTRIES`], each by [`parse_resource`].
///
/// # Errors
/// `invalid_request` about `resources`.
pub fn parse_resources(values: &[String]) -> Result<Vec<String>, OAuthError> {
    if values.len() > MAX_LIST_ENTRIES {
        return Err(refuse(
            "resources",
            format_args!("must have at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    values.iter().map(|r| parse_resource(r)).collect()
}

/// Reduces an `Origin` value or a `Referer` URL to `scheme://host[:port]`, lower-cased, without
/// a default port (80 for http, 443 for https), trailing slash, path, query or fragment. For
/// comparing what a request sends with an allowed origin; it refuses nothing.
#[must_use]
pub fn normalize_origin(value: &str) -> String {
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_ascii_lowercase();
    };
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    let authority = default_port
        .and_then(|port| authority.strip_suffix(port))
        .unwrap_or(&authority);
    format!("{scheme}://{authority}")
}

/// Checks an allowed origin given by an operator and returns it normalised, as it is stored and
/// compared: a web origin `http(s)://host[:port]` (RFC 6454) — scheme `http` or `https`, a
/// valid host (a DNS name, made ASCII by IDNA, or an IP address), a port from 1 to 65535, and
/// no user info, path, query or fragment (one trailing `/` is accepted). The result is
/// lower-cased, without a default port (80 for http, 443 for https) or trailing slash, with an
/// internationalised host in its ASCII (`xn--`) form, as browsers send it in `Origin`.
///
/// # Errors
/// `invalid_request` about `origins`.
pub fn parse_origin(value: &str) -> Result<String, OAuthError> {
    let bad = |why: &str| {
        refuse(
            "origins",
            format_args!(
                "entry {} is not a web origin http(s)://host[:port]: {why}",
                quoted(value)
            ),
        )
    };
    check_text("origins", value, MAX_VALUE_CHARS)?;
    if value.chars().any(char::is_whitespace) {
        return Err(bad("it contains whitespace"));
    }
    let lower = value.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return Err(bad("the scheme must be http or https"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(bad("the host is missing"));
    }
    // The URL parser is lenient where an origin must be exact: it would take `\` as `/`,
    // decode `%xx` in the host, and accept user info. Refused here, before it runs.
    if let Some(c) = rest.chars().find(|c| matches!(c, '/' | '?' | '#')) {
        return Err(bad(match c {
            '/' => "it has a path",
            '?' => "it has a query",
            _ => "it has a fragment",
        }));
    }
    if rest.contains('@') {
        return Err(bad("it has user info"));
    }
    if rest.contains(['\\', '%']) {
        return Err(bad("the host has an invalid character"));
    }
    let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if url.port() == Some(0) {
        return Err(bad("the port must be between 1 and 65535"));
    }
    match url.origin() {
        url::Origin::Tuple(..) => Ok(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => Err(bad("it has no host")),
    }
}

/// Checks a list of allowed origins: at most [`MAX_LIST_ENTRIES`], each by [`parse_origin`];
/// returns them normalised, without repetition.
///
/// # Errors
/// `invalid_request` about `origins`.
pub fn parse_origins(values: &[String]) -> Result<Vec<String>, OAuthError> {
    if values.len() > MAX_LIST_ENTRIES {
        return Err(refuse(
            "origins",
            format_args!("must have at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    let mut origins: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let origin = parse_origin(value)?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// Checks how long a rotated-out secret keeps working: 0 (it stops at once) to
/// [`MAX_KEEP_OLD`] seconds.
///
/// # Errors
/// `invalid_request` about `keep_old`.
pub fn check_keep_old(seconds: u32) -> Result<u32, OAuthError> {
    if seconds > MAX_KEEP_OLD {
        return Err(refuse(
            "keep_old",
            format_args!("must be between 0 and {MAX_KEEP_OLD} seconds (30 days)"),
        ));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests;
