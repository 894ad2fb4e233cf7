//! Reading admin requests: bodies, query strings and path parameters, their failures answered
//! in the admin error shape rather than axum's plain-text rejections; and paging.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::domain::audit::Actor;
use crate::http::error::AdminError;
use crate::service::ServiceError;

/// Who made an admin call, as audited: the request's actor with its source marked `admin@`.
pub struct AdminActor(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for AdminActor {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let actor = parts.extensions.get::<Actor>().ok_or_else(|| {
            AdminError::from(ServiceError::Internal(anyhow::anyhow!(
                "no request envelope (Actor) set"
            )))
        })?;
        Ok(Self(Actor {
            request_id: actor.request_id.clone(),
            source: Some(format!("admin@{}", actor.source.as_deref().unwrap_or("?"))),
        }))
    }
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
                |rejection| match crate::http::server::body_timeout_in(&rejection) {
                    Some(timeout) => AdminError::body_timeout(timeout.to_string()),
                    None => AdminError::rejected(rejection.status(), rejection.body_text()),
                },
            )
    }
}

/// A JSON body parsed strictly (unknown fields refused; an empty body counts as `{}`),
/// whatever the `Content-Type`; its failures in the admin error shape (see [`AdminBody`]).
pub struct AdminJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AdminJson<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let AdminBody(bytes) = AdminBody::from_request(req, state).await?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses an admin JSON body as [`AdminJson`] does.
///
/// # Errors
/// `400 invalid_request` naming what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A value of the wrong type names its field first, as every other refusal does; a
        // body that is not JSON, or an unknown field, is about the body as a whole.
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." || field.is_empty() || inner.is_syntax() || inner.is_eof() {
            AdminError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            AdminError::bad_request(format!("{field} is not valid: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| AdminError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(parsed)
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
pub fn page_limit(limit: Option<u32>) -> Result<u32, AdminError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(AdminError::bad_request("limit must be between 1 and 1000")),
    }
}

/// The cursor of the next page: the last item's id when the page is full, `None` on the last
/// page.
pub fn next_cursor<T>(items: &[T], limit: u32, id: impl Fn(&T) -> &str) -> Option<String> {
    (items.len() == limit as usize)
        .then(|| items.last().map(|i| id(i).to_owned()))
        .flatten()
}
