//! Prometheus metrics, rendered on the admin listener at `/metrics`.
//!
//! Counters and histograms are recorded where things happen (`metrics::counter!` in the
//! service, the request envelope, the metered store); gauges that describe state (pool usage,
//! signing-key age) are set when the endpoint is scraped.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::jwt::KeyState;
use crate::service::Tessera;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets of the group writers' batch sizes (`*_batch_size`, in requests; at most 256 on
/// PostgreSQL). They used the latency buckets before, which put every batch of more than five
/// requests in `+Inf`.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_batch_size".into()),
                        BATCH_SIZE_BUCKETS,
                    )
                })
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Drains recorded histogram samples into their buckets. The recorder keeps every sample until
/// this runs, so it must run periodically whether or not anyone scrapes `/metrics`; otherwise
/// memory grows with every request.
pub fn upkeep() {
    if let Some(handle) = install() {
        handle.run_upkeep();
    }
}

/// The `/metrics` response.
pub fn render(tessera: &Tessera) -> Response {
    let Some(handle) = install() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are not available").into_response();
    };
    let pool = tessera.pool_stats();
    metrics::gauge!("tessera_store_pool_connections").set(f64::from(pool.size));
    metrics::gauge!("tessera_store_pool_idle_connections").set(f64::from(pool.idle));
    let now = tessera.now();
    for k in tessera.keyring().keys() {
        if k.state == KeyState::Active {
            #[allow(clippy::cast_precision_loss)]
            let age = (now - k.created_at).max(0) as f64;
            metrics::gauge!("tessera_signing_key_age_seconds", "alg" => k.key.alg().as_str())
                .set(age);
        }
    }
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
