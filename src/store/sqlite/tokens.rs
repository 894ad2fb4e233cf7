//! Tokens on SQLite: every hot-path write is a job of the group writer ([`super::writer`]);
//! lookups are point reads ([`super::reads`]).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::super::rows::{AccessRow, RefreshRow};
use super::super::{
    AccessKey, AccessRecord, NewAccessToken, NewFamily, NewRefreshToken, RotateOutcome,
    StoreResult, TokenStore,
};
use super::audit::insert_audit;
use super::{SqliteStore, change, writer_err};
use crate::domain::audit::AuditEvent;
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::token::TokenRef;

fn insert_access(conn: &Connection, a: &NewAccessToken) -> StoreResult<()> {
    change(
        conn,
        "INSERT INTO access_tokens (token_id, token_hash, family_id, client_id, format, scope, \
         audience, issued_at, expires_at, signing_kid, dpop_jkt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            a.id,
            &a.hash.0[..],
            a.family_id,
            a.client_id,
            a.format.as_str(),
            a.scope,
            a.audience,
            a.issued_at,
            a.expires_at,
            a.signing_kid,
            a.dpop_jkt
        ],
    )?;
    Ok(())
}

fn insert_refresh(conn: &Connection, r: &NewRefreshToken) -> StoreResult<()> {
    change(
        conn,
        "INSERT INTO refresh_tokens (token_id, token_hash, family_id, client_id, scope, issued_at, \
         expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            r.id,
            &r.hash.0[..],
            r.family_id,
            r.client_id,
            r.scope,
            r.issued_at,
            r.expires_at
        ],
    )?;
    Ok(())
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn issue(
        &self,
        family: &NewFamily,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let (family, access, refresh, audit) = (
            family.clone(),
            access.clone(),
            refresh.clone(),
            audit.clone(),
        );
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "INSERT INTO token_families (family_id, client_id, scope, client_type, \
                     created_at, expires_at, dpop_bound) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        family.id,
                        family.client_id,
                        family.scope,
                        family.client_type.as_str(),
                        family.created_at,
                        access.expires_at.max(refresh.expires_at),
                        family.dpop_bound
                    ],
                )?;
                insert_access(conn, &access)?;
                insert_refresh(conn, &refresh)?;
                insert_audit(conn, &audit)?;
                Ok(((), true))
            })
            .await
    }
    async fn find_refresh(&self, token: &TokenRef) -> StoreResult<Option<RefreshRecord>> {
        let id = &token.id;
        let row = self.point_reads.read(|conn| {
            conn.prepare_cached(
                "SELECT r.family_id, r.client_id, r.scope, r.issued_at, r.expires_at, r.consumed_at, \
                 (r.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL) AS revoked, f.client_type, \
                 f.dpop_bound FROM refresh_tokens r JOIN token_families f ON f.family_id = r.family_id \
                 WHERE r.token_id = ?1 AND r.token_hash = ?2",
            )?
            .query_row(params![id, &token.hash.0[..]], RefreshRow::from_rusqlite)
            .optional()
        })?;
        row.map(RefreshRecord::try_from).transpose()
    }
    async fn rotate_refresh(
        &self,
        old: &TokenRef,
        reuse_cutoff: UnixTime,
        access: &NewAccessToken,
        refresh: &NewRefreshToken,
        audit: &AuditEvent,
    ) -> StoreResult<RotateOutcome> {
        let (old_id, old_hash) = (old.id.clone(), old.hash);
        let (access, refresh, audit) = (access.clone(), refresh.clone(), audit.clone());
        self.group
            .write(move |conn| {
                let now = refresh.issued_at;
                // Check first, write after: a lost race then writes nothing at all, which lets
                // the batch skip savepoints (see `writer.rs`). Nothing can change in between:
                // this thread is the only writer while its transaction is open.
                let usable: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM refresh_tokens r \
                         JOIN token_families f ON f.family_id = r.family_id \
                         WHERE r.token_id = ?1 AND r.token_hash = ?2 AND r.family_id = ?3 \
                         AND r.revoked_at IS NULL AND f.revoked_at IS NULL \
                         AND (r.consumed_at IS NULL OR r.consumed_at >= ?4))",
                    )
                    .and_then(|mut st| {
                        st.query_row(
                            params![old_id, &old_hash.0[..], refresh.family_id, reuse_cutoff],
                            |row| row.get(0),
                        )
                    })
                    .map_err(writer_err)?;
                if !usable {
                    return Ok((RotateOutcome::Lost, false));
                }
                let family = change(
                    conn,
                    "UPDATE token_families SET refreshed_at = ?1, expires_at = MAX(expires_at, ?2) \
                     WHERE family_id = ?3 AND revoked_at IS NULL",
                    params![
                        now,
                        access.expires_at.max(refresh.expires_at),
                        refresh.family_id
                    ],
                )?;
                let consumed = change(
                    conn,
                    "UPDATE refresh_tokens SET consumed_at = COALESCE(consumed_at, ?1) \
                     WHERE token_id = ?2 AND token_hash = ?3 AND family_id = ?4 \
                     AND revoked_at IS NULL AND (consumed_at IS NULL OR consumed_at >= ?5)",
                    params![
                        now,
                        old_id,
                        &old_hash.0[..],
                        refresh.family_id,
                        reuse_cutoff
                    ],
                )?;
                if family != 1 || consumed != 1 {
                    // Cannot happen after the check above; undone all the same.
                    return Ok((RotateOutcome::Lost, false));
                }
                insert_access(conn, &access)?;
                insert_refresh(conn, &refresh)?;
                insert_audit(conn, &audit)?;
                Ok((RotateOutcome::Rotated, true))
            })
            .await
    }
    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        let (family_id, audit) = (family_id.to_owned(), audit.clone());
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "UPDATE token_families SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
                    params![now, family_id],
                )?;
                insert_audit(conn, &audit)?;
                Ok(((), true))
            })
            .await
    }
    async fn find_access(&self, key: AccessKey<'_>) -> StoreResult<Option<AccessRecord>> {
        macro_rules! select_access {
            ($where:literal) => {
                concat!(
                    "SELECT a.token_id, a.client_id, a.family_id, a.format, a.scope, a.audience, \
                     a.issued_at, a.expires_at, \
                     (a.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL OR c.disabled != 0 \
                      OR COALESCE(k.state = 'revoked', 0)) AS revoked, a.dpop_jkt \
                     FROM access_tokens a \
                     JOIN token_families f ON f.family_id = a.family_id \
                     JOIN clients c ON c.client_id = a.client_id \
                     LEFT JOIN signing_keys k ON k.kid = a.signing_kid ",
                    $where
                )
            };
        }
        let row = self.point_reads.read(|conn| match key {
            AccessKey::Opaque(TokenRef { id, hash }) => conn
                .prepare_cached(select_access!(
                    "WHERE a.token_id = ?1 AND a.token_hash = ?2"
                ))?
                .query_row(params![id, &hash.0[..]], AccessRow::from_rusqlite)
                .optional(),
            AccessKey::Id(id) => conn
                .prepare_cached(select_access!("WHERE a.token_id = ?1"))?
                .query_row([id], AccessRow::from_rusqlite)
                .optional(),
        })?;
        row.map(AccessRecord::try_from).transpose()
    }
    async fn revoke_access(&self, id: &str, now: UnixTime, audit: &AuditEvent) -> StoreResult<()> {
        let (id, audit) = (id.to_owned(), audit.clone());
        self.group
            .write(move |conn| {
                change(
                    conn,
                    "UPDATE access_tokens SET revoked_at = ?1 WHERE token_id = ?2 AND revoked_at IS NULL",
                    params![now, id],
                )?;
                insert_audit(conn, &audit)?;
                Ok(((), true))
            })
            .await
    }
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let (client_id, audit) = (client_id.to_owned(), audit.clone());
        self.group
            .write(move |conn| {
                let n = change(
                    conn,
                    "UPDATE token_families SET revoked_at = ?1 WHERE client_id = ?2 AND revoked_at IS NULL",
                    params![now, client_id],
                )?;
                insert_audit(conn, &audit)?;
                Ok((n as u64, true))
            })
            .await
    }
    async fn revoke_issued_before(
        &self,
        before: UnixTime,
        now: UnixTime,
        audit: &AuditEvent,
    ) -> StoreResult<u64> {
        let audit = audit.clone();
        self.group
            .write(move |conn| {
                let access = change(
                    conn,
                    "UPDATE access_tokens SET revoked_at = ?1 WHERE issued_at < ?2 AND revoked_at IS NULL",
                    params![now, before],
                )?;
                let refresh = change(
                    conn,
                    "UPDATE refresh_tokens SET revoked_at = ?1 WHERE issued_at < ?2 AND revoked_at IS NULL",
                    params![now, before],
                )?;
                insert_audit(conn, &audit)?;
                Ok(((access + refresh) as u64, true))
            })
            .await
    }
}
