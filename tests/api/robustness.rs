//! Nothing a client sends may cause a 5xx: a few hundred generated requests, well-formed and
//! not, against every public endpoint.

use crate::helpers::*;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn printable(&mut self, max: usize) -> String {
        let n = self.below(max);
        (0..n)
            .map(|_| char::from(0x20 + (self.next() % 95) as u8))
            .collect()
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test]
async fn generated_requests_never_cause_a_server_error() {
    generated_requests(spawn_app().await).await;
}

#[tokio::test]
async fn generated_requests_never_cause_a_server_error_on_postgres() {
    let Some(app) = spawn_app_pg(&[]).await else {
        return;
    };
    generated_requests(app).await;
}

async fn generated_requests(app: TestApp) {
    let c = app.client("/ping.read /accounts/*/profile.read", &[]);
    let t = app.grant(&c, "/ping.read").await;
    let at = t["access_token"].as_str().unwrap().to_owned();
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    let auth = basic(&c.id, &c.secret);
    let keys = [
        "grant_type",
        "scope",
        "refresh_token",
        "client_id",
        "client_secret",
        "client_type",
        "token",
        "token_type_hint",
        "x",
    ];
    let values = [
        "client_credentials",
        "refresh_token",
        "/ping.read",
        "/accounts/\u{0}/profile.read",
        "",
        " ",
        "%00",
        "\u{202e}",
        "/accounts/a/profile.read /ping.read",
        c.id.as_str(),
        c.secret.as_str(),
        at.as_str(),
        rt.as_str(),
        "tes_rt_AAAA",
        "a.b.c",
        "web",
        "access_token",
        "{",
        "null",
    ];
    let types = [
        FORM,
        JSON,
        "application/json; charset=latin1",
        "text/plain",
        "multipart/form-data",
        "",
    ];
    let mut g = Gen(0x5eed_1234_abcd_0001);
    for i in 0..400 {
        let path = g.pick(&["/oauth2/token", "/oauth2/revoke"]);
        let body: Vec<u8> = match g.below(4) {
            0 => g.bytes(300),
            1 => {
                let fields: Vec<(&str, &str)> = (0..g.below(6))
                    .map(|_| (g.pick(&keys), g.pick(&values)))
                    .collect();
                form(&fields).into_bytes()
            }
            2 => {
                let mut obj = serde_json::Map::new();
                for _ in 0..g.below(6) {
                    let v = match g.below(4) {
                        0 => serde_json::json!(g.pick(&values)),
                        1 => serde_json::json!(g.next() as i64),
                        2 => serde_json::json!([g.pick(&values)]),
                        _ => serde_json::Value::Null,
                    };
                    obj.insert(g.pick(&keys).to_owned(), v);
                }
                serde_json::Value::Object(obj).to_string().into_bytes()
            }
            _ => {
                let fields: Vec<(&str, &str)> = (0..g.below(6))
                    .map(|_| (g.pick(&keys), g.pick(&values)))
                    .collect();
                let mut s = form(&fields);
                s.push_str(&String::from_utf8_lossy(&g.bytes(20)));
                s.into_bytes()
            }
        };
        let ct = g.pick(&types);
        let garbage_auth = format!("Basic {}", g.printable(30));
        let authz = match g.below(4) {
            0 => Some(auth.as_str()),
            1 => Some("Basic Og=="),
            2 => Some(garbage_auth.as_str()),
            _ => None,
        };
        let mut headers = Vec::new();
        if let Some(a) = authz {
            headers.push(("authorization", a));
        }
        if g.below(5) == 0 {
            headers.push((
                "x-moov-version",
                g.pick(&["v2025.01.00", "v9", "latest", ""]),
            ));
        }
        if g.below(5) == 0 {
            headers.push(("origin", g.pick(&["https://a.test", "null", "::"])));
        }
        let r = app
            .post(path, (!ct.is_empty()).then_some(ct), body.clone(), &headers)
            .await;
        assert!(
            r.status < 500,
            "request {i} to {path} got {}: {} (body {:?})",
            r.status,
            r.text,
            String::from_utf8_lossy(&body)
        );
        assert_envelope(&r);
        if r.status >= 400 {
            assert!(
                r.text.is_empty() || serde_json::from_str::<serde_json::Value>(&r.text).is_ok(),
                "error bodies are JSON: {}",
                r.text
            );
        }
        let bearer = format!("Bearer {}", g.printable(60));
        let r = app.get("/ping", &[("authorization", &bearer)]).await;
        assert!(r.status < 500, "ping {i} got {}", r.status);
    }
}
