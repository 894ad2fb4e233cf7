//! The audit trail's vocabulary: what happened, to whom, on whose request, from where.
//!
//! Every security-relevant event is recorded durably: token events in the same transaction
//! as the change they describe, operator actions and authentication failures right after.
//! An event never carries a secret or a token: only ids (client id, token id, family id,
//! key id) and short facts.

use serde::Serialize;

use super::clock::UnixTime;

/// Kinds of audit event (their `as_str` is what is stored and queried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A client was created.
    ClientCreated,
    /// A client's settings changed.
    ClientUpdated,
    /// A client was disabled.
    ClientDisabled,
    /// A client was enabled again.
    ClientEnabled,
    /// A client and its tokens were deleted.
    ClientDeleted,
    /// A client got a new secret.
    SecretRotated,
    /// Signing keys rotated.
    KeyRotated,
    /// A signing key was retired.
    KeyRetired,
    /// A signing key was revoked.
    KeyRevoked,
    /// The master key changed (the root key was re-wrapped).
    MasterKeyRotated,
    /// A `client_credentials` grant issued tokens.
    TokenIssued,
    /// A refresh token was exchanged.
    TokenRefreshed,
    /// An access token was revoked.
    TokenRevoked,
    /// A token family was revoked (refresh token revoked, or by an operator).
    FamilyRevoked,
    /// A used refresh token came back: its family was revoked.
    ReuseDetected,
    /// Client authentication failed.
    AuthFailed,
    /// Tokens were revoked in bulk by an operator.
    BulkRevoked,
    /// The admin token was replaced.
    AdminTokenRotated,
}

impl AuditKind {
    /// Every kind.
    pub const ALL: [Self; 18] = [
        Self::ClientCreated,
        Self::ClientUpdated,
        Self::ClientDisabled,
        Self::ClientEnabled,
        Self::ClientDeleted,
        Self::SecretRotated,
        Self::KeyRotated,
        Self::KeyRetired,
        Self::KeyRevoked,
        Self::MasterKeyRotated,
        Self::TokenIssued,
        Self::TokenRefreshed,
        Self::TokenRevoked,
        Self::FamilyRevoked,
        Self::ReuseDetected,
        Self::AuthFailed,
        Self::BulkRevoked,
        Self::AdminTokenRotated,
    ];

    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCreated => "client.created",
            Self::ClientUpdated => "client.updated",
            Self::ClientDisabled => "client.disabled",
            Self::ClientEnabled => "client.enabled",
            Self::ClientDeleted => "client.deleted",
            Self::SecretRotated => "client.secret_rotated",
            Self::KeyRotated => "key.rotated",
            Self::KeyRetired => "key.retired",
            Self::KeyRevoked => "key.revoked",
            Self::MasterKeyRotated => "master_key.rotated",
            Self::TokenIssued => "token.issued",
            Self::TokenRefreshed => "token.refreshed",
            Self::TokenRevoked => "token.revoked",
            Self::FamilyRevoked => "family.revoked",
            Self::ReuseDetected => "token.reuse_detected",
            Self::AuthFailed => "auth.failed",
            Self::BulkRevoked => "tokens.bulk_revoked",
            Self::AdminTokenRotated => "admin_token.rotated",
        }
    }
}

/// Who asked: the request id and source address of an HTTP request, or the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// The source address (`ip`), `cli`, or `admin@ip`.
    pub source: Option<String>,
}

impl Actor {
    /// The command line.
    #[must_use]
    pub fn cli() -> Self {
        Self {
            request_id: None,
            source: Some("cli".into()),
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Event id (UUID v7, time-ordered).
    pub id: String,
    /// When (Unix seconds).
    pub at: UnixTime,
    /// What (an [`AuditKind`] name).
    pub event: String,
    /// The client concerned, if any.
    pub client_id: Option<String>,
    /// The request that caused it, if any.
    pub request_id: Option<String>,
    /// Where it came from (IP address, `cli`, `admin@ip`).
    pub source: Option<String>,
    /// Short facts (ids, counts, reasons); never a secret or token.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// A new event.
    #[must_use]
    pub fn new(
        kind: AuditKind,
        at: UnixTime,
        actor: &Actor,
        client_id: Option<&str>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            event: kind.as_str().to_owned(),
            client_id: client_id.map(str::to_owned),
            request_id: actor.request_id.clone(),
            source: actor.source.clone(),
            detail,
        }
    }
}

/// A query over the audit trail (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this client's events.
    pub client_id: Option<String>,
    /// Only this kind.
    pub event: Option<String>,
    /// Only events at or after this time.
    pub since: Option<UnixTime>,
    /// Only events older than this event id (for paging backwards).
    pub before_id: Option<String>,
    /// At most this many (1–1000).
    pub limit: u32,
}
