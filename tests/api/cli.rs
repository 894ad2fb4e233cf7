//! The `tessera` binary: client management against a running server's database, `migrate`,
//! and `serve` with no configuration.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn client_create_prints_id_and_secret_once_and_the_server_sees_it_at_once() {
    let app = spawn_app().await;
    let v = app.cli_json(&[
        "client",
        "create",
        "--name",
        "billing",
        "--scope",
        "/ping.read /accounts/*/profile.read",
        "--format",
        "jwt",
        "--profile",
        "moov",
        "--access-ttl",
        "600",
        "--refresh-ttl",
        "7200",
        "--origin",
        "https://app.example.com",
        "--json",
    ]);
    let id = v["client_id"].as_str().unwrap();
    assert_eq!(id.len(), 16);
    assert!(v["client_secret"].as_str().unwrap().starts_with("tes_sk_"));
    assert_eq!(v["token_format"], "jwt");
    assert_eq!(v["profile"], "moov");
    assert_eq!(v["access_ttl"], 600);
    assert_eq!(v["origins"][0], "https://app.example.com");

    let shown = app.cli_json(&["client", "show", id, "--json"]);
    assert!(
        shown.get("client_secret").is_none(),
        "the secret is shown only once"
    );
    assert_eq!(shown["name"], "billing");
    let list = app.cli_json(&["client", "list", "--json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == id)
    );

    let c = TestClient {
        id: id.to_owned(),
        secret: v["client_secret"].as_str().unwrap().to_owned(),
    };
    let t = app
        .token(
            &c,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
                ("client_type", "service"),
            ],
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.json()["token_type"], "Bearer");
}

#[tokio::test]
async fn client_update_disable_enable_and_delete_take_effect_on_the_running_server() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/accounts.read"),
    ];
    assert_eq!(app.token(&c, &fields).await.status, 422);
    let v = app.cli_json(&[
        "client",
        "update",
        &c.id,
        "--scope",
        "/ping.read /accounts.read",
        "--profile",
        "rfc6749",
        "--json",
    ]);
    assert_eq!(
        v["scopes"],
        serde_json::json!(["/ping.read", "/accounts.read"])
    );
    let r = app.token(&c, &fields).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["token_type"], "Bearer");
    let v = app.cli_json(&["client", "update", &c.id, "--profile", "default", "--json"]);
    assert_eq!(v["profile"], Value::Null);

    app.cli_json(&["client", "disable", &c.id, "--json"]);
    assert_eq!(app.token(&c, &fields).await.status, 401);
    app.cli_json(&["client", "enable", &c.id, "--json"]);
    let t = app.grant(&c, "/accounts.read").await;

    let out = app.cli(&["client", "delete", &c.id, "--json"]);
    assert!(out.status.success());
    assert_eq!(app.token(&c, &fields).await.status, 401);
    assert_eq!(app.ping(t["access_token"].as_str().unwrap()).await, 401);
    assert_eq!(
        app.token_rows().await,
        (0, 0, 0),
        "a deleted client's tokens are gone"
    );
    let out = app.cli(&["client", "show", &c.id]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn rotate_secret_keeps_the_old_secret_for_the_overlap_only() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    let v = app.cli_json(&["client", "rotate-secret", &c.id, "--json"]);
    let new = TestClient {
        id: c.id.clone(),
        secret: v["client_secret"].as_str().unwrap().to_owned(),
    };
    assert!(v["previous_secret_expires_at"].as_i64().unwrap() > now() + 80_000);
    app.grant(&c, "/ping.read").await;
    app.grant(&new, "/ping.read").await;
    let v = app.cli_json(&[
        "client",
        "rotate-secret",
        &c.id,
        "--keep-old",
        "0",
        "--json",
    ]);
    let newest = TestClient {
        id: c.id.clone(),
        secret: v["client_secret"].as_str().unwrap().to_owned(),
    };
    let fields = [
        ("grant_type", "client_credentials"),
        ("scope", "/ping.read"),
    ];
    assert_eq!(app.token(&c, &fields).await.status, 401);
    assert_eq!(app.token(&new, &fields).await.status, 401);
    app.grant(&newest, "/ping.read").await;
}

#[tokio::test]
async fn cli_rejects_bad_input_with_a_clear_message() {
    let app = spawn_app().await;
    for (args, needle) in [
        (
            vec![
                "client",
                "create",
                "--name",
                "x",
                "--scope",
                "/widgets.read",
            ],
            "does not match any registered scope",
        ),
        (
            vec![
                "client",
                "create",
                "--name",
                "x",
                "--scope",
                "/ping.read",
                "--origin",
                "https://a.test/path",
            ],
            "origin",
        ),
        (
            vec![
                "client",
                "create",
                "--name",
                "x",
                "--scope",
                "/ping.read",
                "--access-ttl",
                "0",
            ],
            "access_ttl",
        ),
        (
            vec![
                "client",
                "create",
                "--name",
                "x",
                "--scope",
                "/ping.read",
                "--format",
                "paseto",
            ],
            "paseto",
        ),
        (vec!["client", "show", "nope"], "no client"),
    ] {
        let out = app.cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let list = app.cli_json(&["client", "list", "--json"]);
    assert_eq!(list, serde_json::json!([]), "nothing was created");
}

#[test]
fn serve_runs_with_no_configuration_and_migrate_works_on_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tessera");
    let out = Command::new(bin)
        .args(["migrate"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two distinct free ports (both held until read, so they differ).
    let (a, b) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (port, admin_port) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    drop((a, b));
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ])
        .current_dir(dir.path())
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = rt.block_on(async {
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
                return r.status().as_u16();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        0
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ready, 200);
    assert!(dir.path().join("tessera.db").exists());
    assert!(dir.path().join("tessera.db.master-key").exists());
    let admin_token = std::fs::read_to_string(dir.path().join("tessera.db.admin-token")).unwrap();
    assert!(
        admin_token.trim().starts_with("tes_ak_"),
        "a generated admin token is handed over once"
    );
}

/// True for what must never reach a terminal raw: C0/C1 controls (other than the line breaks
/// of the output itself), bidirectional overrides and isolates, zero-width spaces.
fn raw_control(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{200B}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[tokio::test]
async fn the_cli_refuses_what_the_admin_api_refuses_with_the_same_reason() {
    let app = spawn_app().await;
    for (args, reason) in [
        (
            vec!["--name", "evil\u{1b}[2Jname"],
            "error: name must not contain control or invisible formatting characters (U+001B at character 5)",
        ),
        (
            vec!["--name", "line\nbreak"],
            "error: name must not contain control or invisible formatting characters (U+000A",
        ),
        (
            vec!["--name", "bidi\u{202e}txt"],
            "error: name must not contain control or invisible formatting characters (U+202E",
        ),
        (
            vec!["--name", "ok", "--origin", "https://a .com"],
            "error: origins entry \"https://a .com\" is not a web origin http(s)://host[:port]: it contains whitespace",
        ),
        (
            vec!["--name", "ok", "--origin", "https://a.com:99999"],
            "error: origins entry \"https://a.com:99999\" is not a web origin",
        ),
        (
            vec!["--name", "ok", "--origin", "https://a.com/app"],
            "error: origins entry \"https://a.com/app\" is not a web origin http(s)://host[:port]: it has a path",
        ),
        (
            vec!["--name", "ok", "--audience", "aud\u{7}"],
            "error: audience must not contain control",
        ),
        (
            vec!["--name", "ok", "--resource-server", "two words"],
            "error: resource_server must not contain whitespace",
        ),
    ] {
        let mut argv = vec!["client", "create", "--scope", "/ping.read"];
        argv.extend(args.iter().copied());
        let out = app.cli(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(reason), "{args:?}: {stderr}");
        assert!(!stderr.chars().any(raw_control), "{stderr:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(
        app.cli_json(&["client", "list", "--json"]),
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn cli_output_escapes_control_characters_of_a_stored_name() {
    use sqlx::Connection as _;
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    // A row written before the rules (the API and the CLI refuse this name now).
    let name = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}gnp.exe\nsecond line";
    let mut conn = sqlx::SqliteConnection::connect(&app.database_url())
        .await
        .unwrap();
    sqlx::query("UPDATE clients SET name = ? WHERE client_id = ?")
        .bind(name)
        .bind(&c.id)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    for args in [
        vec!["client", "show", c.id.as_str()],
        vec!["client", "list"],
        vec!["client", "update", c.id.as_str(), "--access-ttl", "60"],
    ] {
        let out = app.cli(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(!stdout.chars().any(raw_control), "{args:?}: {stdout:?}");
        assert!(
            stdout.contains(
                r"evil\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}gnp.exe\u{a}second line"
            ),
            "{args:?}: {stdout}"
        );
    }
    // --json escapes them the JSON way, and still reads back as the stored name.
    for args in [
        vec!["client", "show", c.id.as_str(), "--json"],
        vec!["client", "list", "--json"],
    ] {
        let out = app.cli(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.chars().any(raw_control), "{args:?}: {stdout:?}");
        assert!(stdout.contains(r"\u001b[2J"), "{stdout}");
        assert!(stdout.contains(r"\u009b31m\u202egnp.exe"), "{stdout}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        let shown = if v.is_array() { &v[0] } else { &v };
        assert_eq!(shown["name"], name);
    }
}
