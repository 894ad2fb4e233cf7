//! Rate limits on the token, revoke and introspect endpoints (GCRA, via `governor`).
//!
//! - per source address, before authentication (`rate_limit_per_ip`, default 200/s);
//! - per client, after authentication (`rate_limit_per_client`, default 40/s, Moov's limit);
//! - failed authentications per (client id, source address) (`auth_failures_per_minute`,
//!   default 10). Past that, a *wrong* secret is answered `429` instead of `401`, so guessing
//!   is slowed down — but the secret is still checked, so the legitimate client, presenting
//!   the right secret, is never locked out by someone else's failures.
//!
//! Each refusal is `429` with `Retry-After` (whole seconds, at least 1). Limits are per
//! instance; with several instances behind a load balancer the effective limit is the sum.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

/// The limiters of one instance.
pub struct Limits {
    per_ip: Option<DefaultKeyedRateLimiter<String>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    auth_failures: Option<DefaultKeyedRateLimiter<(String, String)>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

/// A refusal: retry after this long.
#[derive(Debug, Clone, Copy)]
pub struct Limited(pub Duration);

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "error": "too_many_requests",
                "error_description": format!("rate limit exceeded; retry after {secs} s"),
            })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: Option<&DefaultKeyedRateLimiter<K>>,
    key: &K,
    scope: &'static str,
) -> Result<(), Limited> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        metrics::counter!("tessera_rate_limited_total", "scope" => scope).increment(1);
        Limited(not_until.wait_time_from(DefaultClock::default().now()))
    })
}

impl Limits {
    /// Limiters with these quotas; 0 disables one.
    #[must_use]
    pub fn new(per_ip: u32, per_client: u32, auth_failures_per_minute: u32) -> Self {
        Self {
            per_ip: NonZeroU32::new(per_ip).map(|n| RateLimiter::keyed(Quota::per_second(n))),
            per_client: NonZeroU32::new(per_client)
                .map(|n| RateLimiter::keyed(Quota::per_second(n))),
            auth_failures: NonZeroU32::new(auth_failures_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// Counts a request from `source`.
    ///
    /// # Errors
    /// [`Limited`] when the source is over its rate.
    pub fn source(&self, source: Option<&str>) -> Result<(), Limited> {
        check(
            self.per_ip.as_ref(),
            &source.unwrap_or("?").to_owned(),
            "ip",
        )
    }

    /// Counts a request by an authenticated client.
    ///
    /// # Errors
    /// [`Limited`] when the client is over its rate.
    pub fn client(&self, client_id: &str) -> Result<(), Limited> {
        check(self.per_client.as_ref(), &client_id.to_owned(), "client")
    }

    /// Counts a failed authentication for `client_id` from `source`.
    ///
    /// # Errors
    /// [`Limited`] when this pair has failed too often: answer 429 instead of 401.
    pub fn auth_failure(&self, client_id: &str, source: Option<&str>) -> Result<(), Limited> {
        let key = (
            client_id.chars().take(128).collect(),
            source.unwrap_or("?").to_owned(),
        );
        check(self.auth_failures.as_ref(), &key, "auth_failures")
    }

    /// Forgets idle keys, so memory stays bounded.
    pub fn forget_idle(&self) {
        for l in [&self.per_ip, &self.per_client].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.auth_failures {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
