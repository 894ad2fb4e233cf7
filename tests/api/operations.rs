//! Graceful shutdown under load, and no secret in logs or audit records.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_drains_and_cuts_no_request_off() {
    let mut app = spawn_app_with(&[("shutdown_drain", "1")]).await;
    let c = app.client("/ping.read", &[]);
    let url = app.url("/oauth2/token");
    let ready_url = app.url("/readyz");
    let issued: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, c, issued) = (url.clone(), c.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let body = form(&[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ]);
            let mut answered = 0u32;
            loop {
                let sent = http
                    .post(&url)
                    .header("content-type", FORM)
                    .header("authorization", basic(&c.id, &c.secret))
                    .body(body.clone())
                    .send()
                    .await;
                // Once the listener is closed, requests fail to connect: that is the end.
                let Ok(resp) = sent else { return answered };
                let status = resp.status().as_u16();
                let text = resp
                    .text()
                    .await
                    .expect("a started response is finished, never cut off");
                assert_eq!(status, 200, "{text}");
                let v: Value = serde_json::from_str(&text).expect("complete JSON");
                issued
                    .lock()
                    .await
                    .push(v["access_token"].as_str().unwrap().to_owned());
                answered += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.begin_stop();
    // While draining, readiness is false but the server still answers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = reqwest::get(&ready_url)
        .await
        .expect("still serving while draining");
    assert_eq!(r.status(), 503);
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    assert!(total > 0);
    let dir = app.stop().await;
    // Every 200 was committed: after a restart, every token works.
    let app = spawn_in(dir, &[]).await;
    let issued = issued.lock().await.clone();
    assert_eq!(issued.len(), total as usize);
    for token in &issued {
        assert_eq!(app.ping(token).await, 200);
    }
}

#[tokio::test]
async fn logs_and_audit_records_never_contain_a_secret_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tessera");
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let (a, b) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (port, admin_port) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    drop((a, b));
    let log_path = dir.path().join("server.log");
    let cli = |args: &[&str]| -> Value {
        let out = Command::new(bin)
            .args(args)
            .args(["--database-url", &db])
            .env("TESSERA_LOG", "trace")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let opaque = cli(&[
        "client",
        "create",
        "--name",
        "o",
        "--scope",
        "/ping.read",
        "--json",
    ]);
    let jwt = cli(&[
        "client",
        "create",
        "--name",
        "j",
        "--scope",
        "/ping.read",
        "--format",
        "jwt",
        "--json",
    ]);
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--log-format",
            "json",
            "--database-url",
            &db,
        ])
        .env("TESSERA_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{base}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut secrets: Vec<String> = vec![
        opaque["client_secret"].as_str().unwrap().into(),
        jwt["client_secret"].as_str().unwrap().into(),
    ];
    let post = |path: &str, auth: String, body: String| {
        http.post(format!("{base}{path}"))
            .header("content-type", FORM)
            .header("authorization", auth)
            .body(body)
            .send()
    };
    for c in [&opaque, &jwt] {
        let (id, secret) = (
            c["client_id"].as_str().unwrap(),
            c["client_secret"].as_str().unwrap(),
        );
        let auth = basic(id, secret);
        let t: Value = post(
            "/oauth2/token",
            auth.clone(),
            form(&[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ]),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let (at, rt) = (
            t["access_token"].as_str().unwrap().to_owned(),
            t["refresh_token"].as_str().unwrap().to_owned(),
        );
        let r: Value = post(
            "/oauth2/token",
            auth.clone(),
            form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        post(
            "/oauth2/token",
            auth.clone(),
            form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
        )
        .await
        .unwrap(); // reuse
        post("/oauth2/introspect", auth.clone(), form(&[("token", &at)]))
            .await
            .unwrap();
        post(
            "/oauth2/revoke",
            auth.clone(),
            form(&[("token", r["access_token"].as_str().unwrap())]),
        )
        .await
        .unwrap();
        http.get(format!("{base}/ping"))
            .header("authorization", format!("Bearer {at}"))
            .send()
            .await
            .unwrap();
        // Failures: a wrong secret, a secret sent as the client id, a token in the wrong field.
        post(
            "/oauth2/token",
            basic(id, &format!("{secret}x")),
            form(&[("grant_type", "client_credentials")]),
        )
        .await
        .unwrap();
        post(
            "/oauth2/token",
            basic(secret, secret),
            form(&[("grant_type", "client_credentials")]),
        )
        .await
        .unwrap();
        post(
            "/oauth2/token",
            auth.clone(),
            form(&[("grant_type", &at), ("scope", &rt)]),
        )
        .await
        .unwrap();
        secrets.extend([
            at,
            rt,
            r["access_token"].as_str().unwrap().into(),
            r["refresh_token"].as_str().unwrap().into(),
        ]);
    }
    let audit: Value = http
        .get(format!(
            "http://127.0.0.1:{admin_port}/admin/audit?limit=1000"
        ))
        .header(
            "authorization",
            format!(
                "Bearer {}",
                std::fs::read_to_string(format!(
                    "{}.admin-token",
                    dir.path().join("t.db").display()
                ))
                .unwrap()
                .trim()
            ),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(audit["events"].as_array().unwrap().len() >= 10);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.lines().count() > 20, "the server logged the workload");
    assert!(
        logs.contains("\"status\":200")
            || logs.contains("status=200")
            || logs.contains("\"status\""),
        "request events are logged"
    );
    let audit = audit.to_string();
    for s in &secrets {
        // JWTs: the signature part is what makes one usable.
        let probe = if s.matches('.').count() == 2 {
            s.rsplit('.').next().unwrap()
        } else {
            s.as_str()
        };
        assert!(!logs.contains(probe), "a secret or token is in the logs");
        assert!(
            !audit.contains(probe),
            "a secret or token is in the audit trail"
        );
    }
}
