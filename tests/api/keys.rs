//! Signing-key lifecycle (next → active → retired; revoked) and algorithms, checked with an
//! independent JOSE library against the published JWKS.

use serde_json::Value;

use crate::helpers::*;

async fn introspect_active(app: &TestApp, c: &TestClient, token: &str) -> bool {
    let r = app
        .post(
            "/oauth2/introspect",
            Some(FORM),
            form(&[("token", token)]),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await;
    r.json()["active"] == true
}

fn keys_by_state(app: &TestApp) -> Vec<(String, String)> {
    let v = app.cli_json(&["keys", "list", "--json"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn kid_in(keys: &[(String, String)], state: &str) -> Vec<String> {
    keys.iter()
        .filter(|(_, s)| s == state)
        .map(|(k, _)| k.clone())
        .collect()
}

fn published(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rotation_activates_the_prepublished_key_and_keeps_the_old_one_published() {
    let app = spawn_app_with(&[("key_reload_interval", "1")]).await;
    let jwks_uri = app.url("/.well-known/jwks.json");
    let c = app.client("/ping.read", &["--format", "jwt"]);
    let before = keys_by_state(&app);
    let (active, next) = (kid_in(&before, "active"), kid_in(&before, "next"));
    assert_eq!((active.len(), next.len()), (1, 1));
    let old_token = app.grant(&c, "/ping.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(kid_of(&old_token), active[0]);
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    assert!(
        published(&jwks).contains(&next[0]),
        "the next key is published before it signs"
    );

    // Rotate through the CLI while the server runs.
    let r = app.cli_json(&["keys", "rotate", "--json"]);
    assert_eq!(r["active"], next[0].as_str());
    assert_eq!(r["retired"], active[0].as_str());
    let new_next = r["next"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let new_token = app.grant(&c, "/ping.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        kid_of(&new_token),
        next[0],
        "the server picked up the rotation"
    );
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    let kids = published(&jwks);
    for k in [&active[0], &next[0], &new_next] {
        assert!(kids.contains(k), "{k} published: {kids:?}");
    }
    // A token signed by the retired key still verifies and introspects.
    verify_with_jwks(&jwks_uri, &old_token).await.unwrap();
    verify_with_jwks(&jwks_uri, &new_token).await.unwrap();
    assert!(introspect_active(&app, &c, &old_token).await);
    assert_eq!(app.ping(&old_token).await, 200);
}

#[tokio::test]
async fn revoking_a_key_withdraws_it_and_its_tokens_at_once() {
    let app = spawn_app_with(&[("key_reload_interval", "1")]).await;
    let jwks_uri = app.url("/.well-known/jwks.json");
    let c = app.client("/ping.read", &["--format", "jwt"]);
    let token = app.grant(&c, "/ping.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let kid = kid_of(&token);
    let out = app.cli(&["keys", "revoke", &kid, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Immediately: the store marks its tokens revoked, on every instance.
    assert!(!introspect_active(&app, &c, &token).await);
    assert_eq!(app.ping(&token).await, 401);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    assert!(!published(&jwks).contains(&kid), "revoked key unpublished");
    assert!(verify_with_jwks(&jwks_uri, &token).await.is_err());
    // Service goes on with the next key.
    let fresh = app.grant(&c, "/ping.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(kid_of(&fresh), kid);
    verify_with_jwks(&jwks_uri, &fresh).await.unwrap();
    let states = keys_by_state(&app);
    assert_eq!(kid_in(&states, "revoked"), vec![kid]);
    assert_eq!(kid_in(&states, "active").len(), 1);
    assert_eq!(kid_in(&states, "next").len(), 1);
}

#[tokio::test]
async fn retiring_the_next_key_replaces_it_and_unknown_keys_are_refused() {
    let app = spawn_app().await;
    let before = keys_by_state(&app);
    let next = kid_in(&before, "next").remove(0);
    let out = app.cli(&["keys", "retire", &next, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = keys_by_state(&app);
    assert_eq!(kid_in(&after, "retired"), vec![next.clone()]);
    assert_eq!(kid_in(&after, "next").len(), 1);
    assert_ne!(kid_in(&after, "next")[0], next);
    let out = app.cli(&["keys", "revoke", "no-such-kid"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no signing key"));
}

#[tokio::test]
async fn every_algorithm_signs_tokens_an_independent_library_verifies_across_a_rotation() {
    for alg in ["EdDSA", "ES256", "RS256", "PS256"] {
        let app = spawn_app_with(&[("signing_alg", alg), ("key_reload_interval", "1")]).await;
        let meta = app
            .get("/.well-known/oauth-authorization-server", &[])
            .await
            .json();
        assert_eq!(
            meta["access_token_signing_alg_values_supported"],
            serde_json::json!([alg])
        );
        let jwks_uri = meta["jwks_uri"].as_str().unwrap().to_owned();
        let c = app.client("/ping.read", &["--format", "jwt"]);
        let first = app.grant(&c, "/ping.read").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            format!("{:?}", jsonwebtoken::decode_header(&first).unwrap().alg),
            alg
        );
        let claims = verify_with_jwks(&jwks_uri, &first)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims["client_id"], c.id);
        app.cli_json(&["keys", "rotate", "--json"]);
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let second = app.grant(&c, "/ping.read").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(kid_of(&first), kid_of(&second), "{alg}");
        verify_with_jwks(&jwks_uri, &first)
            .await
            .unwrap_or_else(|e| panic!("{alg} retired: {e}"));
        verify_with_jwks(&jwks_uri, &second)
            .await
            .unwrap_or_else(|e| panic!("{alg} new: {e}"));
    }
}

#[tokio::test]
async fn tampered_jwts_never_introspect_active() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = spawn_app().await;
    let c = app.client("/ping.read /accounts.read", &["--format", "jwt"]);
    let token = app.grant(&c, "/ping.read").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(introspect_active(&app, &c, &token).await);
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = "/accounts.read".into();
    let with_header = |h: Value| format!("{}.{}.{}", b64.encode(h.to_string()), parts[1], parts[2]);
    let mut none = header.clone();
    none["alg"] = "none".into();
    let mut hs = header.clone();
    hs["alg"] = "HS256".into();
    let mut unknown_kid = header.clone();
    unknown_kid["kid"] = "nope".into();
    let mut typ = header.clone();
    typ["typ"] = "JWT".into();
    let forgeries = [
        format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        ),
        format!("{}.{}.", b64.encode(none.to_string()), parts[1]),
        with_header(none),
        with_header(hs),
        with_header(unknown_kid),
        with_header(typ),
        format!("{}.{}", parts[0], parts[1]),
    ];
    for f in &forgeries {
        assert!(
            !introspect_active(&app, &c, f).await,
            "forgery introspected active: {f}"
        );
        assert_eq!(app.ping(f).await, 401);
    }
}

#[tokio::test]
async fn the_master_key_can_be_rotated_without_invalidating_anything() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &["--format", "jwt"]);
    let t = app.grant(&c, "/ping.read").await;
    let dir = app.stop().await;
    let key_file = dir.path().join("tessera.db.master-key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    let new_file = dir.path().join("new.key");
    let new = tessera::domain::crypto::MasterKey::generate()
        .unwrap()
        .encode();
    std::fs::write(&new_file, &new).unwrap();
    let db = format!("sqlite://{}", dir.path().join("tessera.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "master-key",
            "rotate",
            "--new-key-file",
            new_file.to_str().unwrap(),
            "--database-url",
            &db,
        ])
        .env_remove("TESSERA_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old key no longer opens the database; the new one does, with everything intact.
    std::fs::write(&key_file, &new).unwrap();
    let app = spawn_in(dir, &[]).await;
    app.grant(&c, "/ping.read").await;
    let r = app.refresh(&c, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let dir = app.stop().await;
    let err = tessera::http::Application::build(
        tessera::config::Settings::load_from(
            None,
            |_| None,
            &[
                ("listen", "127.0.0.1:0".into()),
                ("admin_listen", "127.0.0.1:0".into()),
                (
                    "database_url",
                    format!("sqlite://{}", dir.path().join("tessera.db").display()),
                ),
                ("master_key", old),
            ],
        )
        .unwrap(),
    )
    .await
    .err()
    .expect("the old master key is refused");
    assert!(format!("{err:#}").contains("different master key"));
}
