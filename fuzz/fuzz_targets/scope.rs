//! Scope strings, allowed-scope patterns and operator scope templates.
//!
//! Properties: no panic; a scope set that parses displays as a string that parses to the same
//! set; a pattern that names one concrete scope matches that scope; every scope a pattern
//! matches is one the registry knows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::fuzzing::{Registry, Scope, ScopePattern, ScopeSet, parse_patterns};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // `s` as requested scopes, as allowed patterns, and (split at newlines) as the operator's
    // extra templates followed by requested scopes.
    let (extra, requested) = s.split_once('\n').unwrap_or(("", s));
    let extra: Vec<&str> = extra.split(',').filter(|e| !e.is_empty()).collect();
    let registry = Registry::with_extra(&extra).unwrap_or_else(|_| Registry::moov());

    if let Ok(set) = ScopeSet::parse(requested) {
        let shown = set.to_string();
        assert_eq!(ScopeSet::parse(&shown).ok(), Some(set.clone()), "{shown:?}");
        let patterns = parse_patterns(requested, &registry).unwrap_or_default();
        let _ = registry.check_allowed(&set, &patterns);
        for scope in set.iter() {
            if patterns.iter().any(|p| p.matches(scope)) {
                assert!(registry.knows(scope), "{scope} matched but is unknown");
            }
        }
    }
    for word in requested.split(' ') {
        if let Ok(p) = ScopePattern::parse(word, &registry) {
            assert_eq!(p.as_str(), word);
            if !word.split('/').any(|seg| seg == "*") {
                let scope = Scope::parse(word).unwrap();
                assert!(p.matches(&scope), "{word} does not match itself");
                assert!(
                    registry.knows(&scope),
                    "{word} is a pattern of an unknown scope"
                );
            }
        }
    }
});
