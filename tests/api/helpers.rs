//! `spawn_app()` and typed request helpers.
//!
//! An app runs in-process on a fresh SQLite file (`spawn_app`) or on a fresh PostgreSQL
//! database (`spawn_app_pg`), or as a real `tessera serve` process (`spawn_serve`, for tests
//! with several instances on one database). The request helpers work the same on all three.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tessera::config::Settings;
use tessera::http::Application;
use tokio::sync::oneshot;

use crate::pg::TestDb;

/// A running Tessera: in-process, or a `tessera serve` child process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// The PostgreSQL database, for apps on PostgreSQL.
    pub pg: Option<Arc<TestDb>>,
    database_url: String,
    master_key: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    process: Option<ServeProcess>,
}

/// A client created through the CLI.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the app with extra settings (`name`, value) over the test defaults.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    spawn_in(dir, extra).await
}

/// Spawns the app on the database in `dir` (which may already hold data).
pub async fn spawn_in(dir: tempfile::TempDir, extra: &[(&str, &str)]) -> TestApp {
    let db = dir.path().join("tessera.db");
    let url = format!("sqlite://{}", db.display());
    spawn_on(dir, url, None, None, extra).await
}

/// A fresh master key (base64), as PostgreSQL deployments must be given one.
pub fn new_master_key() -> String {
    tessera::domain::crypto::MasterKey::generate()
        .expect("master key")
        .encode()
}

/// Spawns the app in-process on a fresh PostgreSQL database with a fresh master key.
/// `None`: PostgreSQL is unreachable and `CI` is unset, so the test is skipped (loudly).
pub async fn spawn_app_pg(extra: &[(&str, &str)]) -> Option<TestApp> {
    let db = Arc::new(TestDb::create().await?);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db.url.clone();
    Some(spawn_on(dir, url, Some(new_master_key()), Some(db), extra).await)
}

/// Spawns the app in-process on the PostgreSQL database `database_url` (which the caller
/// provides and cleans up), with a fresh master key.
pub async fn spawn_app_on_url(database_url: &str, extra: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    spawn_on(
        dir,
        database_url.to_owned(),
        Some(new_master_key()),
        None,
        extra,
    )
    .await
}

async fn spawn_on(
    dir: tempfile::TempDir,
    database_url: String,
    master_key: Option<String>,
    pg: Option<Arc<TestDb>>,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut flags: Vec<(&str, String)> = vec![
        ("listen", "127.0.0.1:0".into()),
        ("admin_listen", "127.0.0.1:0".into()),
        ("admin_token", ADMIN_TOKEN.into()),
        // Generous limits, so only the tests about rate limiting meet them.
        ("rate_limit_per_ip", "100000".into()),
        ("rate_limit_per_client", "100000".into()),
        ("database_url", database_url.clone()),
    ];
    if let Some(key) = &master_key {
        flags.push(("master_key", key.clone()));
    }
    flags.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let settings = Settings::load_from(None, |_| None, &flags).expect("settings");
    let app = Application::build(settings).await.expect("build app");
    let addr = app.local_addr().expect("addr");
    let admin_addr = app.admin_addr().expect("admin addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server");
    });
    TestApp {
        addr,
        admin_addr,
        dir,
        http: reqwest::Client::builder().build().expect("http client"),
        pg,
        database_url,
        master_key,
        stop: Some(stop),
        task: Some(task),
        process: None,
    }
}

/// A `tessera serve` child process, killed when dropped. Its stderr (JSON logs) is kept for
/// failure messages.
struct ServeProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary, `tessera serve`, on `db` with `master_key` and extra `serve` flags,
/// on a free loopback port (it binds port 0 and logs the address it got).
pub async fn spawn_serve(db: &Arc<TestDb>, master_key: &str, args: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    serve_process(
        dir,
        db.url.clone(),
        Some(master_key),
        Some(db.clone()),
        args,
    )
    .await
}

/// Starts `tessera serve` on the SQLite file `tessera.db` in `dir` (which may already hold
/// data), with the master key generated beside it.
pub async fn spawn_serve_in(dir: tempfile::TempDir, args: &[&str]) -> TestApp {
    let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
    serve_process(dir, url, None, None, args).await
}

/// Starts `tessera serve` on the SQLite database `database_url`, with the master key beside
/// it, from a directory of its own.
pub async fn spawn_serve_on(database_url: &str, args: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    serve_process(dir, database_url.to_owned(), None, None, args).await
}

async fn serve_process(
    dir: tempfile::TempDir,
    database_url: String,
    master_key: Option<&str>,
    pg: Option<Arc<TestDb>>,
    args: &[&str],
) -> TestApp {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    match master_key {
        Some(key) => command.env("TESSERA_MASTER_KEY", key),
        None => command.env_remove("TESSERA_MASTER_KEY"),
    };
    let mut child = command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(args)
        .arg("--database-url")
        .arg(&database_url)
        .env("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN)
        // Many concurrent requests from one address: only the rate-limit tests meet limits.
        .env("TESSERA_RATE_LIMIT_PER_IP", "0")
        .env("TESSERA_RATE_LIMIT_PER_CLIENT", "0")
        .env("TESSERA_LOG", "info")
        .env_remove("TESSERA_CONFIG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera serve");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = oneshot::channel::<(SocketAddr, SocketAddr)>();
    let lines = log.clone();
    std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if event["fields"]["message"] == "serving" {
                let parse = |k: &str| {
                    event["fields"][k]
                        .as_str()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                };
                let addr = parse("addr").zip(parse("admin"));
                if let (Some(tx), Some(addr)) = (addr_tx.take(), addr) {
                    let _ = tx.send(addr);
                }
            }
            lines.lock().expect("log").push(line);
        }
    });
    let process = ServeProcess { child, log };
    let (addr, admin_addr) = match tokio::time::timeout(Duration::from_secs(120), addr_rx).await {
        Ok(Ok(addrs)) => addrs,
        _ => panic!(
            "tessera serve did not start:\n{}",
            process.log.lock().expect("log").join("\n")
        ),
    };
    TestApp {
        addr,
        admin_addr,
        dir,
        http: reqwest::Client::builder().build().expect("http client"),
        pg,
        database_url,
        master_key: master_key.map(str::to_owned),
        stop: None,
        task: None,
        process: Some(process),
    }
}

/// The admin token the test apps are configured with.
pub const ADMIN_TOKEN: &str = "tes_ak_test-admin-token-for-the-integration-tests";

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

pub const FORM: &str = "application/x-www-form-urlencoded";
pub const JSON: &str = "application/json";

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tessera.db")
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    /// The log lines (JSON) a `tessera serve` process has written so far; empty in-process.
    pub fn log_lines(&self) -> Vec<String> {
        self.process
            .as_ref()
            .map(|p| p.log.lock().expect("log").clone())
            .unwrap_or_default()
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The process id of a `tessera serve` process.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// Kills a `tessera serve` process with SIGKILL (if it still runs) and gives back its
    /// directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        drop(self.process.take());
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Stops the server (graceful) and gives back its directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        drop(self.process.take());
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Runs the real `tessera` binary against this app's database.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.args(args)
            .arg("--database-url")
            .arg(self.database_url())
            .env_remove("TESSERA_MASTER_KEY")
            .env_remove("TESSERA_CONFIG")
            .current_dir(self.dir.path());
        if let Some(key) = &self.master_key {
            cmd.env("TESSERA_MASTER_KEY", key);
        }
        cmd.output().expect("run tessera")
    }

    /// Runs the CLI and parses its JSON output, asserting success.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tessera {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "tessera {args:?}: output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Creates a client with `tessera client create … --json`.
    pub fn client(&self, scope: &str, extra: &[&str]) -> TestClient {
        let mut args = vec![
            "client",
            "create",
            "--name",
            "test client",
            "--scope",
            scope,
            "--json",
        ];
        args.extend_from_slice(extra);
        let v = self.cli_json(&args);
        TestClient {
            id: v["client_id"].as_str().expect("client_id").to_owned(),
            secret: v["client_secret"]
                .as_str()
                .expect("client_secret")
                .to_owned(),
        }
    }

    /// POSTs a raw body with optional content type and headers.
    pub async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.expect("request")).await
    }

    /// `POST /oauth2/token` as a form, authenticating with Basic.
    pub async fn token(&self, c: &TestClient, fields: &[(&str, &str)]) -> Reply {
        self.post(
            "/oauth2/token",
            Some(FORM),
            form(fields),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await
    }

    /// A successful client_credentials grant.
    pub async fn grant(&self, c: &TestClient, scope: &str) -> Value {
        let r = self
            .token(c, &[("grant_type", "client_credentials"), ("scope", scope)])
            .await;
        assert_eq!(r.status, 200, "grant failed: {}", r.text);
        r.json()
    }

    /// A refresh_token grant.
    pub async fn refresh(&self, c: &TestClient, refresh_token: &str) -> Reply {
        self.token(
            c,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// `POST /oauth2/revoke` as a form with Basic.
    pub async fn revoke(&self, c: &TestClient, fields: &[(&str, &str)]) -> Reply {
        self.post(
            "/oauth2/revoke",
            Some(FORM),
            form(fields),
            &[("authorization", &basic(&c.id, &c.secret))],
        )
        .await
    }

    /// `GET /ping` with a bearer token; returns the status.
    pub async fn ping(&self, access_token: &str) -> u16 {
        self.get(
            "/ping",
            &[("authorization", &format!("Bearer {access_token}"))],
        )
        .await
        .status
    }

    /// Row counts of the token tables (families, access tokens, refresh tokens); SQLite apps.
    pub async fn token_rows(&self) -> (i64, i64, i64) {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", self.db_path().display()))
                .await
                .expect("open db");
        let count = |t: &'static str| {
            let pool = pool.clone();
            async move {
                let q = match t {
                    "f" => "SELECT COUNT(*) FROM token_families",
                    "a" => "SELECT COUNT(*) FROM access_tokens",
                    _ => "SELECT COUNT(*) FROM refresh_tokens",
                };
                sqlx::query_scalar::<_, i64>(q)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        };
        let out = (count("f").await, count("a").await, count("r").await);
        pool.close().await;
        out
    }
}

async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

/// Asserts the headers every response carries.
pub fn assert_envelope(r: &Reply) {
    let id = r.header("x-request-id").expect("x-request-id");
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "x-request-id is not a UUID: {id}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
}

/// Asserts a Moov field error: 422 with exactly one key.
pub fn assert_field_error(r: &Reply, field: &str, contains: &str) {
    assert_eq!(r.status, 422, "expected 422 for {field}: {}", r.text);
    let v = r.json();
    let obj = v.as_object().expect("object");
    assert_eq!(obj.len(), 1, "{}", r.text);
    let msg = obj
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {field} key: {}", r.text));
    assert!(
        msg.contains(contains),
        "{field}: {msg:?} does not contain {contains:?}"
    );
}

/// Asserts an RFC 6749 / generic error body with the given status and code.
pub fn assert_oauth_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let v = r.json();
    assert_eq!(v["error"], code, "{}", r.text);
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.text
    );
}

/// Verifies a JWT the way an independent resource server would: fetch the JWKS from
/// `jwks_uri`, pick the key by `kid`, verify with jsonwebtoken (signature, exp, nbf).
pub async fn verify_with_jwks(jwks_uri: &str, token: &str) -> Result<Value, String> {
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
    let set: JwkSet = reqwest::get(jwks_uri)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let header = decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(header.alg);
    v.validate_aud = false;
    v.validate_nbf = true;
    decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// The `kid` in a JWT's header.
pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("JWT header")
        .kid
        .expect("kid")
}

impl TestApp {
    /// A request to the admin listener with the admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.admin_as(method, path, body, Some(ADMIN_TOKEN)).await
    }

    /// A request to the admin listener with the given bearer token (or none).
    pub async fn admin_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("http://{}{}", self.admin_addr, path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", JSON).body(b.to_string());
        }
        read(req.send().await.expect("admin request")).await
    }

    /// A Prometheus sample's value (summed over series whose labels include `labels`).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.admin("GET", "/metrics", None).await.text;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }
}
