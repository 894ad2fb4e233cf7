//! The admin API: clients, keys, bulk revocation, audit, metrics — on its own listener
//! (`admin_listen`, loopback by default), never on the public one, behind
//! `Authorization: Bearer <admin token>` (see [`crate::service::admin`]).
//!
//! JSON in, JSON out. Errors are `{"error": "<code>", "error_description": "…"}` with 400
//! (bad input), 401 (no or wrong credential), 404 (no such client or key), 408 (body not
//! received within `body_timeout`), 409 (conflict), 413 (body over 2 MiB) or 503 (store
//! unavailable). It calls the same service methods as the CLI.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::AdminError;
#[allow(unused_imports)]
use super::openapi::GenericError;
use crate::domain::audit::{Actor, AuditEvent, AuditQuery};
use crate::domain::client::{Profile, TokenFormat};
use crate::service::ServiceError;
use crate::service::clients::{ClientChanges, ClientSpec, ClientView};
use crate::service::signing::{KeyView, Rotation};

type AdminResult = Result<Response, AdminError>;

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
    /// The secret.
    pub client_secret: String,
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

/// Result of revoking a client's tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedFamilies {
    /// The client.
    pub client_id: String,
    /// Families revoked.
    pub revoked_families: u64,
}

/// Result of revoking by issue time.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedTokens {
    /// The cutoff (Unix seconds).
    pub issued_before: i64,
    /// Tokens revoked.
    pub revoked_tokens: u64,
}

/// A page of audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Events.
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// A request body, read whole; its failures in the admin error shape: `408` when it did not
/// arrive within `body_timeout`, `413` past axum's default limit (2 MiB), `400` otherwise.
pub struct AdminBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for AdminBody {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(
                |rejection| match super::server::body_timeout_in(&rejection) {
                    Some(timeout) => AdminError {
                        status: StatusCode::REQUEST_TIMEOUT,
                        code: "invalid_request",
                        description: timeout.to_string(),
                    },
                    None => AdminError {
                        status: rejection.status(),
                        code: "invalid_request",
                        description: rejection.body_text(),
                    },
                },
            )
    }
}

/// Parses a JSON body strictly (unknown fields refused).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, AdminError> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| AdminError::bad_request(format!("invalid JSON body: {e}")))
}

/// A query string parsed strictly (unknown parameters refused), its failures answered in the
/// admin error shape (`400 invalid_request`) rather than axum's plain-text rejection.
pub struct AdminQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AdminQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| Self(v))
            .map_err(|e| AdminError::bad_request(e.body_text()))
    }
}

/// A path parameter, its failures (e.g. percent-encoding that is not UTF-8) answered in the
/// admin error shape.
pub struct AdminPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AdminPath<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| AdminError::bad_request(e.body_text()))
    }
}

/// The page size asked for: 1 to 1000, 100 when absent.
fn page_limit(limit: Option<u32>) -> Result<u32, AdminError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(AdminError::bad_request("limit must be between 1 and 1000")),
    }
}

/// Requires the admin bearer token.
pub async fn require_admin(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let ok = match presented {
        Some(token) => match state.tessera.check_admin_token(&token).await {
            Ok(ok) => ok,
            Err(e) => return AdminError::from(e).into_response(),
        },
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        tracing::warn!("admin API: missing or wrong admin credential");
        AdminError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            description: "a valid admin token is required (Authorization: Bearer …)".into(),
        }
        .into_response()
    }
}

fn admin_actor(actor: Actor) -> Actor {
    Actor {
        request_id: actor.request_id,
        source: Some(format!("admin@{}", actor.source.as_deref().unwrap_or("?"))),
    }
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
    let next = (clients.len() == limit as usize)
        .then(|| clients.last().map(|c| c.id.clone()))
        .flatten();
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
    #[schema(schema_with = super::openapi::origins_schema)]
    origins: Vec<String>,
    /// The `aud` of its tokens: no whitespace or control characters.
    #[schema(max_length = 2048)]
    audience: Option<String>,
    /// RFC 8707 resources it may request as audience: absolute URIs without a fragment.
    #[serde(default)]
    #[schema(schema_with = super::openapi::resources_schema)]
    resources: Vec<String>,
    /// Introspection rights beyond its own tokens: `*`, or an audience value (no whitespace or
    /// control characters); `none` for none.
    #[schema(max_length = 2048)]
    resource_server: Option<String>,
}

fn parse_opt<T: std::str::FromStr<Err = String>>(
    v: Option<String>,
) -> Result<Option<T>, AdminError> {
    v.map(|s| s.parse::<T>().map_err(AdminError::bad_request))
        .transpose()
}

#[utoipa::path(post, path = "/admin/clients", tag = "clients", request_body = CreateClient, responses((status = 201, body = CreatedClient), (status = 409, description = "The new client id was taken at the same moment; nothing was created, retry (Retry-After)", body = GenericError), (status = 400, description = "A refused field (the reason names it: name, scopes, origins, audience, resources, resource_server, …), or a malformed body", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn create_client(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminBody(bytes): AdminBody,
) -> AdminResult {
    let b: CreateClient = body(&bytes)?;
    let spec = ClientSpec {
        name: b.name,
        scopes: b.scopes,
        format: parse_opt::<TokenFormat>(b.format)?,
        profile: parse_opt::<Profile>(b.profile)?,
        access_ttl: b.access_ttl,
        refresh_ttl: b.refresh_ttl,
        origins: b.origins,
        audience: b.audience,
        resources: b.resources,
        resource_server: b.resource_server,
    };
    let (client, secret) = state
        .tessera
        .create_client(spec, &admin_actor(actor))
        .await?;
    let mut v = serde_json::to_value(state.tessera.view(&client))
        .map_err(|e| AdminError::from(ServiceError::Internal(e.into())))?;
    if let Some(o) = v.as_object_mut() {
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
    #[schema(schema_with = super::openapi::origins_schema)]
    origins: Option<Vec<String>>,
    /// New audience; `null`: the server default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(max_length = 2048)]
    audience: Option<Option<String>>,
    /// New resources (replacing the current ones).
    #[schema(schema_with = super::openapi::resources_schema)]
    resources: Option<Vec<String>>,
    /// New introspection rights; `null` or `none`: its own tokens only.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(max_length = 2048)]
    resource_server: Option<Option<String>>,
    /// Disable or enable.
    disabled: Option<bool>,
}

#[utoipa::path(patch, path = "/admin/clients/{id}", tag = "clients", params(("id" = String, Path)), request_body = UpdateClient, responses((status = 200, body = ClientView), (status = 400, description = "A refused field (the reason names it: name, scopes, origins, audience, resources, resource_server, …), or a malformed body", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn update_client(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
    AdminBody(bytes): AdminBody,
) -> AdminResult {
    let b: UpdateClient = body(&bytes)?;
    let changes = ClientChanges {
        name: b.name,
        scopes: b.scopes,
        format: parse_opt::<TokenFormat>(b.format)?,
        profile: b.profile.map(parse_opt::<Profile>).transpose()?,
        access_ttl: b.access_ttl,
        refresh_ttl: b.refresh_ttl,
        origins: b.origins,
        audience: b.audience,
        resources: b.resources,
        resource_server: b.resource_server,
        disabled: b.disabled,
    };
    let c = state
        .tessera
        .update_client(&id, changes, &admin_actor(actor))
        .await?;
    Ok(Json(state.tessera.view(&c)).into_response())
}

async fn set_disabled(state: &AppState, actor: Actor, id: &str, disabled: bool) -> AdminResult {
    let changes = ClientChanges {
        disabled: Some(disabled),
        ..ClientChanges::default()
    };
    let c = state
        .tessera
        .update_client(id, changes, &admin_actor(actor))
        .await?;
    Ok(Json(state.tessera.view(&c)).into_response())
}

#[utoipa::path(post, path = "/admin/clients/{id}/disable", tag = "clients", params(("id" = String, Path)), responses((status = 200, body = ClientView), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn disable_client(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    set_disabled(&state, actor, &id, true).await
}

#[utoipa::path(post, path = "/admin/clients/{id}/enable", tag = "clients", params(("id" = String, Path)), responses((status = 200, body = ClientView), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 409, description = "The client kept changing while this change was applied; nothing was changed, retry (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn enable_client(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    set_disabled(&state, actor, &id, false).await
}

#[utoipa::path(delete, path = "/admin/clients/{id}", tag = "clients", params(("id" = String, Path)), responses((status = 204, description = "Deleted with all its tokens"), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn delete_client(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    state
        .tessera
        .delete_client(&id, &admin_actor(actor))
        .await?;
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
    fn keep_old_seconds(&self) -> u32 {
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
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
    AdminBody(bytes): AdminBody,
) -> AdminResult {
    let b: RotateSecret = body(&bytes)?;
    let (c, secret) = state
        .tessera
        .rotate_secret(&id, b.keep_old_seconds(), &admin_actor(actor))
        .await?;
    Ok(Json(NewSecret {
        previous_secret_expires_at: c.previous_secret.as_ref().map(|(_, t)| *t),
        client_id: c.id,
        client_secret: secret,
    })
    .into_response())
}

#[utoipa::path(post, path = "/admin/clients/{id}/revoke-tokens", tag = "revocation", params(("id" = String, Path)), responses((status = 200, body = RevokedFamilies), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_client_tokens(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    let n = state
        .tessera
        .revoke_client_tokens(&id, &admin_actor(actor))
        .await?;
    Ok(Json(RevokedFamilies {
        client_id: id,
        revoked_families: n,
    })
    .into_response())
}

#[utoipa::path(post, path = "/admin/families/{id}/revoke", tag = "revocation", params(("id" = String, Path)), responses((status = 204, description = "Revoked (idempotent)"), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_family(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(id): AdminPath<String>,
) -> AdminResult {
    state
        .tessera
        .revoke_family_by_id(&id, &admin_actor(actor))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuedBefore {
    before: i64,
}

#[utoipa::path(post, path = "/admin/tokens/revoke-issued-before", tag = "revocation", request_body = IssuedBefore, responses((status = 200, body = RevokedTokens), (status = 400, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_issued_before(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminBody(bytes): AdminBody,
) -> AdminResult {
    let b: IssuedBefore = body(&bytes)?;
    let n = state
        .tessera
        .revoke_issued_before(b.before, &admin_actor(actor))
        .await?;
    Ok(Json(RevokedTokens {
        issued_before: b.before,
        revoked_tokens: n,
    })
    .into_response())
}

#[utoipa::path(get, path = "/admin/keys", tag = "keys", responses((status = 200, body = Vec<KeyView>), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn list_keys(State(state): State<Arc<AppState>>) -> AdminResult {
    Ok(Json(state.tessera.list_keys().await?).into_response())
}

#[utoipa::path(post, path = "/admin/keys/rotate", tag = "keys", responses((status = 200, body = Rotation), (status = 409, description = "Another rotation, retirement or revocation happened at the same time; nothing was changed by this call, retry if still wanted (Retry-After)", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn rotate_keys(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
) -> AdminResult {
    Ok(Json(state.tessera.rotate_keys(&admin_actor(actor)).await?).into_response())
}

#[utoipa::path(post, path = "/admin/keys/{kid}/retire", tag = "keys", params(("kid" = String, Path)), responses((status = 204, description = "Retired"), (status = 409, description = "Another rotation, retirement or revocation happened at the same time; nothing was changed by this call, retry if still wanted (Retry-After)", body = GenericError), (status = 400, description = "The key is revoked, or the path parameter is not valid UTF-8", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn retire_key(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(kid): AdminPath<String>,
) -> AdminResult {
    state.tessera.retire_key(&kid, &admin_actor(actor)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/keys/{kid}/revoke", tag = "keys", params(("kid" = String, Path)), responses((status = 204, description = "Revoked"), (status = 409, description = "Another rotation, retirement or revocation happened at the same time; nothing was changed by this call, retry if still wanted (Retry-After)", body = GenericError), (status = 400, description = "The path parameter is not valid UTF-8 once percent-decoded", body = GenericError), (status = 404, body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Extension(actor): Extension<Actor>,
    AdminPath(kid): AdminPath<String>,
) -> AdminResult {
    state.tessera.revoke_key(&kid, &admin_actor(actor)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only events about this client.
    client_id: Option<String>,
    /// Only this kind of event (e.g. `client.created`).
    event: Option<String>,
    /// Only events at or after this Unix time.
    since: Option<i64>,
    /// The `next` of the previous page: events older than this one.
    before: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/admin/audit", tag = "audit", params(AuditParams), responses((status = 200, body = AuditPage), (status = 400, description = "Bad query string: an unknown parameter, a value of the wrong type, or limit outside 1 to 1000", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    AdminQuery(p): AdminQuery<AuditParams>,
) -> AdminResult {
    let limit = page_limit(p.limit)?;
    let events = state
        .tessera
        .audit_events(&AuditQuery {
            client_id: p.client_id,
            event: p.event,
            since: p.since,
            before_id: p.before,
            limit,
        })
        .await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(AuditPage { events, next }).into_response())
}

#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    super::metrics::render(&state.tessera)
}

/// The admin router (authenticated), plus unauthenticated health endpoints.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route(
            "/admin/clients/{id}",
            get(show_client).patch(update_client).delete(delete_client),
        )
        .route("/admin/clients/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/clients/{id}/disable", post(disable_client))
        .route("/admin/clients/{id}/enable", post(enable_client))
        .route(
            "/admin/clients/{id}/revoke-tokens",
            post(revoke_client_tokens),
        )
        .route("/admin/families/{id}/revoke", post(revoke_family))
        .route(
            "/admin/tokens/revoke-issued-before",
            post(revoke_issued_before),
        )
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/keys/{kid}/retire", post(retire_key))
        .route("/admin/keys/{kid}/revoke", post(revoke_key))
        .route("/admin/audit", get(audit))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .merge(protected)
        .route("/openapi.json", get(super::openapi::admin))
        .route("/healthz", get(super::wellknown::healthz))
        .route("/readyz", get(super::wellknown::readyz))
        .method_not_allowed_fallback(|| async {
            AdminError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "invalid_request",
                description: "this endpoint does not accept this HTTP method".into(),
            }
        })
        .fallback(|| async {
            AdminError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                description: "no such endpoint".into(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::middleware::envelope,
        ))
        .with_state(state)
}

/// The admin request bodies and query strings read exactly as the handlers read them, without
/// a server: the entry points of the fuzz targets in `fuzz/` (see docs/fuzzing.md).
#[doc(hidden)]
pub mod fuzzing {
    use axum::http::Uri;

    use super::{
        AdminError, AuditParams, Bytes, ClientChanges, ClientSpec, CreateClient, IssuedBefore,
        Page, Profile, Query, RotateSecret, TokenFormat, UpdateClient, body, parse_opt,
    };

    /// A `POST /admin/clients` body, as [`super::create_client`] reads it.
    ///
    /// # Errors
    /// The 400 the handler answers.
    pub fn create_client(bytes: &[u8]) -> Result<ClientSpec, AdminError> {
        let b: CreateClient = body(&Bytes::copy_from_slice(bytes))?;
        Ok(ClientSpec {
            name: b.name,
            scopes: b.scopes,
            format: parse_opt::<TokenFormat>(b.format)?,
            profile: parse_opt::<Profile>(b.profile)?,
            access_ttl: b.access_ttl,
            refresh_ttl: b.refresh_ttl,
            origins: b.origins,
            audience: b.audience,
            resources: b.resources,
            resource_server: b.resource_server,
        })
    }

    /// A `PATCH /admin/clients/{id}` body, as [`super::update_client`] reads it.
    ///
    /// # Errors
    /// The 400 the handler answers.
    pub fn update_client(bytes: &[u8]) -> Result<ClientChanges, AdminError> {
        let b: UpdateClient = body(&Bytes::copy_from_slice(bytes))?;
        Ok(ClientChanges {
            name: b.name,
            scopes: b.scopes,
            format: parse_opt::<TokenFormat>(b.format)?,
            profile: b.profile.map(parse_opt::<Profile>).transpose()?,
            access_ttl: b.access_ttl,
            refresh_ttl: b.refresh_ttl,
            origins: b.origins,
            audience: b.audience,
            resources: b.resources,
            resource_server: b.resource_server,
            disabled: b.disabled,
        })
    }

    /// A `POST /admin/clients/{id}/rotate-secret` body: `keep_old`.
    ///
    /// # Errors
    /// The 400 the handler answers.
    pub fn rotate_secret(bytes: &[u8]) -> Result<u32, AdminError> {
        let b: RotateSecret = body(&Bytes::copy_from_slice(bytes))?;
        Ok(b.keep_old_seconds())
    }

    /// A `POST /admin/tokens/revoke-issued-before` body: `before`.
    ///
    /// # Errors
    /// The 400 the handler answers.
    pub fn revoke_issued_before(bytes: &[u8]) -> Result<i64, AdminError> {
        let b: IssuedBefore = body(&Bytes::copy_from_slice(bytes))?;
        Ok(b.before)
    }

    /// The query strings of `GET /admin/clients` and `GET /admin/audit`; true if each parses.
    #[must_use]
    pub fn queries(uri: &Uri) -> (bool, bool) {
        (
            Query::<Page>::try_from_uri(uri).is_ok(),
            Query::<AuditParams>::try_from_uri(uri).is_ok(),
        )
    }
}
