//! Operator input through the admin API (issue 14, part 7): names, origins, audiences,
//! resources, `resource_server` and `keep_old` are checked by the domain's rules and refused
//! with `400` in the admin error shape, naming the field; query strings and path parameters
//! fail in that shape too; origins are stored normalised; a configured admin token must be a
//! real credential.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// True for what no stored value or error message may carry raw: C0/C1 controls, line
/// separators, bidirectional overrides and isolates, zero-width spaces.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200B}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Asserts a `400 invalid_request` in the admin shape whose description begins with `field`.
fn assert_refused(r: &Reply, field: &str) {
    assert_oauth_error(r, 400, "invalid_request");
    assert_envelope(r);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "the admin error shape has two members: {}",
        r.text
    );
    let description = v["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("{field} ")),
        "{field}: {description}"
    );
    assert!(
        !description.chars().any(unprintable),
        "the reason carries a raw control character: {description:?}"
    );
}

/// Values refused for a field, as JSON, with the field the refusal must name.
fn bad_client_fields() -> Vec<(&'static str, Value)> {
    let long = format!("https://api.example/{}", "a".repeat(2048));
    vec![
        ("name", json!("")),
        ("name", json!("   ")),
        ("name", json!("nul\u{0}byte")),
        ("name", json!("esc\u{1b}[31mred")),
        ("name", json!("line\nbreak")),
        ("name", json!("trailing newline\n")),
        ("name", json!("c1 \u{9b}2J")),
        ("name", json!("bidi \u{202e}gnp.exe")),
        ("name", json!("zero\u{200b}width")),
        ("name", json!("n".repeat(201))),
        ("origins", json!(["https://a.com\u{0}"])),
        ("origins", json!(["https://a .com"])),
        ("origins", json!(["https://a.com:99999"])),
        ("origins", json!(["https://a.com:0"])),
        ("origins", json!(["https://a.com/path"])),
        ("origins", json!(["https://a.com?q=1"])),
        ("origins", json!(["https://a.com#top"])),
        ("origins", json!(["https://user:pw@a.com"])),
        ("origins", json!(["ftp://a.com"])),
        ("origins", json!(["a.com"])),
        ("origins", json!(["https://"])),
        ("origins", json!(["https://a.com\n"])),
        (
            "origins",
            json!(
                (0..101)
                    .map(|i| format!("https://a{i}.test"))
                    .collect::<Vec<_>>()
            ),
        ),
        ("audience", json!("https://api\u{0}")),
        ("audience", json!("https://api\u{1b}x")),
        ("audience", json!("two words")),
        ("audience", json!(long)),
        ("resources", json!(["urn:api\u{0}"])),
        ("resources", json!(["https://api.example/\u{7f}"])),
        ("resources", json!([long])),
        ("resources", json!(["no-scheme"])),
        ("resource_server", json!("aud\u{0}")),
        ("resource_server", json!("aud\u{2066}x")),
        ("resource_server", json!(long)),
    ]
}

#[tokio::test]
async fn bad_client_fields_are_refused_with_a_400_naming_the_field_on_create_and_update() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let path = format!("/admin/clients/{}", c.id);
    let before = app.admin("GET", &path, None).await.json();
    for (field, value) in bad_client_fields() {
        let mut create = json!({"name": "ok", "scopes": "/ping.read"});
        create[field] = value.clone();
        let r = app.admin("POST", "/admin/clients", Some(create)).await;
        assert_refused(&r, field);
        let r = app
            .admin("PATCH", &path, Some(json!({ field: value })))
            .await;
        assert_refused(&r, field);
    }
    // Nothing was created, and the client is as it was.
    let page = app.admin("GET", "/admin/clients", None).await.json();
    assert_eq!(page["clients"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(app.admin("GET", &path, None).await.json(), before);
}

#[tokio::test]
async fn values_at_the_documented_bounds_are_accepted() {
    let app = spawn_app().await;
    let aud = format!("https://api.example/{}", "a".repeat(2048 - 20));
    assert_eq!(aud.len(), 2048);
    let origins: Vec<String> = (0..100).map(|i| format!("https://a{i}.test")).collect();
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({
                "name": format!("  {}  ", "ñ".repeat(200)),
                "scopes": "/ping.read",
                "audience": aud,
                "resources": [aud],
                "resource_server": aud,
                "origins": origins,
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(v["name"], "ñ".repeat(200), "trimmed");
    assert_eq!(v["audience"], aud.as_str());
    assert_eq!(v["origins"].as_array().unwrap().len(), 100);
    // A name may use the joiners that emoji sequences and several scripts need.
    let r = app
        .admin(
            "PATCH",
            &format!("/admin/clients/{}", v["client_id"].as_str().unwrap()),
            Some(json!({"name": "team 👩\u{200d}💻 ناممی\u{200c}خواهم"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn origins_are_stored_normalised_and_match_what_browsers_send() {
    let app = spawn_app().await;
    let r = app
        .admin(
            "POST",
            "/admin/clients",
            Some(json!({
                "name": "spa",
                "scopes": "/ping.read",
                "origins": [
                    "HTTPS://App.Example.COM:443/",
                    "http://localhost:80",
                    "https://app.example.com",
                    "http://127.0.0.1:3000",
                    "https://bücher.example:8443",
                ],
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(
        v["origins"],
        json!([
            "https://app.example.com",
            "http://localhost",
            "http://127.0.0.1:3000",
            "https://xn--bcher-kva.example:8443",
        ])
    );
    let c = TestClient {
        id: v["client_id"].as_str().unwrap().into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    };
    let grant = |origin: &'static str| {
        let auth = basic(&c.id, &c.secret);
        let app = &app;
        async move {
            app.post(
                "/oauth2/token",
                Some(FORM),
                form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ]),
                &[("authorization", &auth), ("origin", origin)],
            )
            .await
            .status
        }
    };
    assert_eq!(grant("https://app.example.com").await, 200);
    assert_eq!(grant("http://localhost").await, 200);
    assert_eq!(grant("https://xn--bcher-kva.example:8443").await, 200);
    assert_eq!(grant("https://app.example.com:8443").await, 400);
    // The CLI stores the same normal form.
    let shown = app.cli_json(&[
        "client",
        "update",
        &c.id,
        "--origin",
        "HTTP://Example.test:80/",
        "--json",
    ]);
    assert_eq!(shown["origins"], json!(["http://example.test"]));
}

#[tokio::test]
async fn keep_old_beyond_thirty_days_is_refused_and_the_secret_is_not_rotated() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let rotate = format!("/admin/clients/{}/rotate-secret", c.id);
    for keep_old in [json!(2_592_001), json!(-1), json!(u64::MAX)] {
        let r = app
            .admin("POST", &rotate, Some(json!({ "keep_old": keep_old })))
            .await;
        assert_refused(&r, "keep_old");
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("2592000"),
            "{}",
            r.text
        );
    }
    let shown = app
        .admin("GET", &format!("/admin/clients/{}", c.id), None)
        .await
        .json();
    assert_eq!(shown["previous_secret_expires_at"], Value::Null);
    app.grant(&c, "/ping.read").await;
    let r = app
        .admin("POST", &rotate, Some(json!({"keep_old": 2_592_000})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let until = r.json()["previous_secret_expires_at"].as_i64().unwrap();
    assert!((until - now() - 2_592_000).abs() <= 5, "{until}");
    // The CLI has the same bound.
    let out = app.cli(&["client", "rotate-secret", &c.id, "--keep-old", "2592001"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: keep_old must be between 0 and 2592000"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_admin_query_strings_and_paths_answer_the_json_error() {
    let app = spawn_app().await;
    for path in [
        "/admin/clients?limit=abc",
        "/admin/clients?limit=-1",
        "/admin/clients?limit=0",
        "/admin/clients?limit=1001",
        "/admin/clients?limit=99999999999",
        "/admin/clients?bogus=1",
        "/admin/clients?limit=1&limit=2",
        "/admin/audit?since=yesterday",
        "/admin/audit?limit=abc",
        "/admin/audit?clientid=x",
        "/admin/audit?since=1&unknown=",
        "/admin/clients/%FF",
        "/admin/keys/%C3%28/revoke",
    ] {
        let method = if path.ends_with("/revoke") {
            "POST"
        } else {
            "GET"
        };
        let r = app.admin(method, path, None).await;
        assert_oauth_error(&r, 400, "invalid_request");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_envelope(&r);
    }
    let r = app.admin("GET", "/admin/clients?limit=0", None).await;
    assert_eq!(
        r.json()["error_description"],
        "limit must be between 1 and 1000"
    );
    // Good ones still work, and an unauthenticated bad query is a 401 first.
    assert_eq!(
        app.admin("GET", "/admin/clients?limit=1000&after=", None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.admin(
            "GET",
            "/admin/audit?since=0&limit=1&event=client.created",
            None
        )
        .await
        .status,
        200
    );
    let r = app
        .admin_as("GET", "/admin/clients?limit=abc", None, None)
        .await;
    assert_oauth_error(&r, 401, "unauthorized");
}

/// `tessera serve` with `TESSERA_ADMIN_TOKEN` set to `token`: its exit status and standard
/// error, or `None` if it was still running after a generous bound (then it is killed).
fn serve_with_admin_token(token: &str) -> Option<(bool, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.path().join("t.db").display()))
        .env("TESSERA_ADMIN_TOKEN", token)
        .env_remove("TESSERA_MASTER_KEY")
        .env_remove("TESSERA_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some((
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn serve_refuses_to_start_with_an_empty_short_or_unprintable_admin_token() {
    for (token, says) in [
        ("", "is set but empty"),
        (
            "short-admin-token",
            "is 17 characters; it must be at least 32",
        ),
        (
            "0123456789abcdef0123456789abcdef\n",
            "visible ASCII characters only",
        ),
    ] {
        let outcome = serve_with_admin_token(token);
        let Some((ok, stderr)) = outcome else {
            panic!("serve started with admin token {token:?}");
        };
        assert!(!ok, "{token:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(
            stderr.contains("admin_token (TESSERA_ADMIN_TOKEN)"),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{token:?}: {stderr}");
        assert!(
            token.is_empty() || !stderr.contains(token.trim()),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_naming_its_field() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let path = format!("/admin/clients/{}", c.id);
    for (field, value) in [
        ("access_ttl", json!("soon")),
        ("name", json!(7)),
        ("disabled", json!("yes")),
        ("origins", json!("https://a.example")),
    ] {
        let r = app
            .admin("PATCH", &path, Some(json!({ field: value })))
            .await;
        assert_refused(&r, field);
    }
    let r = app
        .admin(
            "POST",
            &format!("{path}/rotate-secret"),
            Some(json!({"keep_old": "1d"})),
        )
        .await;
    assert_refused(&r, "keep_old");
}
