//! The OAuth error vocabulary.
//!
//! [`OAuthError`] is what every domain decision returns when it says "no". It carries the RFC
//! error code (whose `Display` is the wire value), a human-readable reason, and, where the
//! failure is about one request field, that field's name: the Moov wire profiles answer such
//! failures with `422 {"<field>": "<reason>"}`, the RFC 6749 profile with `400 {"error": …}`.
//! Turning an `OAuthError` into a status and a body happens in exactly one place,
//! `http::error`.

use std::borrow::Cow;
use std::fmt;

/// OAuth 2.0 error codes Tessera uses, each with the RFC section that defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// RFC 6749 §5.2: missing or repeated parameter, malformed body, unsupported content.
    InvalidRequest,
    /// RFC 6749 §5.2: client authentication failed (answered with 401).
    InvalidClient,
    /// RFC 6749 §5.2: the refresh token is invalid, expired, revoked, reused or someone else's.
    InvalidGrant,
    /// RFC 6749 §5.2: the client may not do this (e.g. origin not allowed, other client's token).
    UnauthorizedClient,
    /// RFC 6749 §5.2: the grant type is not supported.
    UnsupportedGrantType,
    /// RFC 6749 §5.2: a scope is unknown, malformed, or not allowed for the client.
    InvalidScope,
    /// RFC 7009 §2.2.1: the `token_type_hint` names a type the server does not know.
    UnsupportedTokenType,
    /// RFC 8707 §2: the requested `resource` is not allowed for the client.
    InvalidTarget,
    /// RFC 9449 §5: the `DPoP` proof is missing where one is required, or invalid.
    InvalidDpopProof,
    /// RFC 9449 §8: the `DPoP` proof lacks a current server nonce; the answer carries one in
    /// `DPoP-Nonce`.
    UseDpopNonce,
}

impl ErrorCode {
    /// The wire value of the code.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: an RFC error code, a reason, and the request field it is about (if any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    /// The RFC error code.
    pub code: ErrorCode,
    /// A human-readable reason, safe to show to the client (never a secret).
    pub description: Cow<'static, str>,
    /// The request field the refusal is about, for the Moov profiles' 422 bodies.
    pub field: Option<&'static str>,
}

impl OAuthError {
    /// A refusal that is about the request as a whole.
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            field: None,
        }
    }

    /// A refusal about one field of the request.
    pub fn field(
        code: ErrorCode,
        field: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            code,
            description: description.into(),
            field: Some(field),
        }
    }

    /// `invalid_request` about the request as a whole.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_request` because a required field is missing.
    #[must_use]
    pub fn missing(field: &'static str) -> Self {
        Self::field(
            ErrorCode::InvalidRequest,
            field,
            format!("{field} is required"),
        )
    }

    /// `invalid_client`: client authentication failed. The reason given to the client is
    /// deliberately the same for an unknown client, a wrong secret and a disabled client.
    #[must_use]
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, "client authentication failed")
    }

    /// `invalid_grant` about the `refresh_token` field.
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::field(ErrorCode::InvalidGrant, "refresh_token", description)
    }

    /// `invalid_scope` about the `scope` field.
    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::field(ErrorCode::InvalidScope, "scope", description)
    }
}
