//! `/admin/clients`: list, create, show, change, disable and enable, delete, rotate a secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AdminResult;
use super::extract::{AdminActor, AdminJson, AdminPath, AdminQuery, next_cursor, page_limit};
use crate::domain::audit::Actor;
use crate::domain::client::{Profile, TokenFormat};
use crate::http::AppState;
use crate::http::error::AdminError;
#[allow(unused_imports)]
use crate::http::openapi::GenericError;
use crate::service::ServiceError;
use crate::service::clients::{ClientChanges, ClientSpec, ClientView};

/// A page of clients.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientPage {
    /// Clients, by id.
    pub clients: Vec<ClientView>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// A new client with its secret (shown only in this response).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedClient {
    /// The client.
    #[serde(flatten)]
    pub client: ClientView,
    /// The secret; absent when `auth_methods` has no secret method (`client_secret_basic`,
    /// `client_secret_post`): such a client has no usable secret until one is rotated in.
    pub client_secret: Option<String>,
}

/// A new secret (shown only in this response).
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewSecret {
    /// The client.
    pub client_id: String,
    /// The new secret.
    pub client_secret: String,
    /// When the previous secret stops working (`null`: it already has).
    pub previous_secret_expires_at: Option<i64>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// The `next` of the previous page: clients with ids after this one.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/admin/clients", tag = "clients", params(Page), responses((status = 200, body = ClientPage), (status = 400, description = "Bad query string: an unknown parameter, a value of the wrong type, or limit outside 1 to 1000", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn list_clients(
    State(state): State<Arc<AppState>>,
    AdminQuery(page): AdminQuery<Page>,
) -> AdminResult {
    let limit = page_limit(page.limit)?;
    let clients = state
        .tessera
        .list_clients(page.after.as_deref(), limit)
        .await?;
    let next = next_cursor(&clients, limit, |c| &c.id);
    let clients = clients.iter().map(|c| state.tessera.view(c)).collect();
    Ok(Json(ClientPage { clients, next }).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// A human name: 1 to 200 characters once surrounding spaces are trimmed, without control
    /// characters, bidirectional overrides or invisible format characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// Allowed scope patterns, space-separated; at least one.
    scopes: String,
    /// `opaque` or `jwt` (default: the server's `default_format`).
    format: Option<String>,
    /// `seed`, `moov` or `rfc6749` (default: follow the server's `default_profile`).
    profile: Option<String>,
    /// Access token lifetime, seconds.
    #[schema(minimum = 1, maximum = 31_536_000)]
    access_ttl: Option<u32>,
    /// Refresh token lifetime, seconds.
    #[schema(minimum = 1, maximum = 31_536_000)]
    refresh_ttl: Option<u32>,
    /// Allowed browser origins for web tokens, each a web origin `http(s)://host[:port]` (no
    /// path, query, fragment or user info; port 1 to 65535), stored normalised: lower-cased,
    /// without a default port or trailing slash, an internationalised host in `xn--` form.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::origins_schema)]
    origins: Vec<String>,
    /// The `aud` of its tokens: no whitespace or control characters.
    #[schema(max_length = 2048)]
    audience: Option<String>,
    /// RFC 8707 resources it may request as audience: absolute URIs without a fragment.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::resources_schema)]
    resources: Vec<String>,
    /// Introspection rights beyond its own tokens: `*`, or an audience value (no whitespace or
    /// control characters); `none` for none.
    #[schema(max_length = 2048)]
    resource_server: Option<String>,
    /// Token-endpoint auth methods it may use: `client_secret_basic`, `client_secret_post`,
    /// `private_key_jwt` (default: the two secret methods).
    #[schema(min_items = 1)]
    auth_methods: Option<Vec<String>>,
    /// Its public keys, a JWK Set (`{"keys": [...]}`) of public signing keys (OKP Ed25519, EC
    /// P-256, RSA 2048 to 8192 bits; no private members); for `private_key_jwt`.
    #[schema(value_type = Option<Object>)]
    jwks: Option<serde_json::Value>,
    /// Where its JWK Set is published instead (`https`); not together with `jwks`.
    #[schema(max_length = 2048)]
    jwks_uri: Option<String>,
    /// Its access tokens must be DPoP-bound (RFC 9449).
    #[serde(default)]
    require_dpop: bool,
    /// FAPI 2.0 rules: only `private_key_jwt`, DPoP required, no RS256.
    #[serde(default)]
    fapi2: bool,
}

impl CreateClient {
    /// The new client's settings; `format` and `profile` parsed, the rest checked by the
    /// service.
    pub(super) fn spec(self) -> Result<ClientSpec, AdminError> {
        Ok(ClientSpec {
            name: self.name,
            scopes: self.scopes,
            format: parse_opt::<TokenFormat>(self.format)?,
            profile: parse_opt::<Profile>(self.profile)?,
            access_ttl: self.access_ttl,
            refresh_ttl: self.refresh_ttl,
            origins: self.origins,
            audience: self.audience,
            resources: self.resources,
            resource_server: self.resource_server,
            auth_methods: self.auth_methods,
            jwks: self.jwks,
            jwks_uri: self.jwks_uri,
            require_dpop: self.require_dpop,
            fapi2: self.fapi2,
        })
    }
}

fn parse_opt<T: std::str::FromStr<Err = String>>(
    v: Option<String>,
) -> Result<Option<T>, AdminError> {
    v.map(|s| s.parse::<T>().map_err(AdminError::bad_request))
        .transpose()
}

#[utoipa::path(post, path = "/admin/clients", tag = "clients", request_body = CreateClient, responses((status = 201, body = CreatedClient), (status = 409, description = "The new client id was taken at the same moment; nothing was created, retry (Retry-After)", body = GenericError), (status = 400, description = "A refused field (the reason names it: name, scopes, origins, audience, resources, resource_server, auth_methods, jwks, jwks_uri, …), or a malformed body", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn create_client(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminJson(b): AdminJson<CreateClient>,
) -> AdminResult {
    let (client, secret) = state.tessera.create_client(b.spec()?, &actor).await?;
    let mut v = serde_json::to_value(state.tessera.view(&client))
        .map_err(|e| AdminError::from(ServiceError::Internal(e.into())))?;
    if let (Some(o), Some(secret)) = (v.as_object_mut(), secret) {
        o.insert("client_secret".into(), secret.into());
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(get, path = "/admin/clients/{id}", tag = "clients", params(("id" = String, Path)), responses((status = 200, body = ClientView), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn show_client(
    State(state): State<Arc<AppState>>,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    let c = state.tessera.get_client(&id).await?;
    Ok(Json(state.tessera.view(&c)).into_response())
}

/// A field that can be set, or reset to the server default with `null`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    /// New name; the rules of `POST /admin/clients`.
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// New allowed scope patterns (replacing the current ones).
    scopes: Option<String>,
    /// New format.
    format: Option<String>,
    /// New profile; `null`: follow the server default.
    #[serde(default, deserialize_with = "nullable")]
    profile: Option<Option<String>>,
    /// New access TTL; `null`: the server default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    access_ttl: Option<Option<u32>>,
    /// New refresh TTL; `null`: the server default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    refresh_ttl: Option<Option<u32>>,
    /// New allowed origins (replacing the current ones); the rules of `POST /admin/clients`.
    #[schema(schema_with = crate::http::openapi::origins_schema)]
    origins: Option<Vec<String>>,
    /// New audience; `null`: the server default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(max_length = 2048)]
    audience: Option<Option<String>>,
    /// New resources (replacing the current ones).
    #[schema(schema_with = crate::http::openapi::resources_schema)]
    resources: Option<Vec<String>>,
    /// New introspection rights; `null` or `none`: its own tokens only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(max_length = 2048)]
    resource_server: Option<Option<String>>,
    /// Disable or enable.
    disabled: Option<bool>,
    /// New auth methods (replacing the current ones); the rules of `POST /admin/clients`.
    #[schema(min_items = 1)]
    auth_methods: Option<Vec<String>>,
    /// New registered keys (a JWK Set); `null`: none.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    jwks: Option<Option<serde_json::Value>>,
    /// New `jwks_uri`; `null`: none.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(max_length = 2048)]
    jwks_uri: Option<Option<String>>,
    /// Require DPoP or not.
    require_dpop: Option<bool>,
    /// FAPI 2.0 rules or not.
    fapi2: Option<bool>,
}

impl UpdateClient {
    /// The changes; `format` and `profile` parsed, the rest checked by the service.
    pub(super) fn changes(self) -> Result<ClientChanges, AdminError> {
        Ok(ClientChanges {
            name: self.name,
            scopes: self.scopes,
            format: parse_opt::<TokenFormat>(self.format)?,
            profile: self.profile.map(parse_opt::<Profile>).transpose()?,
            access_ttl: self.access_ttl,
            refresh_ttl: self.refresh_ttl,
            origins: self.origins,
            audience: self.audience,
            resources: self.resources,
            resource_server: self.resource_server,
            disabled: self.disabled,
            auth_methods: self.auth_methods,
            jwks: self.jwks,
            jwks_uri: self.jwks_uri,
            require_dpop: self.require_dpop,
            fapi2: self.fapi2,
        })
    }
}

#[utoipa::path(patch, path = "/admin/clients/{id}", tag = "clients", params(("id" = String, Path)), request_body = UpdateClient, responses((status = 200, body = ClientView), (status = 400, description = "A refused field (the reason names it: name, scopes, origins, audience, resources, resource_server, auth_methods, jwks, jwks_uri, …), or a malformed body", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn update_client(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
    AdminJson(b): AdminJson<UpdateClient>,
) -> AdminResult {
    let c = state
        .tessera
        .update_client(&id, b.changes()?, &actor)
        .await?;
    Ok(Json(state.tessera.view(&c)).into_response())
}

/// Disables or enables a client (the only change the two endpoints make).
async fn set_disabled(state: &AppState, actor: Actor, id: &str, disabled: bool) -> AdminResult {
    let changes = ClientChanges {
        disabled: Some(disabled),
        ..ClientChanges::default()
    };
    let c = state.tessera.update_client(id, changes, &actor).await?;
    Ok(Json(state.tessera.view(&c)).into_response())
}

#[utoipa::path(post, path = "/admin/clients/{id}/disable", tag = "clients", params(("id" = String, Path)), responses((status = 200, body = ClientView), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn disable_client(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    set_disabled(&state, actor, &id, true).await
}

#[utoipa::path(post, path = "/admin/clients/{id}/enable", tag = "clients", params(("id" = String, Path)), responses((status = 200, body = ClientView), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn enable_client(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    set_disabled(&state, actor, &id, false).await
}

#[utoipa::path(delete, path = "/admin/clients/{id}", tag = "clients", params(("id" = String, Path)), responses((status = 204, description = "Deleted with all its tokens"), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn delete_client(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    state.tessera.delete_client(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the old secret keeps working: 0 (it stops at once) to 2,592,000 (30 days);
    /// default 86,400.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 2_592_000)]
    keep_old: Option<serde_json::Number>,
}

impl RotateSecret {
    /// `keep_old` in seconds, 86,400 when absent. Any other number (negative, fractional,
    /// huge) becomes one out of range too: the service refuses it, naming the bound.
    pub(super) fn keep_old_seconds(&self) -> u32 {
        self.keep_old.as_ref().map_or(86_400, |n| {
            n.as_u64()
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(u32::MAX)
        })
    }
}

#[utoipa::path(post, path = "/admin/clients/{id}/rotate-secret", tag = "clients", params(("id" = String, Path)), request_body = RotateSecret, responses((status = 200, body = NewSecret), (status = 400, description = "keep_old outside 0 to 2592000 (30 days), or a malformed body", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    AdminActor(actor): AdminActor,
    AdminPath(id): AdminPath<String>,
    AdminJson(b): AdminJson<RotateSecret>,
) -> AdminResult {
    let (c, secret) = state
        .tessera
        .rotate_secret(&id, b.keep_old_seconds(), &actor)
        .await?;
    Ok(Json(NewSecret {
        previous_secret_expires_at: c.previous_secret.as_ref().map(|(_, t)| *t),
        client_id: c.id,
        client_secret: secret,
    })
    .into_response())
}
