//! The `DPoP` and `DPoP-Nonce` headers (RFC 9449 §4.1, §8).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use crate::domain::dpop::ProofError;

/// The request header that carries a proof.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The response header that carries a server nonce.
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The request's one `DPoP` header, if it has one.
///
/// # Errors
/// `invalid_dpop_proof` for two or more `DPoP` headers (RFC 9449 §4.3: exactly one), or one
/// that is not visible ASCII.
pub fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, ProofError> {
    let mut values = headers.get_all(DPOP).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ProofError::Invalid("send exactly one DPoP header".into()));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| ProofError::Invalid("the DPoP header is not a compact JWS".into()))
}

/// Adds `DPoP-Nonce: nonce` to a response.
#[must_use]
pub fn with_nonce(mut resp: Response, nonce: Option<String>) -> Response {
    if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert(DPOP_NONCE, v);
    }
    resp
}
