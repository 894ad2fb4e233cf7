//! The rules of the two grants, as pure functions over stored facts.
//!
//! `client_credentials` asks: may this client have these scopes? `refresh_token` asks more: is
//! this refresh token still usable by this client, was it already used (reuse means theft and
//! revokes the whole family, RFC 9700 §4.14.2), and which scopes may the new token carry? The
//! service layer reads the facts from the store, asks these functions, and writes the outcome.
//!
//! Scope on refresh follows RFC 6749 §6: the refresh token keeps the family's original grant;
//! an optional `scope` narrows the new access token to a subset of it; the result is always
//! intersected with what the client is allowed *now*, so removing a scope from a client takes
//! effect at its next refresh.

use super::client::{Client, ClientType};
use super::clock::UnixTime;
use super::error::OAuthError;
use super::scope::{Registry, ScopeSet};

/// What the store knows about one refresh token and its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// The family (every token descended from one `client_credentials` grant).
    pub family_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The family's original grant.
    pub scope: String,
    /// The `client_type` of the original request; refreshed tokens keep it.
    pub client_type: ClientType,
    /// Issue time of this refresh token.
    pub issued_at: UnixTime,
    /// Expiry of this refresh token.
    pub expires_at: UnixTime,
    /// When it was exchanged, if it was.
    pub consumed_at: Option<UnixTime>,
    /// True if the token or its family was revoked.
    pub revoked: bool,
    /// True if the family was granted with a DPoP proof: a refresh needs one too.
    pub dpop_bound: bool,
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Exchange it for a new pair.
    Rotate,
    /// It was already used outside the grace window: revoke the family, refuse the request.
    Reused,
}

/// Judges a refresh token presented by `client_id` at `now`.
///
/// # Errors
/// `invalid_grant` (about `refresh_token`) for someone else's, revoked or expired tokens.
pub fn judge_refresh(
    record: &RefreshRecord,
    client_id: &str,
    now: UnixTime,
    grace_seconds: u32,
) -> Result<RefreshVerdict, OAuthError> {
    if record.client_id != client_id {
        // Not revoked: a client that presents another client's token must not be able to
        // destroy that client's family.
        return Err(OAuthError::invalid_grant(
            "refresh token was not issued to this client",
        ));
    }
    if record.revoked {
        return Err(OAuthError::invalid_grant("refresh token has been revoked"));
    }
    if now >= record.expires_at {
        return Err(OAuthError::invalid_grant("refresh token has expired"));
    }
    match record.consumed_at {
        None => Ok(RefreshVerdict::Rotate),
        Some(at) if grace_seconds > 0 && now - at <= i64::from(grace_seconds) => {
            Ok(RefreshVerdict::Rotate)
        }
        Some(_) => Ok(RefreshVerdict::Reused),
    }
}

/// The error answered when a reused refresh token revoked its family.
#[must_use]
pub fn reuse_error() -> OAuthError {
    OAuthError::invalid_grant(
        "refresh token was already used; every token of its family has been revoked",
    )
}

/// The scope of a refreshed token: `requested` (if any) narrowed from the family's `granted`
/// scope, intersected with what `client` may have now.
///
/// # Errors
/// `invalid_scope` if a requested scope was not originally granted or is no longer allowed, or
/// if nothing of the original grant is still allowed.
pub fn refresh_scope(
    requested: Option<&str>,
    granted: &str,
    client: &Client,
    registry: &Registry,
) -> Result<ScopeSet, OAuthError> {
    let granted = ScopeSet::parse(granted)?;
    let still_allowed =
        |s: &super::scope::Scope| registry.knows(s) && client.scopes.iter().any(|p| p.matches(s));
    match requested {
        Some(req) => {
            let req = ScopeSet::parse(req)?;
            if req.is_empty() {
                return Err(OAuthError::invalid_scope("scope must not be empty"));
            }
            for s in req.iter() {
                if !granted.contains(s.as_str()) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {s} was not part of the original grant"
                    )));
                }
                if !still_allowed(s) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {s} is no longer allowed for this client"
                    )));
                }
            }
            Ok(req)
        }
        None => {
            let kept = granted.filter(still_allowed);
            if kept.is_empty() {
                Err(OAuthError::invalid_scope(
                    "none of the originally granted scopes is still allowed for this client",
                ))
            } else {
                Ok(kept)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scope::parse_patterns;

    fn record() -> RefreshRecord {
        RefreshRecord {
            family_id: "f".into(),
            client_id: "c".into(),
            scope: "/accounts.read /accounts.write".into(),
            client_type: ClientType::Service,
            issued_at: 0,
            expires_at: 1000,
            consumed_at: None,
            revoked: false,
            dpop_bound: false,
        }
    }

    fn client(scopes: &str) -> Client {
        Client {
            scopes: parse_patterns(scopes, &Registry::moov()).unwrap_or_default(),
            ..Client::fixture()
        }
    }

    #[test]
    fn unused_token_rotates() {
        assert_eq!(
            judge_refresh(&record(), "c", 10, 0),
            Ok(RefreshVerdict::Rotate)
        );
    }

    #[test]
    fn reused_token_is_theft_outside_the_grace_window() {
        let mut r = record();
        r.consumed_at = Some(100);
        assert_eq!(judge_refresh(&r, "c", 100, 0), Ok(RefreshVerdict::Reused));
        assert_eq!(judge_refresh(&r, "c", 105, 5), Ok(RefreshVerdict::Rotate));
        assert_eq!(judge_refresh(&r, "c", 106, 5), Ok(RefreshVerdict::Reused));
    }

    #[test]
    fn foreign_revoked_and_expired_tokens_are_invalid_grants() {
        assert!(judge_refresh(&record(), "other", 10, 0).is_err());
        let mut r = record();
        r.revoked = true;
        assert!(judge_refresh(&r, "c", 10, 0).is_err());
        assert!(judge_refresh(&record(), "c", 1000, 0).is_err());
    }

    #[test]
    fn refresh_scope_narrows_but_never_widens() -> Result<(), OAuthError> {
        let reg = Registry::moov();
        let c = client("/accounts.read /accounts.write /ping.read");
        let r = record();
        assert_eq!(
            refresh_scope(None, &r.scope, &c, &reg)?.to_string(),
            r.scope
        );
        assert_eq!(
            refresh_scope(Some("/accounts.read"), &r.scope, &c, &reg)?.to_string(),
            "/accounts.read"
        );
        assert!(refresh_scope(Some("/ping.read"), &r.scope, &c, &reg).is_err());
        assert!(refresh_scope(Some(""), &r.scope, &c, &reg).is_err());
        Ok(())
    }

    #[test]
    fn refresh_scope_follows_the_clients_current_allowance() -> Result<(), OAuthError> {
        let reg = Registry::moov();
        let r = record();
        let c = client("/accounts.read");
        assert_eq!(
            refresh_scope(None, &r.scope, &c, &reg)?.to_string(),
            "/accounts.read"
        );
        assert!(refresh_scope(Some("/accounts.write"), &r.scope, &c, &reg).is_err());
        assert!(refresh_scope(None, &r.scope, &client("/ping.read"), &reg).is_err());
        Ok(())
    }
}
