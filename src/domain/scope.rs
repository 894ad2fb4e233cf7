//! Scopes, scope patterns and the scope registry.
//!
//! Scopes follow Moov's naming: a path-like string ending in `.read` or `.write`, such as
//! `/accounts.read` or `/accounts/{accountID}/transfers.write`. Three kinds of value appear:
//!
//! - a **scope** ([`Scope`]) is concrete: what a client asks for and what a token carries, e.g.
//!   `/accounts/0b9f7a3c-…/transfers.write`;
//! - a **template** in the [`Registry`] says which scopes exist: `{accountID}` marks the segment
//!   that holds an account id;
//! - a **pattern** ([`ScopePattern`]) is what a client is allowed: an exact scope, or one with
//!   `*` in place of the account id (`/accounts/*/profile.read`), matching any one account id.
//!
//! An account id segment is 1 to 64 characters of `A–Z a–z 0–9 - _` (this covers Moov's UUIDs
//! and keeps `.`/`..`, `/`, `*` and whitespace out). A scope's characters follow RFC 6749 §3.3
//! (`%x21 / %x23-5B / %x5D-7E`). Requested scopes are deduplicated, keep their order, and any
//! unknown or disallowed one rejects the whole request: nothing is silently dropped.

use std::fmt;

use super::error::OAuthError;

/// The marker for an account id in registry templates.
pub const ACCOUNT_MARKER: &str = "{accountID}";
const MAX_SCOPE_LEN: usize = 512;
const MAX_SCOPES_PER_REQUEST: usize = 100;

/// Moov's scope catalogue, Tessera's default registry.
pub const MOOV_CATALOGUE: &[&str] = &[
    "/ping.read",
    "/accounts.read",
    "/accounts.write",
    "/fed.read",
    "/profile-enrichment.read",
    "/accounts/{accountID}/profile.read",
    "/accounts/{accountID}/profile.write",
    "/accounts/{accountID}/analytics.read",
    "/accounts/{accountID}/apple-pay.read",
    "/accounts/{accountID}/apple-pay.write",
    "/accounts/{accountID}/bank-accounts.read",
    "/accounts/{accountID}/bank-accounts.write",
    "/accounts/{accountID}/capabilities.read",
    "/accounts/{accountID}/capabilities.write",
    "/accounts/{accountID}/cards.read",
    "/accounts/{accountID}/cards.write",
    "/accounts/{accountID}/documents.read",
    "/accounts/{accountID}/documents.write",
    "/accounts/{accountID}/files.read",
    "/accounts/{accountID}/files.write",
    "/accounts/{accountID}/invoices.read",
    "/accounts/{accountID}/invoices.write",
    "/accounts/{accountID}/issued-cards.read",
    "/accounts/{accountID}/issued-cards.write",
    "/accounts/{accountID}/payment-links.read",
    "/accounts/{accountID}/payment-links.write",
    "/accounts/{accountID}/payment-methods.read",
    "/accounts/{accountID}/products.read",
    "/accounts/{accountID}/products.write",
    "/accounts/{accountID}/receipts.read",
    "/accounts/{accountID}/receipts.write",
    "/accounts/{accountID}/representatives.read",
    "/accounts/{accountID}/representatives.write",
    "/accounts/{accountID}/sweeps.read",
    "/accounts/{accountID}/sweeps.write",
    "/accounts/{accountID}/terminal-applications.read",
    "/accounts/{accountID}/terminal-applications.write",
    "/accounts/{accountID}/transfers.read",
    "/accounts/{accountID}/transfers.write",
    "/accounts/{accountID}/wallets.read",
    "/accounts/{accountID}/wallets.write",
];

/// True if `c` may appear in a scope token (RFC 6749 §3.3).
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

/// True if `s` is a valid account id segment.
#[must_use]
pub fn is_account_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One concrete scope, as requested and as carried by a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    /// Checks the RFC 6749 syntax of one scope token.
    ///
    /// # Errors
    /// `invalid_scope` naming the offending token.
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        if s.is_empty() || s.len() > MAX_SCOPE_LEN || !s.chars().all(is_scope_char) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {} is malformed",
                printable(s)
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The scope as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes a client-supplied value for an error message, without control characters.
fn printable(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("\"{cleaned}\"")
}

/// An ordered, duplicate-free set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// Parses a space-delimited scope string. Runs of spaces are tolerated; duplicates are
    /// folded; order is kept.
    ///
    /// # Errors
    /// `invalid_scope` for a malformed token or more than 100 scopes.
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        let mut out: Vec<Scope> = Vec::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            let scope = Scope::parse(token)?;
            if !out.contains(&scope) {
                out.push(scope);
            }
            if out.len() > MAX_SCOPES_PER_REQUEST {
                return Err(OAuthError::invalid_scope("too many scopes requested"));
            }
        }
        Ok(Self(out))
    }

    /// True if there are no scopes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// True if `scope` is in the set.
    #[must_use]
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    /// The scopes of `self` that satisfy `keep`, in order.
    #[must_use]
    pub fn filter(&self, keep: impl Fn(&Scope) -> bool) -> Self {
        Self(self.0.iter().filter(|s| keep(s)).cloned().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

/// One segment of a template or pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{accountID}` in a template, `*` in a pattern.
    AnyAccount,
}

fn segments(s: &str, wildcard: &str) -> Vec<Segment> {
    s.split('/')
        .map(|seg| {
            if seg == wildcard {
                Segment::AnyAccount
            } else {
                Segment::Literal(seg.to_owned())
            }
        })
        .collect()
}

/// Does a template/pattern (as segments) match a concrete scope?
fn segments_match(pattern: &[Segment], scope: &str) -> bool {
    let mut parts = scope.split('/');
    for seg in pattern {
        let Some(part) = parts.next() else {
            return false;
        };
        let ok = match seg {
            Segment::Literal(lit) => lit == part,
            Segment::AnyAccount => is_account_id(part),
        };
        if !ok {
            return false;
        }
    }
    parts.next().is_none()
}

/// A client's allowed-scope pattern: an exact scope, or `*` in place of an account id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern {
    raw: String,
    segments: Vec<Segment>,
}

impl ScopePattern {
    /// Parses a pattern and checks it against the registry: it must be an exact registered
    /// scope, or a registered template with `*` (or a concrete account id) where the template
    /// has `{accountID}`.
    ///
    /// # Errors
    /// `invalid_scope` explaining what is wrong.
    pub fn parse(s: &str, registry: &Registry) -> Result<Self, OAuthError> {
        Scope::parse(s)?;
        let segs = segments(s, "*");
        let known = registry.templates.iter().any(|t| {
            t.segments.len() == segs.len()
                && t.segments.iter().zip(&segs).all(|(t, p)| match (t, p) {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::AnyAccount, Segment::AnyAccount) => true,
                    (Segment::AnyAccount, Segment::Literal(id)) => is_account_id(id),
                    (Segment::Literal(_), Segment::AnyAccount) => false,
                })
        });
        if !known {
            return Err(OAuthError::invalid_scope(format!(
                "scope pattern {} does not match any registered scope",
                printable(s)
            )));
        }
        Ok(Self {
            raw: s.to_owned(),
            segments: segs,
        })
    }

    /// Rebuilds a pattern that was validated when it was stored. The registry is not consulted
    /// again: if an operator later removes a scope from the registry, the pattern stays on the
    /// client but [`Registry::check_allowed`] still refuses the unknown scope.
    #[must_use]
    pub fn from_stored(s: &str) -> Self {
        Self {
            raw: s.to_owned(),
            segments: segments(s, "*"),
        }
    }

    /// True if this pattern allows `scope`.
    #[must_use]
    pub fn matches(&self, scope: &Scope) -> bool {
        segments_match(&self.segments, scope.as_str())
    }

    /// The pattern as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Parses a space-delimited list of patterns.
///
/// # Errors
/// `invalid_scope` for the first bad pattern.
pub fn parse_patterns(s: &str, registry: &Registry) -> Result<Vec<ScopePattern>, OAuthError> {
    let mut out: Vec<ScopePattern> = Vec::new();
    for p in s.split_whitespace() {
        let pattern = ScopePattern::parse(p, registry)?;
        if !out.contains(&pattern) {
            out.push(pattern);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Template {
    segments: Vec<Segment>,
}

/// The scopes that exist: Moov's catalogue plus whatever the operator adds.
#[derive(Debug, Clone)]
pub struct Registry {
    templates: Vec<Template>,
    raw: Vec<String>,
}

impl Registry {
    /// Moov's catalogue plus `extra` templates.
    ///
    /// # Errors
    /// `invalid_scope` if an extra template is malformed.
    pub fn with_extra<S: AsRef<str>>(extra: &[S]) -> Result<Self, OAuthError> {
        let mut raw: Vec<String> = MOOV_CATALOGUE.iter().map(|s| (*s).to_owned()).collect();
        for e in extra {
            let e = e.as_ref();
            // The template syntax is a scope with `{accountID}` segments.
            Scope::parse(e)?;
            if e.split('/')
                .any(|seg| seg.contains(['{', '}']) && seg != ACCOUNT_MARKER)
            {
                return Err(OAuthError::invalid_scope(format!(
                    "scope template {} may only use {ACCOUNT_MARKER} as a whole segment",
                    printable(e)
                )));
            }
            if !raw.iter().any(|r| r == e) {
                raw.push(e.to_owned());
            }
        }
        let templates = raw
            .iter()
            .map(|r| Template {
                segments: segments(r, ACCOUNT_MARKER),
            })
            .collect();
        Ok(Self { templates, raw })
    }

    /// Moov's catalogue alone.
    #[must_use]
    pub fn moov() -> Self {
        let raw: Vec<String> = MOOV_CATALOGUE.iter().map(|s| (*s).to_owned()).collect();
        let templates = raw
            .iter()
            .map(|r| Template {
                segments: segments(r, ACCOUNT_MARKER),
            })
            .collect();
        Self { templates, raw }
    }

    /// True if `scope` is an instance of a registered template.
    #[must_use]
    pub fn knows(&self, scope: &Scope) -> bool {
        self.templates
            .iter()
            .any(|t| segments_match(&t.segments, scope.as_str()))
    }

    /// The registered templates, as text.
    #[must_use]
    pub fn templates(&self) -> &[String] {
        &self.raw
    }

    /// Checks requested scopes: each must be registered and allowed by one of `allowed`.
    ///
    /// # Errors
    /// `invalid_scope` naming the first scope that is unknown or not allowed.
    pub fn check_allowed(
        &self,
        requested: &ScopeSet,
        allowed: &[ScopePattern],
    ) -> Result<(), OAuthError> {
        for scope in requested.iter() {
            if !self.knows(scope) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {} is not a known scope",
                    printable(scope.as_str())
                )));
            }
            if !allowed.iter().any(|p| p.matches(scope)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {} is not allowed for this client",
                    printable(scope.as_str())
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pats(s: &str) -> Vec<ScopePattern> {
        parse_patterns(s, &Registry::moov()).unwrap_or_default()
    }

    #[test]
    fn exact_pattern_matches_only_itself() -> Result<(), OAuthError> {
        let p = pats("/accounts.read");
        let reg = Registry::moov();
        reg.check_allowed(&ScopeSet::parse("/accounts.read")?, &p)?;
        assert!(
            reg.check_allowed(&ScopeSet::parse("/accounts.write")?, &p)
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn wildcard_pattern_matches_one_account_id() -> Result<(), OAuthError> {
        let p = pats("/accounts/*/profile.read");
        let reg = Registry::moov();
        reg.check_allowed(
            &ScopeSet::parse("/accounts/0b9f7a3c-1d2e-4f5a-8b6c-7d8e9f0a1b2c/profile.read")?,
            &p,
        )?;
        for bad in [
            "/accounts/a/b/profile.read",
            "/accounts//profile.read",
            "/accounts/*/profile.read",
            "/accounts/../profile.read",
            "/accounts/abc/profile.write",
        ] {
            assert!(
                reg.check_allowed(&ScopeSet::parse(bad)?, &p).is_err(),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn unknown_scope_is_rejected_even_if_pattern_would_match() -> Result<(), OAuthError> {
        let reg = Registry::moov();
        let err = reg.check_allowed(&ScopeSet::parse("/widgets.read")?, &pats("/ping.read"));
        assert!(err.is_err_and(|e| e.description.contains("not a known scope")));
        Ok(())
    }

    #[test]
    fn patterns_must_name_registered_scopes() {
        let reg = Registry::moov();
        assert!(ScopePattern::parse("/widgets.read", &reg).is_err());
        assert!(ScopePattern::parse("/accounts/*.read", &reg).is_err());
        assert!(ScopePattern::parse("/*/profile.read", &reg).is_err());
        assert!(ScopePattern::parse("/accounts/*/profile.read", &reg).is_ok());
        assert!(ScopePattern::parse("/accounts/acct-1/profile.read", &reg).is_ok());
    }

    #[test]
    fn operator_scopes_extend_the_registry() -> Result<(), OAuthError> {
        let reg = Registry::with_extra(&["/widgets.read", "/accounts/{accountID}/widgets.write"])?;
        let p = parse_patterns("/widgets.read /accounts/*/widgets.write", &reg)?;
        reg.check_allowed(
            &ScopeSet::parse("/widgets.read /accounts/x1/widgets.write")?,
            &p,
        )?;
        assert!(Registry::with_extra(&["/bad/{account}.read"]).is_err());
        Ok(())
    }

    #[test]
    fn scope_sets_fold_duplicates_and_keep_order() -> Result<(), OAuthError> {
        let s = ScopeSet::parse("/b.read  /a.read /b.read")?;
        assert_eq!(s.to_string(), "/b.read /a.read");
        assert!(ScopeSet::parse("/a.read \"x").is_err());
        assert!(ScopeSet::parse("/a.read\t/b.read").is_err());
        Ok(())
    }

    fn account_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,64}"
    }

    proptest! {
        #[test]
        fn parse_then_display_is_identity(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,40}", 1..8)) {
            let mut uniq: Vec<String> = Vec::new();
            for t in tokens { if !uniq.contains(&t) { uniq.push(t); } }
            let joined = uniq.join(" ");
            let set = ScopeSet::parse(&joined).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(set.to_string(), joined);
        }

        #[test]
        fn wildcard_matches_every_valid_account_id(id in account_id()) {
            let p = pats("/accounts/*/transfers.write");
            let scope = Scope::parse(&format!("/accounts/{id}/transfers.write")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(p.iter().any(|p| p.matches(&scope)));
            prop_assert!(Registry::moov().knows(&scope));
        }

        #[test]
        fn wildcard_never_matches_across_segments(a in account_id(), b in account_id()) {
            let p = pats("/accounts/*/transfers.write");
            let scope = Scope::parse(&format!("/accounts/{a}/{b}/transfers.write")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!p.iter().any(|p| p.matches(&scope)));
        }

        #[test]
        fn concrete_pattern_matches_only_its_own_account(a in account_id(), b in account_id()) {
            prop_assume!(a != b);
            let p = pats(&format!("/accounts/{a}/wallets.read"));
            let own = Scope::parse(&format!("/accounts/{a}/wallets.read")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let other = Scope::parse(&format!("/accounts/{b}/wallets.read")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(p.iter().any(|p| p.matches(&own)));
            prop_assert!(!p.iter().any(|p| p.matches(&other)));
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,200}") {
            let _ = ScopeSet::parse(&s);
            let _ = parse_patterns(&s, &Registry::moov());
        }
    }
}
