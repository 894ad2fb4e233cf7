//! Grants: a new family with its first access and refresh tokens and its audit event, as one
//! statement for one grant and one for a batch.
//!
//! A `client_credentials` grant is four inserts. As one statement per grant, PostgreSQL spends
//! most of its time not on the rows but around them: opening four tables and their indexes,
//! building an executor, and flushing its write-ahead log at each commit (profiled in
//! docs/benchmarks-history.md). So grants waiting at the same moment are written together ([`super::batch`]):
//! one statement that inserts every family, access token, refresh token and audit event of the
//! batch from arrays (`UNNEST`), and one commit. A caller is answered only after that commit, so
//! a `2xx` still means the grant is durable.

use sqlx::postgres::PgPool;

use super::super::rows::{bind_access_token, bind_audit_event, bind_refresh_token};
use super::super::{NewAccessToken, NewFamily, NewRefreshToken, StoreResult};
use super::audit::bind_audit_events;
use super::batch::BatchOp;
use super::map_err;
use crate::domain::audit::AuditEvent;

/// One grant to write.
pub struct Grant {
    /// The new family.
    pub family: NewFamily,
    /// Its access token.
    pub access: NewAccessToken,
    /// Its refresh token.
    pub refresh: NewRefreshToken,
    /// The audit event.
    pub audit: AuditEvent,
}

/// Grants, batched.
pub struct Grants;

impl BatchOp for Grants {
    type Item = Grant;
    type Out = ();
    const METRIC: (&'static str, &'static str, &'static str) =
        ("tessera_postgres_batch_size", "write", "grant");
    const ONE_BY_ONE: bool = true;

    async fn many(pool: &PgPool, grants: &[&Grant]) -> StoreResult<Vec<StoreResult<()>>> {
        insert_many(pool, grants).await?;
        Ok(grants.iter().map(|_| Ok(())).collect())
    }

    /// [`ISSUE_SQL`].
    async fn one(pool: &PgPool, g: &Grant) -> StoreResult<()> {
        let query = sqlx::query(ISSUE_SQL)
            .bind(&g.family.id)
            .bind(&g.family.client_id)
            .bind(&g.family.scope)
            .bind(g.family.client_type.as_str())
            .bind(g.family.created_at)
            .bind(g.access.expires_at.max(g.refresh.expires_at));
        let query = bind_refresh_token(bind_access_token(query, &g.access), &g.refresh);
        bind_audit_event(query, &g.audit)
            .bind(g.access.dpop_jkt.clone())
            .bind(g.family.dpop_bound)
            .execute(pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// Issues a grant: family ($1–$6), access token ($7–$16), refresh token ($17–$23), audit
/// event ($24–$30), then the access token's `dpop_jkt` ($31) and the family's `dpop_bound`
/// ($32).
const ISSUE_SQL: &str = "WITH family AS (\
     INSERT INTO token_families (family_id, client_id, scope, client_type, created_at, expires_at, \
     dpop_bound) VALUES ($1, $2, $3, $4, $5, $6, $32)), \
     access AS (\
     INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
     audience, issued_at, expires_at, signing_kid, dpop_jkt) \
     VALUES ($7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $31)), \
     refresh AS (\
     INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
     expires_at) VALUES ($17, $18, $19, $20, $21, $22, $23)) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     VALUES ($24, $25, $26, $27, $28, $29, $30)";

/// Every grant of the batch in one statement: family, access token, refresh token and audit
/// event rows from arrays, in the column orders and placeholder numbers of the one-grant
/// statement.
const INSERT_MANY_SQL: &str = "WITH family AS (\
     INSERT INTO token_families (family_id, client_id, scope, client_type, created_at, expires_at, \
     dpop_bound) \
     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], \
     $6::BIGINT[], $32::BOOLEAN[])), \
     access AS (\
     INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
     audience, issued_at, expires_at, signing_kid, dpop_jkt) \
     SELECT * FROM UNNEST($7::TEXT[], $8::BYTEA[], $9::TEXT[], $10::TEXT[], $11::TEXT[], \
     $12::TEXT[], $13::TEXT[], $14::BIGINT[], $15::BIGINT[], $16::TEXT[], $31::TEXT[])), \
     refresh AS (\
     INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
     expires_at) \
     SELECT * FROM UNNEST($17::TEXT[], $18::BYTEA[], $19::TEXT[], $20::TEXT[], $21::TEXT[], \
     $22::BIGINT[], $23::BIGINT[])) \
     INSERT INTO audit_events (id, at, event, client_id, request_id, source, detail) \
     SELECT * FROM UNNEST($24::TEXT[], $25::BIGINT[], $26::TEXT[], $27::TEXT[], $28::TEXT[], \
     $29::TEXT[], $30::TEXT[])";

async fn insert_many(pool: &PgPool, batch: &[&Grant]) -> StoreResult<()> {
    let grants = || batch.iter().copied();
    let text = |f: fn(&Grant) -> &str| grants().map(|g| f(g).to_owned()).collect::<Vec<_>>();
    let int = |f: fn(&Grant) -> i64| grants().map(f).collect::<Vec<_>>();
    let query = sqlx::query(INSERT_MANY_SQL)
        .bind(text(|g| &g.family.id))
        .bind(text(|g| &g.family.client_id))
        .bind(text(|g| &g.family.scope))
        .bind(text(|g| g.family.client_type.as_str()))
        .bind(int(|g| g.family.created_at))
        .bind(int(|g| g.access.expires_at.max(g.refresh.expires_at)));
    let successors: Vec<_> = grants()
        .map(|g| (&g.access, &g.refresh, &g.audit))
        .collect();
    bind_successors(query, &successors)
        .bind(grants().map(|g| g.family.dpop_bound).collect::<Vec<_>>())
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Binds the access tokens, refresh tokens and audit events of a batch as ten, seven and seven
/// arrays, in the column orders of the one-grant statement (`$7`–`$30` of both batch
/// statements), then the access tokens' `dpop_jkt` (`$31`).
pub(super) fn bind_successors<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[(&NewAccessToken, &NewRefreshToken, &AuditEvent)],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let access = || rows.iter().map(|r| r.0);
    let refresh = || rows.iter().map(|r| r.1);
    let owned = |s: &str| s.to_owned();
    let query = query
        .bind(access().map(|a| a.id.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.hash.0.to_vec()).collect::<Vec<_>>())
        .bind(access().map(|a| a.family_id.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.client_id.clone()).collect::<Vec<_>>())
        .bind(
            access()
                .map(|a| owned(a.format.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(access().map(|a| a.scope.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.audience.clone()).collect::<Vec<_>>())
        .bind(access().map(|a| a.issued_at).collect::<Vec<_>>())
        .bind(access().map(|a| a.expires_at).collect::<Vec<_>>())
        .bind(access().map(|a| a.signing_kid.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.id.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.hash.0.to_vec()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.family_id.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.client_id.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.scope.clone()).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.issued_at).collect::<Vec<_>>())
        .bind(refresh().map(|r| r.expires_at).collect::<Vec<_>>());
    let events: Vec<&AuditEvent> = rows.iter().map(|r| r.2).collect();
    bind_audit_events(query, &events).bind(access().map(|a| a.dpop_jkt.clone()).collect::<Vec<_>>())
}
