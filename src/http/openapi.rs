//! OpenAPI 3.1 documents, generated from the handlers' annotations and the response types
//! themselves, so they cannot drift: `/openapi.json` on the public listener (the OAuth
//! surface) and on the admin listener (the admin API).

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// The fields of `POST /oauth2/token` (JSON or form).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenRequestDoc {
    /// `client_credentials` or `refresh_token`.
    grant_type: String,
    /// Client id (or HTTP Basic username).
    client_id: Option<String>,
    /// Client secret (or HTTP Basic password).
    client_secret: Option<String>,
    /// Space-delimited scopes (required for `client_credentials`; narrows on refresh).
    scope: Option<String>,
    /// The refresh token (for `refresh_token`).
    refresh_token: Option<String>,
    /// `web` (default), `device`, `service`, or `w`, `d`, `s`.
    client_type: Option<String>,
    /// RFC 8707 resource indicator: the audience asked for.
    resource: Option<String>,
}

/// The fields of `POST /oauth2/revoke` and `POST /oauth2/introspect` (JSON or form).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenFieldRequestDoc {
    /// The token.
    token: String,
    /// `access_token` or `refresh_token`.
    token_type_hint: Option<String>,
    /// Client id (or HTTP Basic username).
    client_id: Option<String>,
    /// Client secret (or HTTP Basic password).
    client_secret: Option<String>,
}

/// `token_type` of an AuthToken: the format in the `seed` profile, `Bearer` otherwise.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum TokenTypeDoc {
    /// Seed profile, opaque token.
    opaque,
    /// Seed profile, JWT.
    jwt,
    /// `moov` and `rfc6749` profiles.
    Bearer,
}

/// Moov's GenericError and the RFC 6749 §5.2 error body.
#[derive(Serialize, ToSchema)]
pub struct GenericError {
    /// The error code (`invalid_request`, `invalid_client`, `invalid_grant`, …).
    pub error: String,
    /// A human-readable reason.
    pub error_description: String,
}

/// A Moov field-validation failure (`422`): one key, the field, whose value is the reason —
/// e.g. `{"scope": "scope \"/x.read\" is not allowed for this client"}`.
pub struct FieldError;

impl utoipa::PartialSchema for FieldError {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
            .min_properties(Some(1))
            .max_properties(Some(1))
            .description(Some("One key, the request field; its value, the reason."))
            .into()
    }
}

impl ToSchema for FieldError {}

/// A list of at most `MAX_LIST_ENTRIES` strings of at most `MAX_VALUE_CHARS` characters.
fn bounded_list(description: &str) -> utoipa::openapi::schema::Array {
    use crate::domain::client::{MAX_LIST_ENTRIES, MAX_VALUE_CHARS};
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_VALUE_CHARS)),
        )
        .max_items(Some(MAX_LIST_ENTRIES))
        .description(Some(description))
        .build()
}

/// The schema of a client's `origins`.
#[must_use]
pub fn origins_schema() -> utoipa::openapi::schema::Array {
    bounded_list(
        "Web origins http(s)://host[:port]: no path, query, fragment or user info, port 1 to \
         65535. Stored lower-cased, without a default port or trailing slash, an \
         internationalised host in its xn-- form; repeats are dropped.",
    )
}

/// The schema of a client's `resources`.
#[must_use]
pub fn resources_schema() -> utoipa::openapi::schema::Array {
    bounded_list(
        "RFC 8707 resource indicators: absolute URIs without a fragment, whitespace or control \
         characters.",
    )
}

/// The error answers shared by the token, revoke and introspect endpoints.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum OAuthErrors {
    /// Malformed request, or (rfc6749 profile) a refused field.
    #[response(status = 400)]
    BadRequest(#[to_schema] GenericError),
    /// Client authentication failed (`invalid_client`).
    #[response(status = 401)]
    Unauthorized(#[to_schema] GenericError),
    /// The body was not received within `body_timeout`; sent with `Connection: close`.
    #[response(status = 408)]
    BodyTimeout(#[to_schema] GenericError),
    /// Body too large.
    #[response(status = 413)]
    TooLarge(#[to_schema] GenericError),
    /// Field validation failure (seed and moov profiles).
    #[response(status = 422)]
    Field(#[to_schema] FieldError),
    /// Rate limited; see `Retry-After`.
    #[response(status = 429)]
    Limited(#[to_schema] GenericError),
    /// Store unavailable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] GenericError),
}

/// The JWK set.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Jwks {
    /// Public keys.
    #[schema(value_type = Vec<Object>)]
    keys: Vec<serde_json::Value>,
}

/// Health.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    status: String,
}

/// The public API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "OAuth 2.0 token server: Moov-style AuthTokens for machine clients."
    ),
    paths(
        super::token::token,
        super::revoke::revoke,
        super::introspect::introspect,
        super::ping::ping,
        super::wellknown::jwks,
        super::wellknown::metadata,
        super::wellknown::healthz,
        super::wellknown::readyz,
    ),
    components(schemas(
        super::token::AuthToken,
        super::introspect::IntrospectionResponse,
        GenericError,
        FieldError,
        TokenRequestDoc,
        TokenFieldRequestDoc,
        TokenTypeDoc,
        Jwks,
        Health
    ))
)]
pub struct PublicApi;

/// The admin API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera admin API",
        description = "Clients, keys, bulk revocation, audit and metrics."
    ),
    paths(
        super::admin::list_clients,
        super::admin::create_client,
        super::admin::show_client,
        super::admin::update_client,
        super::admin::delete_client,
        super::admin::rotate_secret,
        super::admin::disable_client,
        super::admin::enable_client,
        super::admin::revoke_client_tokens,
        super::admin::revoke_family,
        super::admin::revoke_issued_before,
        super::admin::list_keys,
        super::admin::rotate_keys,
        super::admin::retire_key,
        super::admin::revoke_key,
        super::admin::audit,
        super::admin::metrics,
    ),
    components(schemas(GenericError, crate::service::clients::ClientView))
)]
pub struct AdminApi;

/// `GET /openapi.json` on the public listener.
pub async fn public() -> Response {
    Json(PublicApi::openapi()).into_response()
}

/// `GET /openapi.json` on the admin listener.
pub async fn admin() -> Response {
    Json(AdminApi::openapi()).into_response()
}
