//! What is stored, and how: no secret or token in clear, commits before 2xx, master key rules.

use crate::helpers::*;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_database_holds_no_secret_or_token_in_clear() {
    let app = spawn_app().await;
    let opaque = app.client("/ping.read", &[]);
    let jwt = app.client("/ping.read", &["--format", "jwt"]);
    let mut secrets = vec![opaque.secret.clone(), jwt.secret.clone()];
    for c in [&opaque, &jwt] {
        let t = app.grant(c, "/ping.read").await;
        let r = app
            .refresh(c, t["refresh_token"].as_str().unwrap())
            .await
            .json();
        for v in [&t, &r] {
            secrets.push(v["access_token"].as_str().unwrap().to_owned());
            secrets.push(v["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    let rotated = app.cli_json(&["client", "rotate-secret", &opaque.id, "--json"]);
    secrets.push(rotated["client_secret"].as_str().unwrap().to_owned());
    let dir = app.stop().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("tessera.db")
            && !path.to_string_lossy().ends_with("master-key")
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(bytes.len() > 4096, "read the database files");
    for s in &secrets {
        // The random part alone (without the prefix) must not appear either.
        let body = s
            .trim_start_matches("tes_at_")
            .trim_start_matches("tes_rt_")
            .trim_start_matches("tes_sk_");
        let probe = if body.contains('.') {
            body.split('.').nth(2).unwrap()
        } else {
            body
        };
        assert!(
            !contains(&bytes, probe),
            "a secret or token is stored in clear"
        );
    }
}

#[tokio::test]
async fn a_200_means_the_grant_is_already_committed() {
    let app = spawn_app().await;
    let c = app.client("/ping.read", &[]);
    for i in 1..=5 {
        app.grant(&c, "/ping.read").await;
        // A separate connection (another process could do the same) sees the rows at once.
        assert_eq!(app.token_rows().await, (i, i, i));
    }
}

#[tokio::test]
async fn a_generated_master_key_file_is_private_and_a_wrong_key_refuses_to_start() {
    let app = spawn_app().await;
    let key_file = app.dir.path().join("tessera.db.master-key");
    let meta = std::fs::metadata(&key_file).expect("key file generated next to the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let _ = meta;
    let dir = app.stop().await;
    let other = tessera::domain::crypto::MasterKey::generate()
        .unwrap()
        .encode();
    let settings = tessera::config::Settings::load_from(
        None,
        |_| None,
        &[
            ("listen", "127.0.0.1:0".into()),
            ("admin_listen", "127.0.0.1:0".into()),
            (
                "database_url",
                format!("sqlite://{}", dir.path().join("tessera.db").display()),
            ),
            ("master_key", other),
        ],
    )
    .unwrap();
    let err = tessera::http::Application::build(settings)
        .await
        .err()
        .expect("refuses to start");
    assert!(
        format!("{err:#}").contains("different master key"),
        "{err:#}"
    );
}
