//! RFC 8414 metadata: everything advertised is true.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn metadata_advertises_only_what_works() {
    let app = spawn_app().await;
    let r = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(r.status, 200);
    let m = r.json();
    let oidc = app
        .get("/.well-known/openid-configuration", &[])
        .await
        .json();
    assert_eq!(m, oidc, "the same document at both addresses");
    let issuer = format!("http://{}", app.addr);
    assert_eq!(m["issuer"], issuer);
    for (key, path) in [
        ("token_endpoint", "/oauth2/token"),
        ("revocation_endpoint", "/oauth2/revoke"),
        ("introspection_endpoint", "/oauth2/introspect"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(m[key], format!("{issuer}{path}"));
    }
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!(["client_credentials", "refresh_token"])
    );
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );

    // Every advertised literal scope can be granted to a client allowed it.
    let scopes: Vec<&str> = m["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"/ping.read"));
    let all = scopes.join(" ");
    let c = app.client(&all, &[]);
    // Both auth methods work at the advertised token endpoint.
    let t = app.grant(&c, &all).await;
    assert_eq!(t["scope"], all);
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
        ("client_id", &c.id),
        ("client_secret", &c.secret),
    ]);
    let r = reqwest::Client::new()
        .post(m["token_endpoint"].as_str().unwrap())
        .header("content-type", FORM)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Templates are listed separately, and are templates.
    assert!(
        m["tessera_scope_templates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_str().unwrap().contains("{accountID}"))
    );

    // Advertised algorithms are exactly those of the published keys.
    let jwks: Value = reqwest::get(m["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    algs.dedup();
    assert_eq!(
        m["access_token_signing_alg_values_supported"],
        serde_json::json!(algs)
    );
}
