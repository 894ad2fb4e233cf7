//! The audit trail on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::super::rows::AuditRow;
use super::super::{AuditStore, StoreResult};
use super::{SqliteStore, change, map_err};
use crate::domain::audit::{AuditEvent, AuditQuery};

pub(super) fn insert_audit(conn: &Connection, e: &AuditEvent) -> StoreResult<()> {
    change(
        conn,
        "INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.id,
            e.at,
            e.event,
            e.client_id,
            e.request_id,
            e.source,
            e.detail.to_string()
        ],
    )?;
    Ok(())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        let event = event.clone();
        self.group
            .write(move |conn| {
                insert_audit(conn, &event)?;
                Ok(((), true))
            })
            .await
    }
    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, event, client_id, request_id, source, detail FROM audit_events \
             WHERE (?1 IS NULL OR client_id = ?1) AND (?2 IS NULL OR event = ?2) \
             AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR id < ?4) \
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(&q.client_id)
        .bind(&q.event)
        .bind(q.since)
        .bind(&q.before_id)
        .bind(i64::from(q.limit.clamp(1, 1000)))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(AuditEvent::try_from).collect()
    }
}
