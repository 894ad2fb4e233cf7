//! Connection hygiene (docs/operating.md, "Connections and timeouts"): the header, body and
//! idle timeouts, the per-listener connection cap, and descriptor exhaustion, each created for
//! real over loopback sockets; the last ones against the real `tessera serve` under a low
//! `RLIMIT_NOFILE`.
//!
//! Timeouts are configured short and every wait is bounded generously; nothing asserts on
//! speed.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// How long any one wait for the server may take before the test fails.
const BOUND: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection (or resets it), at most [`BOUND`]; returns
/// what arrived. Panics if the connection is still open after the bound.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server did not close the connection within {BOUND:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// One HTTP/1.1 response read from a kept-alive connection: status, lower-cased headers, body
/// (by Content-Length).
async fn read_response(s: &mut TcpStream) -> (u16, Vec<(String, String)>, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap()[9..12].parse().unwrap();
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap();
                    (k.trim().to_ascii_lowercase(), v.trim().to_owned())
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                return (status, headers, body);
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => panic!(
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => panic!("no response within {BOUND:?}"),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: tessera\r\n\r\n";

/// A kept-alive connection that has been served one request (so the server has accepted it).
async fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(HEALTHZ).await.unwrap();
    let (status, _, _) = read_response(&mut s).await;
    assert_eq!(status, 200);
    s
}

#[tokio::test]
async fn a_connection_that_stops_mid_headers_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(&[("header_timeout", "1")]).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /oauth2/token HTTP/1.1\r\nHost: tessera\r\nContent-Ty")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    assert_eq!(got, b"", "closed without a response");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the timeout, not at once"
    );
    // A connection that sends nothing at all is held no longer.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, b"");
}

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off_at_the_header_timeout() {
    let app = spawn_app_with(&[("header_timeout", "2")]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    // A byte every 200 ms: each arrives well within the timeout, the headers never end.
    let request = b"GET /healthz HTTP/1.1\r\nHost: tessera\r\nX-Slow: "
        .iter()
        .copied();
    let mut trickle = request.chain(std::iter::repeat(b'a'));
    let started = Instant::now();
    let mut closed = false;
    let mut buf = [0u8; 64];
    while started.elapsed() < BOUND {
        if s.write_all(&[trickle.next().unwrap()]).await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "unexpected response: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert!(closed, "a trickle of header bytes kept the connection open");
    assert!(started.elapsed() >= Duration::from_millis(1800));
}

#[tokio::test]
async fn a_token_request_whose_body_stalls_gets_408_and_the_connection_closes() {
    let app = spawn_app_with(&[("body_timeout", "1")]).await;
    let c = app.client("/ping.read", &[]);
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: tessera\r\nAuthorization: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
         grant_type=client_cre",
        basic(&c.id, &c.secret)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, body) = read_response(&mut s).await;
    assert_eq!(status, 408);
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "invalid_request",
            "error_description": "the request body was not received within 1 s"
        })
    );
    assert_eq!(read_until_closed(&mut s).await, b"");
    // The server goes on serving complete requests.
    app.grant(&c, "/ping.read").await;
}

#[tokio::test]
async fn an_admin_request_whose_body_stalls_gets_408_in_the_admin_shape() {
    let app = spawn_app_with(&[("body_timeout", "1")]).await;
    let mut s = TcpStream::connect(app.admin_addr).await.unwrap();
    let head = format!(
        "POST /admin/clients HTTP/1.1\r\nHost: tessera\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"name\": \"slow"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, body) = read_response(&mut s).await;
    assert_eq!(status, 408);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "invalid_request",
            "error_description": "the request body was not received within 1 s"
        })
    );
    assert_eq!(read_until_closed(&mut s).await, b"");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_while_an_active_one_keeps_working() {
    let app = spawn_app_with(&[("idle_timeout", "2"), ("header_timeout", "10")]).await;
    let mut idle = served_connection(app.addr).await;
    let mut active = served_connection(app.addr).await;
    // The active connection asks again every 300 ms, for longer than the idle timeout.
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        active.write_all(HEALTHZ).await.unwrap();
        let (status, headers, _) = read_response(&mut active).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "connection"), None);
        requests += 1;
    }
    assert!(requests >= 5);
    assert_eq!(
        read_until_closed(&mut idle).await,
        b"",
        "the idle one is closed"
    );
    // The active one is still open and served.
    active.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut active).await.0, 200);
}

/// The metric `name` with `labels` (e.g. `listener="public"`) from the admin `/metrics`. Only
/// for `tessera serve` processes: in-process apps share one recorder.
async fn metric(app_admin: SocketAddr, http: &reqwest::Client, name: &str, labels: &str) -> f64 {
    let text = http
        .get(format!("http://{app_admin}/metrics"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_service_resumes_below_it() {
    let app = spawn_app_with(&[
        ("max_connections", "4"),
        ("admin_max_connections", "2"),
        ("idle_timeout", "600"),
    ])
    .await;
    let c = app.client("/ping.read", &[]);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(served_connection(app.addr).await);
    }
    // A fifth connection is accepted and closed without an answer.
    let mut fifth = TcpStream::connect(app.addr).await.unwrap();
    let _ = fifth.write_all(HEALTHZ).await;
    assert_eq!(read_until_closed(&mut fifth).await, b"");
    // The admin listener has its own cap: it still answers.
    let ready = app
        .http
        .get(format!("http://{}/readyz", app.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The connections it holds are still served.
    held[0].write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut held[0]).await.0, 200);
    // Below the cap again, a new connection is served.
    drop(held.pop());
    let started = Instant::now();
    loop {
        let r = app
            .http
            .post(app.url("/oauth2/token"))
            .header("authorization", basic(&c.id, &c.secret))
            .header("content-type", FORM)
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("scope", "/ping.read"),
            ]))
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "no new connection served below the cap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn connections_that_fill_the_cap_with_partial_headers_are_freed_by_the_header_timeout() {
    let app = spawn_app_with(&[("max_connections", "3"), ("header_timeout", "2")]).await;
    let mut partial = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: ")
            .await
            .unwrap();
        partial.push(s);
    }
    let started = Instant::now();
    let served = loop {
        // A fresh client each time: a connection the cap refused is not reused.
        let http = reqwest::Client::new();
        if let Ok(r) = http.get(app.url("/healthz")).send().await {
            break r;
        }
        assert!(started.elapsed() < BOUND, "service did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(served.status(), 200);
    for mut s in partial {
        assert_eq!(read_until_closed(&mut s).await, b"");
    }
}

/// The real `tessera serve` under `ulimit -n 256`, on a fresh SQLite database, killed when
/// dropped.
struct LimitedServe {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
    admin: SocketAddr,
    serving: Value,
    client: TestClient,
    _dir: tempfile::TempDir,
}

impl Drop for LimitedServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LimitedServe {
    async fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = env!("CARGO_BIN_EXE_tessera");
        let db = format!("sqlite://{}", dir.path().join("t.db").display());
        let out = Command::new(bin)
            .args(["client", "create", "--name", "c", "--scope", "/ping.read"])
            .args(["--json", "--database-url", &db])
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_MASTER_KEY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        let client = TestClient {
            id: created["client_id"].as_str().unwrap().to_owned(),
            secret: created["client_secret"].as_str().unwrap().to_owned(),
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
            .arg(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json", "--database-url", &db])
            .args(args)
            .env("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TESSERA_RATE_LIMIT_PER_IP", "0")
            .env("TESSERA_LOG", "info")
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_MASTER_KEY")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if event["fields"]["message"] == "serving"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(event["fields"].clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let serving = match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(v)) => v,
            _ => panic!(
                "tessera serve did not start:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        let parse = |k: &str| serving[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
        Self {
            addr: parse("addr"),
            admin: parse("admin"),
            serving,
            child,
            log,
            client,
            _dir: dir,
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "tessera serve exited:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    /// Opens `n` connections to the public listener that send a partial request and nothing
    /// more. Connections the server refuses or has not yet accepted count the same: each is a
    /// descriptor or a backlog slot the peer holds.
    async fn hold(&self, n: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for _ in 0..n {
            let mut s = TcpStream::connect(self.addr).await.unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            held.push(s);
        }
        held
    }

    /// A token request on a fresh connection, retried until one succeeds (within [`BOUND`]).
    async fn token_eventually(&self) {
        let started = Instant::now();
        loop {
            let r = reqwest::Client::new()
                .post(format!("http://{}/oauth2/token", self.addr))
                .header("authorization", basic(&self.client.id, &self.client.secret))
                .header("content-type", FORM)
                .body(form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "/ping.read"),
                ]))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(r) = r {
                assert_eq!(r.status(), 200);
                return;
            }
            assert!(started.elapsed() < BOUND, "no token request succeeded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn readyz(&self, addr: SocketAddr) -> u16 {
        let started = Instant::now();
        loop {
            let r = reqwest::Client::new()
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(r) = r {
                return r.status().as_u16();
            }
            assert!(
                started.elapsed() < BOUND,
                "/readyz did not answer on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn three_hundred_idle_sockets_under_a_256_descriptor_limit_do_not_take_the_server_offline() {
    let mut serve = LimitedServe::start(&["--header-timeout", "60"]).await;
    // The automatic cap leaves the admin listener (64), the database (10) and 64 spare.
    assert_eq!(serve.serving["max_connections"], 256 - 64 - 10 - 64);
    let held = serve.hold(300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    serve.assert_alive();
    // While the peer holds them, the operator's listener answers, and a new connection to the
    // public one is refused rather than left hanging.
    assert_eq!(serve.readyz(serve.admin).await, 200);
    let http = reqwest::Client::new();
    let refused = metric(
        serve.admin,
        &http,
        "tessera_http_connections_refused_total",
        "listener=\"public\"",
    )
    .await;
    assert!(refused >= 1.0, "refused {refused}");
    let open = metric(
        serve.admin,
        &http,
        "tessera_http_connections",
        "listener=\"public\"",
    )
    .await;
    assert_eq!(open, 118.0);
    drop(held);
    serve.token_eventually().await;
    assert_eq!(serve.readyz(serve.addr).await, 200);
    serve.assert_alive();
    let log = serve.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("the connection caps exceed"),
        "the automatic cap fits the limit"
    );
    assert!(
        !log.contains("accepting connections failed"),
        "descriptors never ran out"
    );
}

#[tokio::test]
async fn running_out_of_descriptors_pauses_accepting_without_spinning_or_ending_the_listener() {
    // A cap the descriptor limit cannot honour: accept itself fails with EMFILE.
    let mut serve =
        LimitedServe::start(&["--max-connections", "1000", "--header-timeout", "60"]).await;
    let started = Instant::now();
    let held = serve.hold(300).await;
    // Exhaustion lasts a while: a spinning accept loop would fail thousands of times in it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    serve.assert_alive();
    drop(held);
    serve.token_eventually().await;
    assert_eq!(serve.readyz(serve.addr).await, 200);
    let http = reqwest::Client::new();
    let errors = metric(
        serve.admin,
        &http,
        "tessera_http_accept_errors_total",
        "listener=\"public\"",
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(errors >= 1.0, "descriptors never ran out");
    // One attempt per 100 ms backoff at most, with room to spare.
    assert!(
        errors <= 20.0 * elapsed + 20.0,
        "{errors} accept errors in {elapsed:.1} s: the accept loop spins"
    );
    let log = serve.log.lock().unwrap().join("\n");
    let warnings = log
        .lines()
        .filter(|l| l.contains("accepting connections failed"))
        .collect::<Vec<_>>();
    assert!(
        log.contains("the connection caps exceed what the descriptor limit"),
        "a cap the limit cannot honour is warned about at start-up"
    );
    assert!(!warnings.is_empty());
    assert!(
        warnings[0].contains("Too many open files"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings.len() as f64 <= elapsed / 10.0 + 1.0,
        "accept errors are logged at most once per 10 s: {warnings:?}"
    );
    drop(log);
    serve.assert_alive();
}
