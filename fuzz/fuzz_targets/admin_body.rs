//! Admin API bodies and query strings, read as the handlers read them and then checked as
//! creating or updating a client checks them.
//!
//! The first byte picks the endpoint. Properties: no panic; an origin or resource that is
//! accepted is accepted again in its normalised form, unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera::fuzzing::{Registry, admin, check_changes, parse_origin, parse_resource};
use tessera::service::clients::ClientChanges;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        Registry::with_extra(&["/widgets.read", "/accounts/{accountID}/widgets.write"]).unwrap()
    })
}

fn check(changes: ClientChanges) {
    for o in changes.origins.iter().flatten() {
        if let Ok(n) = parse_origin(o) {
            assert_eq!(parse_origin(&n).as_deref(), Ok(n.as_str()), "origin {o:?}");
        }
    }
    for r in changes.resources.iter().flatten() {
        if let Ok(n) = parse_resource(r) {
            assert_eq!(
                parse_resource(&n).as_deref(),
                Ok(n.as_str()),
                "resource {r:?}"
            );
        }
    }
    let _ = check_changes(changes, registry());
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, body)) = data.split_first() else {
        return;
    };
    match op % 5 {
        0 => {
            if let Ok(spec) = admin::create_client(body) {
                check(ClientChanges {
                    name: Some(spec.name),
                    scopes: Some(spec.scopes),
                    format: spec.format,
                    profile: Some(spec.profile),
                    access_ttl: Some(spec.access_ttl),
                    refresh_ttl: Some(spec.refresh_ttl),
                    origins: Some(spec.origins),
                    audience: Some(spec.audience),
                    resources: Some(spec.resources),
                    resource_server: Some(spec.resource_server),
                    disabled: None,
                    auth_methods: spec.auth_methods,
                    jwks: Some(spec.jwks),
                    jwks_uri: Some(spec.jwks_uri),
                    require_dpop: Some(spec.require_dpop),
                    fapi2: Some(spec.fapi2),
                });
            }
        }
        1 => {
            if let Ok(changes) = admin::update_client(body) {
                check(changes);
            }
        }
        2 => {
            let _ = admin::rotate_secret(body);
        }
        3 => {
            let _ = admin::revoke_issued_before(body);
        }
        _ => {
            let Ok(q) = std::str::from_utf8(body) else {
                return;
            };
            if let Ok(uri) = format!("/admin/audit?{q}").parse::<http::Uri>() {
                let _ = admin::queries(&uri);
            }
        }
    }
});
