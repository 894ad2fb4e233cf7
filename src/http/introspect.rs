//! `POST /oauth2/introspect` (RFC 7662): authenticated with client credentials like the token
//! endpoint; the answer is `{"active": false}` or the token's claims, as JSON or, when the
//! caller's `Accept` asks for `application/token-introspection+jwt`, as a signed JWT
//! (RFC 9701; see [`negotiate`] for how `Accept` is read).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::AuthenticatedClient;
use super::error::ApiError;
#[allow(unused_imports)]
use super::openapi::{OAuthErrors, TokenFieldRequestDoc};
use crate::domain::jwt::Confirmation;

/// The media type of a JWT introspection response (RFC 9701 §4).
pub const JWT_MEDIA_TYPE: &str = "application/token-introspection+jwt";

/// The introspection response (RFC 7662 §2.2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntrospectionResponse {
    /// Whether the token is currently active.
    pub active: bool,
    /// Space-delimited scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The access token's type (RFC 7662 §2.2, as in RFC 6749 §7.1): `Bearer`. Absent for
    /// refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "Bearer")]
    pub token_type: Option<&'static str>,
    /// Which kind of token this is: `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "access_token")]
    pub token_use: Option<&'static str>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Subject (the client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Token id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The key a DPoP-bound access token is bound to (RFC 9449 §6.2): `{"jkt": thumbprint}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cnf: Option<Confirmation>,
}

/// The two shapes of an introspection answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (RFC 7662).
    Json,
    /// `application/token-introspection+jwt` (RFC 9701).
    Jwt,
}

/// How well one `Accept` element matches a media type: `None` when it does not, else its
/// specificity (3 exact, 2 `type/*`, 1 `*/*`) and its q-value in thousandths.
fn matches(range: &str, q: u16, media_type: &str) -> Option<(u8, u16)> {
    let (want_type, _) = media_type.split_once('/')?;
    let specificity = match range.split_once('/')? {
        ("*", "*") => 1,
        (t, "*") if t.eq_ignore_ascii_case(want_type) => 2,
        _ if range.eq_ignore_ascii_case(media_type) => 3,
        _ => return None,
    };
    Some((specificity, q))
}

/// An RFC 9110 §12.4.2 qvalue (`0`, `0.5`, `1.000`, …) in thousandths; `None` if malformed.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// One `Accept` element, `type/subtype;param=value;q=0.5`, as its media range and q-value;
/// `None` if it is not a media range or its q-value is malformed.
fn element(text: &str) -> Option<(&str, u16)> {
    let mut parts = text.split(';').map(str::trim);
    let range = parts.next().filter(|r| r.contains('/'))?;
    let mut q = 1000;
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = qvalue(value.trim())?;
            break;
        }
    }
    Some((range, q))
}

/// Chooses the answer's format from the request's `Accept` headers (RFC 9110 §12.5.1), or
/// `None` when neither format is acceptable (`406`).
///
/// Each format takes the q-value of the most specific element that matches it (`0` when none
/// does). The JWT is answered only when asked for by name — RFC 9701 has the server sign only
/// when requested — with a q-value above zero and at least JSON's; `*/*` or `application/*`
/// alone keep JSON. Otherwise JSON if its q-value is above zero, else the JWT if a wildcard
/// allows it, else nothing. No `Accept` header, or one without a single well-formed element,
/// means JSON, as if the client accepted anything.
#[must_use]
pub fn negotiate(headers: &HeaderMap) -> Option<Format> {
    let elements: Vec<(&str, u16)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(element)
        .collect();
    if elements.is_empty() {
        return Some(Format::Json);
    }
    let best = |media_type: &str| {
        elements
            .iter()
            .filter_map(|(range, q)| matches(range, *q, media_type))
            .max()
            .unwrap_or((0, 0))
    };
    let (json, jwt) = (best("application/json"), best(JWT_MEDIA_TYPE));
    if jwt.0 == 3 && jwt.1 > 0 && jwt.1 >= json.1 {
        Some(Format::Jwt)
    } else if json.1 > 0 {
        Some(Format::Json)
    } else if jwt.1 > 0 {
        Some(Format::Jwt)
    } else {
        None
    }
}

/// The handler.
#[utoipa::path(
    post,
    path = "/oauth2/introspect",
    tag = "oauth2",
    security(("client_basic" = [])),
    request_body(content(
        (TokenFieldRequestDoc = "application/json"),
        (TokenFieldRequestDoc = "application/x-www-form-urlencoded")
    )),
    responses(
        (status = 200, description = "`{\"active\": false}` or the token's claims. With `Accept: application/token-introspection+jwt` (RFC 9701), the same object signed as the `token_introspection` claim of a JWT (`typ` `token-introspection+jwt`, `iss` the issuer, `aud` the calling client, `iat`), verifiable with `/.well-known/jwks.json`.", content(
            (IntrospectionResponse = "application/json"),
            (String = "application/token-introspection+jwt")
        )),
        (status = 406, description = "The `Accept` header allows neither `application/json` nor `application/token-introspection+jwt`", body = super::openapi::GenericError),
        OAuthErrors,
    )
)]
pub async fn introspect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    auth: AuthenticatedClient,
) -> Result<Response, ApiError> {
    let format = negotiate(&headers).ok_or_else(|| {
        ApiError::not_acceptable(
            auth.profile,
            format!("introspection answers application/json or {JWT_MEDIA_TYPE}"),
        )
    })?;
    let token = auth.form.token().map_err(|e| auth.error(e))?;
    let info = state
        .tessera
        .introspect(&auth.client, token)
        .await
        .map_err(|e| auth.error(e))?;
    let body = match info {
        None => IntrospectionResponse {
            active: false,
            scope: None,
            client_id: None,
            token_type: None,
            token_use: None,
            exp: None,
            iat: None,
            nbf: None,
            sub: None,
            aud: None,
            iss: None,
            jti: None,
            cnf: None,
        },
        Some(i) => IntrospectionResponse {
            active: true,
            sub: Some(i.client_id.clone()),
            scope: Some(i.scope),
            client_id: Some(i.client_id),
            token_type: i.token_type,
            token_use: Some(i.token_use.as_str()),
            exp: Some(i.exp),
            iat: Some(i.iat),
            nbf: Some(i.nbf),
            aud: i.aud,
            iss: Some(i.iss),
            jti: Some(i.jti),
            cnf: i.dpop_jkt.map(|jkt| Confirmation { jkt }),
        },
    };
    let mut resp = match format {
        Format::Json => Json(body).into_response(),
        Format::Jwt => {
            let jwt = state
                .tessera
                .sign_introspection(&auth.client, &body)
                .map_err(|e| auth.error(e))?;
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(JWT_MEDIA_TYPE),
                )],
                jwt,
            )
                .into_response()
        }
    };
    // The answer depends on Accept: caches must not serve one format for the other.
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> Option<Format> {
        let mut headers = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(header::ACCEPT, v);
            }
        }
        negotiate(&headers)
    }

    #[test]
    fn json_unless_the_jwt_is_asked_for_by_name() {
        use Format::{Json, Jwt};
        for (values, want) in [
            (&[][..], Some(Json)),
            (&["*/*"], Some(Json)),
            (&["application/*"], Some(Json)),
            (&["application/json"], Some(Json)),
            (&["garbage"], Some(Json)),
            (&[JWT_MEDIA_TYPE], Some(Jwt)),
            (&["Application/Token-Introspection+JWT"], Some(Jwt)),
            (
                &["application/json, application/token-introspection+jwt"],
                Some(Jwt),
            ),
            (&["application/json", JWT_MEDIA_TYPE], Some(Jwt)),
            (
                &["application/token-introspection+jwt;q=0.5, application/json"],
                Some(Json),
            ),
            (
                &["application/token-introspection+jwt, application/json;q=0.9"],
                Some(Jwt),
            ),
            (
                &["application/token-introspection+jwt; charset=utf-8; q=0.8, */*;q=0.1"],
                Some(Jwt),
            ),
            (
                &["application/token-introspection+jwt;q=0, */*"],
                Some(Json),
            ),
            (&["application/json;q=0, */*"], Some(Jwt)),
            (&["application/json;q=0, application/*;q=0.3"], Some(Jwt)),
            (&["text/html"], None),
            (&["text/*, image/png"], None),
            (&["application/json;q=0"], None),
            (
                &["application/json;q=0, application/token-introspection+jwt;q=0"],
                None,
            ),
            (&["application/xml, application/json;q=0"], None),
            // A malformed q-value drops its element.
            (
                &["application/token-introspection+jwt;q=2, application/json"],
                Some(Json),
            ),
            (
                &["application/token-introspection+jwt;q=0.1234"],
                Some(Json),
            ),
        ] {
            assert_eq!(accept(values), want, "{values:?}");
        }
    }

    #[test]
    fn qvalues_read_as_rfc_9110_writes_them() {
        for (text, want) in [
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("2", None),
            ("0.", Some(0)),
            (".5", None),
            ("-0", None),
            ("0.5x", None),
        ] {
            assert_eq!(qvalue(text), want, "{text:?}");
        }
    }
}
