//! What every backend shares: how a stored row becomes a domain value, and how a client's or a
//! new token's fields are bound to a query.
//!
//! The SQL differs per database (placeholders, functions, locking), so each backend writes its
//! own statements; but both select the same column names, and the rows they return are decoded
//! here, once, with `sqlx::FromRow`. A stored value that does not parse is corruption
//! ([`StoreError::Other`]), never a client error.

use std::str::FromStr;

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use super::{AccessRecord, NewAccessToken, NewRefreshToken, StoreError, StoreResult, StoredKey};
use crate::domain::audit::AuditEvent;
use crate::domain::client::{Client, ClientAuth, ClientType, Profile, SecretHash, TokenFormat};
use crate::domain::clock::UnixTime;
use crate::domain::grant::RefreshRecord;
use crate::domain::scope::ScopePattern;

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Other(anyhow::anyhow!("stored {what} is invalid: {detail}"))
}

fn hash32(bytes: &[u8], what: &str) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| corrupt(what, "hash is not 32 bytes"))
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
}

/// Declares a row struct decoded by name through sqlx (`FromRow`) and by position through
/// `rusqlite` (the SQLite store's inline reads), from one field list, so the two decoders
/// cannot drift apart. `COLUMNS` lists the fields in that order, for statements that select
/// plain columns.
macro_rules! row {
    ($(#[$meta:meta])* $name:ident { $first:ident: $first_ty:ty $(, $field:ident: $ty:ty)* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, sqlx::FromRow)]
        pub(super) struct $name {
            $first: $first_ty,
            $($field: $ty,)*
        }

        impl $name {
            /// The fields' column names, in the order [`Self::from_rusqlite`] decodes them.
            #[allow(dead_code)]
            pub(super) const COLUMNS: &'static str =
                concat!(stringify!($first) $(, ", ", stringify!($field))*);

            /// Decodes a row read through `rusqlite` whose columns are in field order.
            pub(super) fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                let mut index = 0_usize..;
                let mut next = || index.next().unwrap_or_default();
                Ok(Self {
                    $first: row.get(next())?,
                    $($field: row.get(next())?,)*
                })
            }
        }
    };
}

row! {
    /// A `clients` row (`SELECT *`).
    ClientRow {
        client_id: String,
        name: String,
        secret_hash: Vec<u8>,
        previous_secret_hash: Option<Vec<u8>>,
        previous_secret_expires_at: Option<UnixTime>,
        scopes: String,
        token_format: String,
        profile: Option<String>,
        access_ttl: Option<i64>,
        refresh_ttl: Option<i64>,
        origins: String,
        audience: Option<String>,
        resource_server: Option<String>,
        resources: String,
        disabled: bool,
        created_at: UnixTime,
        updated_at: UnixTime,
        revision: i64,
        auth: String,
    }
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;

    fn try_from(row: ClientRow) -> StoreResult<Self> {
        Ok(Client {
            secret: SecretHash(hash32(&row.secret_hash, "client secret")?),
            previous_secret: match (row.previous_secret_hash, row.previous_secret_expires_at) {
                (Some(h), Some(until)) => Some((SecretHash(hash32(&h, "client secret")?), until)),
                _ => None,
            },
            scopes: words(&row.scopes).map(ScopePattern::from_stored).collect(),
            format: TokenFormat::from_str(&row.token_format).map_err(|e| corrupt("client", e))?,
            profile: row
                .profile
                .map(|p| Profile::from_str(&p))
                .transpose()
                .map_err(|e| corrupt("client", e))?,
            access_ttl: row.access_ttl.and_then(|v| u32::try_from(v).ok()),
            refresh_ttl: row.refresh_ttl.and_then(|v| u32::try_from(v).ok()),
            origins: words(&row.origins).map(str::to_owned).collect(),
            resources: words(&row.resources).map(str::to_owned).collect(),
            id: row.client_id,
            name: row.name,
            audience: row.audience,
            resource_server: row.resource_server,
            disabled: row.disabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
            revision: row.revision,
            auth: ClientAuth::from_stored(&row.auth).map_err(|e| corrupt("client auth", e))?,
        })
    }
}

/// Binds, in this order, the client columns between `client_id` and the timestamps: `name`,
/// `secret_hash`, `previous_secret_hash`, `previous_secret_expires_at`, `scopes`,
/// `token_format`, `profile`, `access_ttl`, `refresh_ttl`, `origins`, `audience`,
/// `resource_server`, `resources`, `disabled`, `auth` (15 values). Insert and update both use
/// it.
pub(super) fn bind_client_fields<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    c: &Client,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<Vec<u8>>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
{
    let scopes = c
        .scopes
        .iter()
        .map(ScopePattern::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    query
        .bind(c.name.clone())
        .bind(c.secret.0.to_vec())
        .bind(c.previous_secret.as_ref().map(|(h, _)| h.0.to_vec()))
        .bind(c.previous_secret.as_ref().map(|(_, t)| *t))
        .bind(scopes)
        .bind(c.format.as_str().to_owned())
        .bind(c.profile.map(|p| p.as_str().to_owned()))
        .bind(c.access_ttl.map(i64::from))
        .bind(c.refresh_ttl.map(i64::from))
        .bind(c.origins.join(" "))
        .bind(c.audience.clone())
        .bind(c.resource_server.clone())
        .bind(c.resources.join(" "))
        .bind(c.disabled)
        .bind(c.auth.to_stored())
}

/// Binds, in this order, a new access token's columns: `token_id`, `token_hash`, `family_id`,
/// `client_id`, `format`, `scope`, `audience`, `issued_at`, `expires_at`, `signing_kid`. Its
/// `dpop_jkt` is bound by each statement after the audit event (see the PostgreSQL grants and
/// rotations), so that the placeholders before it keep their numbers.
pub(super) fn bind_access_token<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    a: &NewAccessToken,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(a.id.clone())
        .bind(a.hash.0.to_vec())
        .bind(a.family_id.clone())
        .bind(a.client_id.clone())
        .bind(a.format.as_str().to_owned())
        .bind(a.scope.clone())
        .bind(a.audience.clone())
        .bind(a.issued_at)
        .bind(a.expires_at)
        .bind(a.signing_kid.clone())
}

/// Binds, in this order, a new refresh token's columns: `token_id`, `token_hash`,
/// `family_id`, `client_id`, `scope`, `issued_at`, `expires_at`.
pub(super) fn bind_refresh_token<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    r: &NewRefreshToken,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(r.id.clone())
        .bind(r.hash.0.to_vec())
        .bind(r.family_id.clone())
        .bind(r.client_id.clone())
        .bind(r.scope.clone())
        .bind(r.issued_at)
        .bind(r.expires_at)
}

row! {
    /// A refresh token joined with its family: `family_id`, `client_id`, `scope`, `issued_at`,
    /// `expires_at`, `consumed_at`, `revoked` (token or family), `client_type`, `dpop_bound`.
    RefreshRow {
        family_id: String,
        client_id: String,
        scope: String,
        issued_at: UnixTime,
        expires_at: UnixTime,
        consumed_at: Option<UnixTime>,
        revoked: bool,
        client_type: String,
        dpop_bound: bool,
    }
}

impl TryFrom<RefreshRow> for RefreshRecord {
    type Error = StoreError;

    fn try_from(row: RefreshRow) -> StoreResult<Self> {
        Ok(RefreshRecord {
            client_type: ClientType::parse(&row.client_type).map_err(|e| corrupt("family", e))?,
            family_id: row.family_id,
            client_id: row.client_id,
            scope: row.scope,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            consumed_at: row.consumed_at,
            revoked: row.revoked,
            dpop_bound: row.dpop_bound,
        })
    }
}

row! {
    /// An access token with its revocation facts folded into `revoked` (token, family, disabled
    /// client, revoked signing key).
    AccessRow {
        token_id: String,
        client_id: String,
        family_id: String,
        format: String,
        scope: String,
        audience: String,
        issued_at: UnixTime,
        expires_at: UnixTime,
        revoked: bool,
        dpop_jkt: Option<String>,
    }
}

impl TryFrom<AccessRow> for AccessRecord {
    type Error = StoreError;

    fn try_from(row: AccessRow) -> StoreResult<Self> {
        Ok(AccessRecord {
            format: TokenFormat::from_str(&row.format).map_err(|e| corrupt("access token", e))?,
            id: row.token_id,
            client_id: row.client_id,
            family_id: row.family_id,
            scope: row.scope,
            audience: row.audience,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            revoked: row.revoked,
            dpop_jkt: row.dpop_jkt,
        })
    }
}

/// A `signing_keys` row: `kid`, `alg`, `state`, `private_key`, `created_at`,
/// `published_until`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyRow {
    kid: String,
    alg: String,
    state: String,
    private_key: Vec<u8>,
    created_at: UnixTime,
    published_until: Option<UnixTime>,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> StoreResult<Self> {
        Ok(StoredKey {
            state: row.state.parse().map_err(|e| corrupt("key state", e))?,
            kid: row.kid,
            alg: row.alg,
            sealed_private_key: row.private_key,
            created_at: row.created_at,
            published_until: row.published_until,
        })
    }
}

/// Binds, in this order, an audit event's columns: `id`, `at`, `event`, `client_id`,
/// `request_id`, `source`, `detail` (JSON text).
pub(super) fn bind_audit_event<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    e: &AuditEvent,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(e.id.clone())
        .bind(e.at)
        .bind(e.event.clone())
        .bind(e.client_id.clone())
        .bind(e.request_id.clone())
        .bind(e.source.clone())
        .bind(e.detail.to_string())
}

/// An `audit_events` row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AuditRow {
    id: String,
    at: UnixTime,
    event: String,
    client_id: Option<String>,
    request_id: Option<String>,
    source: Option<String>,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> StoreResult<Self> {
        Ok(AuditEvent {
            id: row.id,
            at: row.at,
            event: row.event,
            client_id: row.client_id,
            request_id: row.request_id,
            source: row.source,
            detail: serde_json::from_str(&row.detail).map_err(|e| corrupt("audit event", e))?,
        })
    }
}
