//! `GET /admin/audit`: the audit trail, newest first, filtered and paged.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AdminResult;
use super::extract::{AdminQuery, next_cursor, page_limit};
use crate::domain::audit::{AuditEvent, AuditQuery};
use crate::http::AppState;
#[allow(unused_imports)]
use crate::http::openapi::GenericError;

/// A page of audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Events.
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only events about this client.
    client_id: Option<String>,
    /// Only this kind of event (e.g. `client.created`).
    event: Option<String>,
    /// Only events at or after this Unix time.
    since: Option<i64>,
    /// The `next` of the previous page: events older than this one.
    before: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/admin/audit", tag = "audit", params(AuditParams), responses((status = 200, body = AuditPage), (status = 400, description = "Bad query string: an unknown parameter, a value of the wrong type, or limit outside 1 to 1000", body = GenericError), (status = 401, description = "No or wrong admin token", body = GenericError), (status = 503, description = "Store unavailable", body = GenericError)))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    AdminQuery(p): AdminQuery<AuditParams>,
) -> AdminResult {
    let limit = page_limit(p.limit)?;
    let events = state
        .tessera
        .audit_events(&AuditQuery {
            client_id: p.client_id,
            event: p.event,
            since: p.since,
            before_id: p.before,
            limit,
        })
        .await?;
    let next = next_cursor(&events, limit, |e| &e.id);
    Ok(Json(AuditPage { events, next }).into_response())
}
