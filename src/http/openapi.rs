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
    #[schema(value_type = GrantTypeDoc)]
    grant_type: String,
    /// Client id (or HTTP Basic username).
    client_id: Option<String>,
    /// Client secret (or HTTP Basic password).
    client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, with `client_assertion`
    /// (`private_key_jwt`, RFC 7523; instead of a secret, never together with one).
    #[schema(value_type = Option<ClientAssertionTypeDoc>)]
    client_assertion_type: Option<String>,
    /// A JWT signed with the client's registered key (PS256, ES256, EdDSA, or RS256 outside
    /// FAPI 2.0): `iss` = `sub` = the client id, `aud` the issuer or the token endpoint URL,
    /// `exp` at most 300 s ahead, a `jti` used once. At most 8 KiB (longer is refused with
    /// `invalid_client`; no length is declared here, since a body over `max_body_bytes` is
    /// refused with `413` first).
    client_assertion: Option<String>,
    /// Space-delimited scopes (required for `client_credentials`; narrows on refresh): each
    /// 1 to 512 characters of RFC 6749 §3.3, at most 100.
    #[schema(pattern = r"^[!#-\[\]-~ ]*$")]
    scope: Option<String>,
    /// The refresh token (for `refresh_token`).
    refresh_token: Option<String>,
    /// `web` (default), `device`, `service`, or `w`, `d`, `s`.
    #[schema(value_type = Option<ClientTypeDoc>)]
    client_type: Option<String>,
    /// RFC 8707 resource indicator: the audience asked for.
    resource: Option<String>,
}

/// The fields of `POST /oauth2/revoke` and `POST /oauth2/introspect` (JSON or form).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenFieldRequestDoc {
    /// The token.
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token`.
    #[schema(value_type = Option<TokenTypeHintDoc>)]
    token_type_hint: Option<String>,
    /// Client id (or HTTP Basic username).
    client_id: Option<String>,
    /// Client secret (or HTTP Basic password).
    client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, with `client_assertion`.
    #[schema(value_type = Option<ClientAssertionTypeDoc>)]
    client_assertion_type: Option<String>,
    /// A `private_key_jwt` client assertion (see `POST /oauth2/token`); `aud` may also be
    /// this endpoint's URL.
    client_assertion: Option<String>,
}

/// `client_assertion_type`: the only one accepted.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ClientAssertionTypeDoc {
    /// RFC 7523 §2.2.
    #[schema(rename = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")]
    JwtBearer,
}

/// `grant_type` of a token request.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum GrantTypeDoc {
    /// A client's own token.
    client_credentials,
    /// A refresh token exchanged for a new pair.
    refresh_token,
}

/// `client_type` of a token request (Moov's one-letter aliases included).
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum ClientTypeDoc {
    /// A browser (the default).
    web,
    /// A device application.
    device,
    /// A back-end service.
    service,
    /// `web`.
    w,
    /// `device`.
    d,
    /// `service`.
    s,
}

/// `token_type_hint` of a revocation or introspection request.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum TokenTypeHintDoc {
    /// An access token.
    access_token,
    /// A refresh token.
    refresh_token,
}

/// `token_type` of an AuthToken: `DPoP` for a DPoP-bound token; otherwise the format in the
/// `seed` profile, `Bearer` in the others.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum TokenTypeDoc {
    /// Seed profile, opaque token.
    opaque,
    /// Seed profile, JWT.
    jwt,
    /// `moov` and `rfc6749` profiles.
    Bearer,
    /// A DPoP-bound token (RFC 9449), in every profile.
    DPoP,
}

/// Moov's GenericError and the RFC 6749 §5.2 error body.
#[derive(Serialize, ToSchema)]
pub struct GenericError {
    /// The error code (`invalid_request`, `invalid_client`, `invalid_grant`,
    /// `invalid_dpop_proof`, `use_dpop_nonce`, …).
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
    /// Malformed request, or (rfc6749 profile) a refused field; at the token endpoint also a
    /// missing or bad DPoP proof (`invalid_dpop_proof`), or one without a current nonce
    /// (`use_dpop_nonce`, with a fresh one in `DPoP-Nonce`).
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
        GrantTypeDoc,
        ClientAssertionTypeDoc,
        ClientTypeDoc,
        TokenTypeHintDoc,
        Jwks,
        Health
    )),
    modifiers(&Envelope, &SecuritySchemes)
)]
pub struct PublicApi;

/// The ways a client authenticates: HTTP Basic with its id and secret (on the OAuth endpoints
/// the id and secret may come in the body instead), and an access token at `/ping`: Bearer, or
/// DPoP with a proof in the `DPoP` header (RFC 9449 §7).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Client id and secret, each form-urlencoded (RFC 6749 §2.3.1); on the \
                         OAuth endpoints they may be sent as `client_id` and `client_secret` in \
                         the body instead, or a `private_key_jwt` assertion replaces them \
                         (`client_assertion_type` and `client_assertion` in the body).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token issued by this server. A DPoP-bound one is sent as \
                         `Authorization: DPoP <token>` instead, with a proof in the `DPoP` \
                         header (RFC 9449 §7).",
                    ))
                    .build(),
            ),
        );
    }
}

/// What `X-Moov-Version` must look like when it is sent: the pattern of
/// [`super::middleware::valid_moov_version`].
pub const MOOV_VERSION_PATTERN: &str = r"^(latest|v[0-9]{4}\.(0[1-9]|1[0-2])\.[0-9]{2})$";

/// Documents what the request envelope ([`super::middleware::envelope`]) does on every public
/// endpoint: it reads an optional `X-Moov-Version` header and answers `400` when it is malformed.
struct Envelope;

impl utoipa::Modify for Envelope {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};

        let header = ParameterBuilder::new()
            .name("X-Moov-Version")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "The Moov API version the client expects: `vYYYY.MM.BB` or `latest`.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(MOOV_VERSION_PATTERN)),
            ))
            .build();
        let bad_request = ResponseBuilder::new()
            .description("Malformed request (for example a malformed `X-Moov-Version`)")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("GenericError")))
                    .build(),
            )
            .build();
        for item in api.paths.paths.values_mut() {
            item.parameters
                .get_or_insert_with(Vec::new)
                .push(RefOr::T(header.clone()));
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                op.responses
                    .responses
                    .entry("400".to_owned())
                    .or_insert_with(|| RefOr::T(bad_request.clone()));
            }
        }
    }
}

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
    components(schemas(GenericError, crate::service::clients::ClientView)),
    // The request envelope (and its `X-Moov-Version` check) is shared by both listeners.
    modifiers(&Envelope)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::middleware::valid_moov_version;

    #[test]
    fn the_documented_moov_version_pattern_accepts_what_the_server_accepts() {
        let validator = jsonschema::validator_for(&serde_json::json!({
            "type": "string",
            "pattern": MOOV_VERSION_PATTERN,
        }))
        .unwrap();
        for v in [
            "latest",
            "v2025.01.00",
            "v0000.12.99",
            "v2025.00.00",
            "v2025.13.00",
            "v2025.1.00",
            "v2025.01.0",
            "v2025.01.00.0",
            "2025.01.00",
            "vlatest",
            "latest ",
            " v2025.01.00",
            "v2025-01-00",
            "v２０２５.01.00",
            "",
        ] {
            assert_eq!(
                validator.is_valid(&serde_json::json!(v)),
                valid_moov_version(v),
                "{v:?}"
            );
        }
    }
}
