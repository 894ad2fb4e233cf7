//! The audit trail on PostgreSQL.

use async_trait::async_trait;

use sqlx::{Postgres, Transaction};

use super::super::rows::{AuditRow, bind_audit_event};
use super::super::{AuditStore, StoreResult};
use super::{PostgresStore, map_err, storable};
use crate::domain::audit::{AuditEvent, AuditQuery};

pub(super) const INSERT_AUDIT_SQL: &str = "INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(super) async fn insert_audit(
    tx: &mut Transaction<'static, Postgres>,
    e: &AuditEvent,
) -> StoreResult<()> {
    bind_audit_event(sqlx::query(INSERT_AUDIT_SQL), e)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Binds audit events as seven arrays, in the column order of `audit_events`.
pub(super) fn bind_audit_events<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &[&AuditEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let audit = || events.iter();
    query
        .bind(audit().map(|e| e.id.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.at).collect::<Vec<_>>())
        .bind(audit().map(|e| e.event.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.client_id.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.request_id.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.source.clone()).collect::<Vec<_>>())
        .bind(audit().map(|e| e.detail.to_string()).collect::<Vec<_>>())
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.written(async {
            bind_audit_event(sqlx::query(INSERT_AUDIT_SQL), event)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let texts = [
            q.client_id.as_deref(),
            q.event.as_deref(),
            q.before_id.as_deref(),
        ];
        if texts.into_iter().flatten().any(|t| !storable(t)) {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut conn = self.conn().await?;
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT id, at, event, client_id, request_id, source, detail FROM audit_events \
                 WHERE ($1::TEXT IS NULL OR client_id = $1) AND ($2::TEXT IS NULL OR event = $2) \
                 AND ($3::BIGINT IS NULL OR at >= $3) AND ($4::TEXT IS NULL OR id < $4) \
                 ORDER BY id DESC LIMIT $5",
            )
            .bind(&q.client_id)
            .bind(&q.event)
            .bind(q.since)
            .bind(&q.before_id)
            .bind(i64::from(q.limit.clamp(1, 1000)))
            .fetch_all(&mut *conn)
            .await
            .map_err(map_err)?;
            rows.into_iter().map(AuditEvent::try_from).collect()
        })
        .await
    }
}
