//! Reading OAuth requests: bodies, client credentials and origins.
//!
//! `/oauth2/token` and `/oauth2/revoke` take the same fields as JSON or as
//! `application/x-www-form-urlencoded`. A form-labelled body that starts with `{` is read as JSON
//! (Moov's own curl examples send exactly that). Any other content type is refused. A repeated
//! parameter (form) or key (JSON) is refused (RFC 6749 §3.2). Unknown fields are ignored; a JSON
//! `null` counts as absent; a known field that is not a string is refused.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::AppState;
use super::error::ApiError;
use crate::domain::error::{ErrorCode, OAuthError};

/// Fields Tessera reads; a non-string JSON value for one of these is refused.
const KNOWN_FIELDS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "refresh_token",
    "client_type",
    "token",
    "token_type_hint",
    "resource",
    "client_assertion",
    "client_assertion_type",
];

/// Client credentials presented with a request.
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The secret.
    pub secret: String,
    /// True if they came (at least) in an `Authorization: Basic` header.
    pub basic: bool,
}

/// How a request authenticates its client: exactly one method.
pub enum ClientCredentials<'a> {
    /// A secret, in Basic or the body.
    Secret(Credentials),
    /// A `private_key_jwt` assertion (RFC 7523 §2.2), with the `client_id` field if sent.
    Assertion {
        /// `client_assertion`.
        assertion: &'a str,
        /// `client_id`, if sent.
        client_id: Option<&'a str>,
    },
}

/// A parsed OAuth request.
pub struct OAuthRequest {
    fields: HashMap<String, String>,
    basic: Option<Result<(String, String), ()>>,
    origin: Option<String>,
}

impl fmt::Debug for OAuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print values: they include secrets and tokens.
        f.debug_struct("OAuthRequest")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl OAuthRequest {
    /// A body field; empty values count as absent.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The browser origin: `Origin`, else the origin of `Referer`.
    #[must_use]
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The `token` field of revocation and introspection, with `token_type_hint` checked
    /// (RFC 7009 §2.1, RFC 7662 §2.1). The hint is otherwise not needed: every Tessera token
    /// says what it is (prefix or JWT shape).
    ///
    /// # Errors
    /// A missing token, or a hint other than `access_token` / `refresh_token`.
    pub fn token(&self) -> Result<&str, OAuthError> {
        let token = self
            .get("token")
            .ok_or_else(|| OAuthError::missing("token"))?;
        match self.get("token_type_hint") {
            None | Some("access_token" | "refresh_token") => Ok(token),
            Some(_) => Err(OAuthError::field(
                ErrorCode::UnsupportedTokenType,
                "token_type_hint",
                "token_type_hint must be access_token or refresh_token",
            )),
        }
    }

    /// The client's credentials: an assertion (`client_assertion` with
    /// `client_assertion_type`), or a secret ([`Self::credentials`]). An assertion sent with
    /// Basic credentials or a `client_secret` is refused: RFC 6749 §2.3 forbids more than one
    /// method in a request, and the answer is `invalid_client` (401) like every other refused
    /// client authentication, so that clients see one error for "authentication failed".
    ///
    /// # Errors
    /// `invalid_client` (with whether to send the Basic challenge), or `invalid_request` when
    /// Basic and the body disagree.
    pub fn client_credentials(&self) -> Result<ClientCredentials<'_>, (OAuthError, bool)> {
        // Present even when empty: an empty `client_assertion_type` is a wrong one, not an
        // absent one, since the client meant to send an assertion.
        let sent = |name: &str| self.fields.contains_key(name);
        if !sent("client_assertion") && !sent("client_assertion_type") {
            return self.credentials().map(ClientCredentials::Secret);
        }
        let assertion = self.get("client_assertion");
        let kind = self.get("client_assertion_type");
        let refuse =
            |why: &'static str| Err((OAuthError::new(ErrorCode::InvalidClient, why), false));
        if self.basic.is_some() || self.get("client_secret").is_some() {
            return refuse(
                "more than one client authentication method: send a client assertion, Basic credentials or client_secret, not several",
            );
        }
        if kind != Some(crate::service::assertion::JWT_BEARER) {
            return refuse(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            );
        }
        let Some(assertion) = assertion else {
            return refuse("client_assertion is required with client_assertion_type");
        };
        Ok(ClientCredentials::Assertion {
            assertion,
            client_id: self.get("client_id"),
        })
    }

    /// The client credentials, from Basic, the body, or both (which must agree).
    ///
    /// # Errors
    /// `invalid_client` when credentials are missing or malformed; `invalid_request` when the
    /// header and the body disagree.
    pub fn credentials(&self) -> Result<Credentials, (OAuthError, bool)> {
        let body_id = self.get("client_id");
        let body_secret = self.get("client_secret");
        match &self.basic {
            Some(Err(())) => Err((
                OAuthError::new(
                    ErrorCode::InvalidClient,
                    "the Authorization header is not valid Basic credentials",
                ),
                true,
            )),
            Some(Ok((id, secret))) => {
                if body_id.is_some_and(|b| b != id) || body_secret.is_some_and(|b| b != secret) {
                    return Err((
                        OAuthError::invalid_request(
                            "client credentials in the Authorization header and in the body disagree",
                        ),
                        false,
                    ));
                }
                Ok(Credentials {
                    client_id: id.clone(),
                    secret: secret.clone(),
                    basic: true,
                })
            }
            None => match (body_id, body_secret) {
                (Some(id), Some(secret)) => Ok(Credentials {
                    client_id: id.to_owned(),
                    secret: secret.to_owned(),
                    basic: false,
                }),
                _ => Err((
                    OAuthError::new(
                        ErrorCode::InvalidClient,
                        "client authentication is required (HTTP Basic, or client_id and client_secret)",
                    ),
                    true,
                )),
            },
        }
    }
}

impl FromRequest<Arc<AppState>> for OAuthRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let profile = state.tessera.policy().default_profile;
        let limit = state.max_body_bytes;
        let (parts, body) = req.into_parts();
        let headers = parts.headers;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(profile, limit));
        }
        let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
            match super::server::body_timeout_in(&e) {
                Some(timeout) => ApiError::body_timeout(profile, timeout.to_string()),
                None => ApiError::too_large(profile, limit),
            }
        })?;
        let fields = parse_body(&headers, &body).map_err(|e| ApiError::oauth(profile, e))?;
        Ok(Self {
            fields,
            basic: parse_basic(&headers),
            origin: origin_of(&headers),
        })
    }
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Parses a body by its content type (see the module docs).
///
/// # Errors
/// `invalid_request` for unsupported content types, malformed bodies and repeated fields.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    match media_type(headers).as_deref() {
        Some("application/json") => parse_json(body),
        Some("application/x-www-form-urlencoded") => {
            if body.trim_ascii_start().starts_with(b"{") {
                parse_json(body)
            } else {
                parse_form(body)
            }
        }
        Some(other) => Err(OAuthError::invalid_request(format!(
            "unsupported content type {:?}: send application/json or application/x-www-form-urlencoded",
            other.chars().take(80).collect::<String>()
        ))),
        None => Err(OAuthError::invalid_request(
            "missing Content-Type: send application/json or application/x-www-form-urlencoded",
        )),
    }
}

fn repeated(name: &str) -> OAuthError {
    OAuthError::invalid_request(format!(
        "parameter {:?} is repeated",
        name.chars().take(64).collect::<String>()
    ))
}

fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    if std::str::from_utf8(body).is_err() {
        return Err(OAuthError::invalid_request(
            "the form body is not valid UTF-8",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(repeated(&k));
        }
    }
    Ok(out)
}

fn parse_json(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_map(FieldsVisitor)
        .and_then(|r| de.end().map(|()| r));
    match parsed {
        Ok(Ok(fields)) => Ok(fields),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(OAuthError::invalid_request(format!(
            "the body is not a valid JSON object: {e}"
        ))),
    }
}

/// Collects a JSON object's string fields, refusing repeated keys and non-string known fields.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Result<HashMap<String, String>, OAuthError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut problem = None;
        while let Some(key) = map.next_key::<String>()? {
            let value: serde_json::Value = map.next_value()?;
            if !seen.insert(key.clone()) {
                problem.get_or_insert_with(|| repeated(&key));
                continue;
            }
            match value {
                serde_json::Value::String(s) => {
                    out.insert(key, s);
                }
                serde_json::Value::Null => {}
                _ => {
                    if let Some(known) = KNOWN_FIELDS.iter().find(|f| **f == key) {
                        problem.get_or_insert_with(|| {
                            OAuthError::field(
                                ErrorCode::InvalidRequest,
                                known,
                                format!("{known} must be a string"),
                            )
                        });
                    }
                }
            }
        }
        Ok(problem.map_or(Ok(out), Err))
    }
}

/// Parses `Authorization: Basic`. `None`: no Basic header; `Some(Err)`: a malformed one.
pub fn parse_basic(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Some(Err(()));
    };
    // RFC 6749 §2.3.1: both parts are form-urlencoded before being joined. Each part is one
    // value, so a literal `&` in it is a character, not the start of another parameter.
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={}", s.replace('&', "%26")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some(Ok((unescape(id), unescape(secret))))
}

fn origin_of(headers: &HeaderMap) -> Option<String> {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && *v != "null")
    };
    get(header::ORIGIN)
        .or_else(|| get(header::REFERER))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(ct) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h
    }

    #[test]
    fn json_form_and_json_labelled_as_form_read_the_same() -> Result<(), OAuthError> {
        let json = parse_body(
            &headers("application/json"),
            br#"{"grant_type":"client_credentials","n":1}"#,
        )?;
        let form = parse_body(
            &headers("application/x-www-form-urlencoded"),
            b"grant_type=client_credentials",
        )?;
        let mixed = parse_body(
            &headers("application/x-www-form-urlencoded; charset=utf-8"),
            b" {\"grant_type\":\"client_credentials\"}",
        )?;
        assert_eq!(json.get("grant_type"), form.get("grant_type"));
        assert_eq!(mixed.get("grant_type"), form.get("grant_type"));
        Ok(())
    }

    #[test]
    fn repeated_fields_and_bad_bodies_are_refused() {
        let form = headers("application/x-www-form-urlencoded");
        let json = headers("application/json");
        assert!(parse_body(&form, b"scope=a&scope=b").is_err());
        assert!(parse_body(&json, br#"{"scope":"a","scope":"b"}"#).is_err());
        assert!(parse_body(&json, br#"{"scope": 5}"#).is_err());
        assert!(parse_body(&json, br#"["scope"]"#).is_err());
        assert!(parse_body(&json, br#"{"scope":"a"} trailing"#).is_err());
        assert!(parse_body(&headers("text/plain"), b"x").is_err());
        assert!(parse_body(&HeaderMap::new(), b"x").is_err());
        assert!(parse_body(&form, b"\xff\xfe").is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = STANDARD.encode("my%20id:s%3Acret");
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {v}")) {
            h.insert(header::AUTHORIZATION, v);
        }
        assert_eq!(parse_basic(&h), Some(Ok(("my id".into(), "s:cret".into()))));
        let mut bad = HeaderMap::new();
        bad.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(parse_basic(&bad), Some(Err(())));
    }

    #[test]
    fn basic_credentials_keep_a_literal_ampersand_and_equals_sign() {
        // Each part is one value: `&` and `=` in it are characters (fuzz target basic_header).
        let mut h = HeaderMap::new();
        let v = STANDARD.encode("a&b=c:s&e%26cret+x");
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {v}")) {
            h.insert(header::AUTHORIZATION, v);
        }
        assert_eq!(
            parse_basic(&h),
            Some(Ok(("a&b=c".into(), "s&e&cret x".into())))
        );
    }
}
