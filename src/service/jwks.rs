//! Clients' JWK Sets fetched from their `jwks_uri`, cached per URI.
//!
//! The server fetches a URL a client chose, so the fetch is bounded and fenced
//! (docs/security.md, "jwks_uri"):
//!
//! - **time**: [`FETCH_TIMEOUT`] for connecting and reading together;
//! - **size**: at most [`MAX_JWKS_BYTES`] of body, by `Content-Length` and as read;
//! - **where**: `https` only, and only to public addresses: every name is resolved by
//!   [`PublicOnly`], which drops loopback, private, link-local, shared, documentation,
//!   multicast and reserved addresses, so the check and the connection use the same addresses
//!   (no rebinding between them); an IP literal is checked the same way. Redirects (at most 3)
//!   obey the same rules. No proxy is used. The server setting `jwks_uri_allow_http` lifts
//!   both fences (plain http, any address) for tests and development;
//! - **how often**: a set is cached for its `Cache-Control: max-age`, clamped to
//!   [`MIN_MAX_AGE`]..[`MAX_MAX_AGE`] ([`DEFAULT_MAX_AGE`] without one, or with `no-cache` /
//!   `no-store`: the minimum). An assertion whose `kid` the cached set lacks (the client rotated
//!   its keys) refetches at once, but at most one such forced fetch per [`REFETCH_INTERVAL`]
//!   per URI, so that
//!   assertions with made-up key ids cannot make the server hammer the client's host.
//!
//! A fetched set is parsed leniently ([`JwkSet::parse_lenient`]): keys for other purposes are
//! skipped. A failed fetch is not cached and never falls back to an older copy: a client whose
//! keys cannot be read cannot authenticate (fail closed).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::jose::JwkSet;

/// The largest JWK Set body read.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Connecting and reading a JWK Set, together.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest time a fetched set is cached.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);

/// The longest time a fetched set is cached.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(3600);

/// How long a set without `Cache-Control: max-age` is cached.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// The shortest time between two fetches of one URI forced by an unknown `kid`.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The most URIs whose sets are cached; past it, the cache is emptied (sets are refetched).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    set: Arc<JwkSet>,
    fresh_until: Instant,
    /// The last fetch an unknown `kid` forced, if any.
    forced_at: Option<Instant>,
}

/// True for an address anyone on the internet could reach: not loopback, private (RFC 1918,
/// unique local), link-local, shared (RFC 6598), documentation, benchmarking, multicast,
/// broadcast, unspecified or reserved.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments().first().copied().unwrap_or(0);
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments().get(1) == Some(&0x0db8)
                || first == 0x0064)
        }
    }
}

/// A resolver that answers only public addresses ([`is_public`]).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Refuses a URL the fetcher must not go to: another scheme than https (http when allowed),
/// or an IP literal that is not public (when private addresses are not allowed).
fn check_target(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        other => {
            return Err(format!(
                "the jwks_uri (or a redirect) is {other}, not https"
            ));
        }
    }
    if !allow_private {
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| !is_public(ip)) {
            return Err("the jwks_uri (or a redirect) names a non-public address".into());
        }
    }
    Ok(())
}

/// `Cache-Control`'s `max-age`, clamped (see the module documentation).
fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    let Some(cc) = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return DEFAULT_MAX_AGE;
    };
    let mut age = None;
    for directive in cc.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return MIN_MAX_AGE;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age.unwrap_or(DEFAULT_MAX_AGE)
        .clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// Fetches and caches JWK Sets.
pub struct JwksFetcher {
    http: Option<reqwest::Client>,
    allow_private: bool,
    cache: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for JwksFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksFetcher")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl JwksFetcher {
    /// A fetcher; `allow_private` is the setting `jwks_uri_allow_http`.
    #[must_use]
    pub fn new(allow_private: bool) -> Self {
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                return attempt.error("more than 3 redirects");
            }
            match check_target(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect)
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(PublicOnly).https_only(true);
        }
        let http = match builder.build() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for jwks_uri; such clients cannot authenticate");
                None
            }
        };
        Self {
            http,
            allow_private,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn fresh(&self, uri: &str) -> Option<Arc<JwkSet>> {
        let cache = self.cache.lock().ok()?;
        let e = cache.get(uri)?;
        (Instant::now() < e.fresh_until).then(|| e.set.clone())
    }

    /// The set at `uri`: the cached copy while fresh, else fetched.
    ///
    /// # Errors
    /// Why it could not be fetched or parsed (safe to show to the client).
    pub async fn get(&self, uri: &str) -> Result<Arc<JwkSet>, String> {
        if let Some(set) = self.fresh(uri) {
            return Ok(set);
        }
        self.fetch(uri, None).await
    }

    /// Fetches the set at `uri` again, because an assertion names a key the cached copy lacks;
    /// `Ok(None)` when another forced fetch happened less than [`REFETCH_INTERVAL`] ago.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn refetch(&self, uri: &str) -> Result<Option<Arc<JwkSet>>, String> {
        let now = Instant::now();
        {
            // Checked and marked at once, so that concurrent assertions force one fetch.
            let Ok(mut cache) = self.cache.lock() else {
                return Ok(None);
            };
            if let Some(e) = cache.get_mut(uri) {
                if e.forced_at
                    .is_some_and(|at| now.duration_since(at) < REFETCH_INTERVAL)
                {
                    return Ok(None);
                }
                e.forced_at = Some(now);
            }
        }
        self.fetch(uri, Some(now)).await.map(Some)
    }

    async fn fetch(&self, uri: &str, forced_at: Option<Instant>) -> Result<Arc<JwkSet>, String> {
        let http = self
            .http
            .as_ref()
            .ok_or("the server cannot fetch jwks_uri (no HTTP client)")?;
        let url = reqwest::Url::parse(uri).map_err(|e| format!("the jwks_uri is invalid: {e}"))?;
        check_target(&url, self.allow_private)?;
        let started = Instant::now();
        let result = self.download(http, url).await;
        metrics::histogram!("tessera_jwks_fetch_duration_seconds", "outcome" => if result.is_ok() { "ok" } else { "error" })
            .record(started.elapsed().as_secs_f64());
        let (set, age) = result.inspect_err(|e| {
            tracing::info!(jwks_uri = %uri, error = %e, "could not fetch a client's JWK Set");
        })?;
        let set = Arc::new(set);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            let forced_at = forced_at.or_else(|| cache.get(uri).and_then(|e| e.forced_at));
            cache.insert(
                uri.to_owned(),
                Entry {
                    set: set.clone(),
                    fresh_until: Instant::now() + age,
                    forced_at,
                },
            );
        }
        Ok(set)
    }

    async fn download(
        &self,
        http: &reqwest::Client,
        url: reqwest::Url,
    ) -> Result<(JwkSet, Duration), String> {
        let mut response = http
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| format!("fetching the jwks_uri failed: {}", describe(&e)))?;
        if !response.status().is_success() {
            return Err(format!(
                "the jwks_uri answered HTTP {}",
                response.status().as_u16()
            ));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!(
                "the jwks_uri's JWK Set is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        let age = max_age(response.headers());
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the jwks_uri failed: {}", describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "the jwks_uri's JWK Set is larger than {MAX_JWKS_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| "the jwks_uri did not answer JSON".to_owned())?;
        let set = JwkSet::parse_lenient(&value)
            .map_err(|e| format!("the jwks_uri's JWK Set is not usable: {e}"))?;
        Ok((set, age))
    }
}

/// A fetch error without the URL (which the client knows) and without internals.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", FETCH_TIMEOUT.as_secs())
    } else if e.is_redirect() {
        "a redirect was refused".to_owned()
    } else if e.is_connect() {
        "could not connect (or the host has no public address)".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn max_age_is_clamped() {
        let h = |v: &str| {
            let mut m = reqwest::header::HeaderMap::new();
            m.insert(reqwest::header::CACHE_CONTROL, v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(h("max-age=5"), MIN_MAX_AGE);
        assert_eq!(h("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(h("max-age=999999"), MAX_MAX_AGE);
        assert_eq!(h("no-store"), MIN_MAX_AGE);
        assert_eq!(max_age(&reqwest::header::HeaderMap::new()), DEFAULT_MAX_AGE);
    }

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_target(&u("https://127.0.0.1/jwks"), false).is_err());
        assert!(check_target(&u("https://[::1]/jwks"), false).is_err());
        assert!(check_target(&u("http://keys.example/jwks"), false).is_err());
        assert!(check_target(&u("https://keys.example/jwks"), false).is_ok());
        assert!(check_target(&u("http://127.0.0.1:9/jwks"), true).is_ok());
    }
}
