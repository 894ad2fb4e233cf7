//! The one place where failures become HTTP responses.
//!
//! Rules (SPEC §3), by wire profile:
//!
//! | failure | `seed` / `moov` | `rfc6749` |
//! |---|---|---|
//! | client authentication | `401 {"error": "invalid_client", …}` | same |
//! | about one request field (an OAuth refusal naming it, or [`ServiceError::Invalid`]) | `422 {"<field>": "<reason>"}` | `400 {"error": "<code>", "error_description": …}` |
//! | about the request as a whole | `400 {"error": "<code>", "error_description": …}` | same |
//! | body too large | `413 {"error": "invalid_request", …}` | same |
//! | `Accept` allows no answer the endpoint has (introspection) | `406 {"error": "invalid_request", …}` | same |
//! | body not received within `body_timeout` | `408 {"error": "invalid_request", …}`, `Connection: close` | same |
//! | store unavailable | `503` + `Retry-After`, `{"error": "temporarily_unavailable"}` | same |
//! | lost a race with a concurrent change | `503` + `Retry-After`, as above | same |
//!
//! `WWW-Authenticate: Basic` accompanies a 401 when the client used Basic authentication or
//! sent no credentials at all. Internal errors are logged with their cause chain and shown to
//! the client only as `server_error`.
//!
//! The admin listener has one shape, [`AdminError`], mapped from the same [`ServiceError`]s
//! below: an OAuth refusal is `400` with its code, [`ServiceError::Invalid`] `400
//! invalid_request`, [`ServiceError::Conflict`] `409 conflict` with `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::client::Profile;
use crate::domain::error::{ErrorCode, OAuthError};
use crate::service::ServiceError;
use crate::store::StoreError;

/// `Retry-After` seconds sent with 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The challenge sent with 401 for client authentication.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"tessera\"";

#[derive(Debug)]
enum Kind {
    OAuth(OAuthError),
    TooLarge(usize),
    BodyTimeout(String),
    Unavailable,
    Conflict,
    Internal,
    NotFound(String),
    MethodNotAllowed,
    NotAcceptable(String),
    Limited(super::limits::Limited),
}

/// A failed request, ready to be rendered in a wire profile.
#[derive(Debug)]
pub struct ApiError {
    profile: Profile,
    kind: Kind,
    basic_challenge: bool,
}

impl ApiError {
    /// An OAuth refusal in `profile`.
    #[must_use]
    pub fn oauth(profile: Profile, error: OAuthError) -> Self {
        Self {
            profile,
            kind: Kind::OAuth(error),
            basic_challenge: false,
        }
    }

    /// A service failure in `profile`. Internal causes are logged here, once.
    #[must_use]
    pub fn service(profile: Profile, error: ServiceError) -> Self {
        let kind = match error {
            ServiceError::OAuth(e) => Kind::OAuth(e),
            // A refused value reads, on the OAuth wire, as a refused request field.
            ServiceError::Invalid { field, reason } => {
                Kind::OAuth(OAuthError::field(ErrorCode::InvalidRequest, field, reason))
            }
            ServiceError::NotFound(what) => Kind::NotFound(what),
            // The OAuth vocabulary has no conflict: a lost race is answered as "retry later".
            ServiceError::Conflict(cause) | ServiceError::Store(StoreError::Conflict(cause)) => {
                tracing::warn!(%cause, "conflict with a concurrent change");
                Kind::Conflict
            }
            ServiceError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "store unavailable");
                Kind::Unavailable
            }
            ServiceError::Store(e) => {
                tracing::error!(error = ?anyhow::Error::from(e), "store failure");
                Kind::Internal
            }
            ServiceError::Internal(e) => {
                tracing::error!(error = ?e, "internal failure");
                Kind::Internal
            }
        };
        Self {
            profile,
            kind,
            basic_challenge: false,
        }
    }

    /// The body exceeded `limit` bytes.
    #[must_use]
    pub fn too_large(profile: Profile, limit: usize) -> Self {
        Self {
            profile,
            kind: Kind::TooLarge(limit),
            basic_challenge: false,
        }
    }

    /// The body did not arrive in time ([`super::server::BodyTimeout`], whose text is the
    /// reason).
    #[must_use]
    pub fn body_timeout(profile: Profile, reason: String) -> Self {
        Self {
            profile,
            kind: Kind::BodyTimeout(reason),
            basic_challenge: false,
        }
    }

    /// No such route.
    #[must_use]
    pub fn not_found(profile: Profile) -> Self {
        Self {
            profile,
            kind: Kind::NotFound("no such endpoint".into()),
            basic_challenge: false,
        }
    }

    /// The route exists with other methods.
    #[must_use]
    pub fn method_not_allowed(profile: Profile) -> Self {
        Self {
            profile,
            kind: Kind::MethodNotAllowed,
            basic_challenge: false,
        }
    }

    /// No answer the request's `Accept` allows (`406`, the same in every profile);
    /// `description` says what the endpoint can answer.
    #[must_use]
    pub fn not_acceptable(profile: Profile, description: String) -> Self {
        Self {
            profile,
            kind: Kind::NotAcceptable(description),
            basic_challenge: false,
        }
    }

    /// A rate limit refusal (`429` with `Retry-After`, the same in every profile).
    #[must_use]
    pub fn limited(profile: Profile, limited: super::limits::Limited) -> Self {
        Self {
            profile,
            kind: Kind::Limited(limited),
            basic_challenge: false,
        }
    }

    /// Adds `WWW-Authenticate: Basic` to a 401.
    #[must_use]
    pub fn with_basic_challenge(mut self, yes: bool) -> Self {
        self.basic_challenge = yes;
        self
    }

    /// True if this is a client-authentication failure.
    #[must_use]
    pub fn is_invalid_client(&self) -> bool {
        matches!(&self.kind, Kind::OAuth(e) if e.code == ErrorCode::InvalidClient)
    }
}

fn generic(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

/// Adds `Connection: close` to a `408`: the rest of the body may still be on its way, so the
/// connection cannot carry another request.
fn request_timeout(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.kind {
            Kind::OAuth(e) if e.code == ErrorCode::InvalidClient => {
                let mut resp = generic(StatusCode::UNAUTHORIZED, e.code.as_str(), &e.description);
                if self.basic_challenge {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(BASIC_CHALLENGE),
                    );
                }
                resp
            }
            Kind::OAuth(e) => match (self.profile, e.field) {
                (Profile::Seed | Profile::Moov, Some(field)) => {
                    let mut body = serde_json::Map::new();
                    body.insert(field.to_owned(), e.description.into_owned().into());
                    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
                }
                _ => generic(StatusCode::BAD_REQUEST, e.code.as_str(), &e.description),
            },
            Kind::TooLarge(limit) => generic(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("the request body exceeds {limit} bytes"),
            ),
            Kind::BodyTimeout(reason) => request_timeout(generic(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                &reason,
            )),
            Kind::Unavailable => {
                let mut resp = generic(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the token store is unavailable; retry later",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                resp
            }
            Kind::Conflict => {
                let mut resp = generic(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "a concurrent change interfered with this request; retry",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                resp
            }
            Kind::Internal => generic(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "an internal error occurred; it has been logged with this request's id",
            ),
            Kind::NotFound(what) => generic(StatusCode::NOT_FOUND, "not_found", &what),
            Kind::Limited(limited) => limited.into_response(),
            Kind::MethodNotAllowed => generic(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "this endpoint does not accept this HTTP method",
            ),
            Kind::NotAcceptable(what) => {
                generic(StatusCode::NOT_ACCEPTABLE, "invalid_request", &what)
            }
        }
    }
}

/// An admin API failure: the admin listener's one error shape, `{"error", "error_description"}`
/// with 400, 401, 404, 409 (a lost race, retryable: sent with `Retry-After`), 503 (or 500 for
/// a bug). Mapped here, beside the public API's.
#[derive(Debug)]
pub struct AdminError {
    /// The status.
    pub status: StatusCode,
    /// The error code.
    pub code: &'static str,
    /// The reason.
    pub description: String,
}

impl AdminError {
    /// A `400 invalid_request` with a reason.
    #[must_use]
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            description: description.into(),
        }
    }
}

impl AdminError {
    /// A `401 unauthorized`: no admin token, or a wrong one (sent with the Bearer challenge).
    #[must_use]
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            description: "a valid admin token is required (Authorization: Bearer …)".into(),
        }
    }

    /// A `401 unauthorized` from `/metrics`: a `metrics_token` is configured and the request
    /// does not carry it.
    #[must_use]
    pub fn metrics_unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            description: "the metrics token is required (Authorization: Bearer …)".into(),
        }
    }

    /// A `404 not_found`: no such client, key or endpoint.
    #[must_use]
    pub fn not_found(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            description: description.into(),
        }
    }

    /// A `405`: the route exists with other methods.
    #[must_use]
    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "invalid_request",
            description: "this endpoint does not accept this HTTP method".into(),
        }
    }

    /// A `408`: the body did not arrive within `body_timeout` (the reason says so).
    #[must_use]
    pub fn body_timeout(reason: String) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "invalid_request",
            description: reason,
        }
    }

    /// An axum extractor's refusal (e.g. `413` past the body limit), with its status and text.
    #[must_use]
    pub fn rejected(status: StatusCode, text: String) -> Self {
        Self {
            status,
            code: "invalid_request",
            description: text,
        }
    }

    /// A `409 conflict`: a concurrent change won; nothing was changed, and trying again is
    /// safe (sent with `Retry-After`).
    #[must_use]
    pub fn conflict(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            description: description.into(),
        }
    }
}

impl From<ServiceError> for AdminError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::OAuth(e) => Self {
                status: StatusCode::BAD_REQUEST,
                code: e.code.as_str(),
                description: e.description.into_owned(),
            },
            ServiceError::Invalid { reason, .. } => Self::bad_request(reason),
            ServiceError::NotFound(what) => Self::not_found(what),
            ServiceError::Conflict(what) | ServiceError::Store(StoreError::Conflict(what)) => {
                Self::conflict(what)
            }
            ServiceError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "store unavailable");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "temporarily_unavailable",
                    description: "the store is unavailable; retry later".into(),
                }
            }
            other => {
                tracing::error!(error = ?anyhow::Error::from(other), "admin operation failed");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "server_error",
                    description: "an internal error occurred; it has been logged".into(),
                }
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({ "error": self.code, "error_description": self.description })),
        )
            .into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tessera-admin\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            StatusCode::REQUEST_TIMEOUT => resp = request_timeout(resp),
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(resp: Response) -> (StatusCode, Option<String>, serde_json::Value) {
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or_default();
        (status, retry, body)
    }

    fn refused_name() -> ServiceError {
        ServiceError::invalid("name", "name must be 1 to 200 characters")
    }

    #[tokio::test]
    async fn a_refused_value_is_a_field_error_in_the_moov_profiles() {
        let (status, _, body) =
            parts(ApiError::service(Profile::Moov, refused_name()).into_response()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, json!({"name": "name must be 1 to 200 characters"}));
    }

    #[tokio::test]
    async fn a_refused_value_is_400_invalid_request_in_rfc6749_and_on_the_admin_api() {
        let expected = json!({
            "error": "invalid_request",
            "error_description": "name must be 1 to 200 characters",
        });
        let (status, _, body) =
            parts(ApiError::service(Profile::Rfc6749, refused_name()).into_response()).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, expected.clone()));
        let (status, retry, body) = parts(AdminError::from(refused_name()).into_response()).await;
        assert_eq!(
            (status, retry, body),
            (StatusCode::BAD_REQUEST, None, expected)
        );
    }

    #[tokio::test]
    async fn a_conflict_is_a_retryable_409_on_the_admin_api_and_503_on_the_oauth_endpoints() {
        let conflict = || ServiceError::Conflict("the client kept changing".into());
        let (status, retry, body) = parts(AdminError::from(conflict()).into_response()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(
            body,
            json!({"error": "conflict", "error_description": "the client kept changing"})
        );
        let (status, retry, body) =
            parts(ApiError::service(Profile::Moov, conflict()).into_response()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"], "temporarily_unavailable");
    }
}
