//! Lookups, batched: every token request reads its client; introspection and `/ping` read the
//! access token with its family, client and signing key; a refresh (and the introspection of a
//! refresh token) reads the refresh token with its family. The lookups of a kind waiting at the
//! same moment are one query ([`super::batch`]): each request still reads the database after it
//! arrived, so a client disabled or a token revoked a moment ago is seen, but PostgreSQL parses,
//! plans and runs one statement for many lookups instead of one each.

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};

use super::super::rows::{AccessRow, ClientRow, RefreshRow};
use super::super::{AccessRecord, StoreError, StoreResult};
use super::batch::BatchOp;
use super::map_err;
use crate::domain::client::Client;
use crate::domain::grant::RefreshRecord;

/// The columns of an access-token lookup, its revocation facts folded into `revoked` (token,
/// family, disabled client, revoked signing key), and the tables they come from after
/// `access_tokens a`.
macro_rules! access_columns {
    () => {
        "a.token_id, a.client_id, a.family_id, a.format, a.scope, a.audience, a.issued_at, \
         a.expires_at, (a.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL OR c.disabled \
         OR COALESCE(k.state = 'revoked', FALSE)) AS revoked, a.dpop_jkt "
    };
}
macro_rules! access_joins {
    () => {
        "JOIN token_families f ON f.family_id = a.family_id \
         JOIN clients c ON c.client_id = a.client_id \
         LEFT JOIN signing_keys k ON k.kid = a.signing_kid "
    };
}

/// One token lookup: by id, and (for an opaque token) only if the stored hash is this.
pub struct TokenLookup {
    /// The token id (the id inside an opaque token, or a JWT's `jti`).
    pub id: String,
    /// The presented opaque token's hash; `None` for a JWT, whose signature was checked.
    pub hash: Option<Vec<u8>>,
}

/// Clients by id.
pub struct ClientLookups;

impl BatchOp for ClientLookups {
    type Item = String;
    type Out = Option<Client>;
    const METRIC: (&'static str, &'static str, &'static str) =
        ("tessera_postgres_read_batch_size", "read", "client");
    const ONE_BY_ONE: bool = false;

    async fn many(pool: &PgPool, ids: &[&String]) -> StoreResult<Vec<StoreResult<Option<Client>>>> {
        let wanted: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        let rows: Vec<ClientRow> =
            sqlx::query_as("SELECT * FROM clients WHERE client_id = ANY($1)")
                .bind(&wanted)
                .fetch_all(pool)
                .await
                .map_err(map_err)?;
        let clients = rows
            .into_iter()
            .map(Client::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(ids
            .iter()
            .map(|id| Ok(clients.iter().find(|c| &c.id == *id).cloned()))
            .collect())
    }
}

/// Access tokens (introspection, `/ping`).
pub struct AccessLookups;

impl BatchOp for AccessLookups {
    type Item = TokenLookup;
    type Out = Option<AccessRecord>;
    const METRIC: (&'static str, &'static str, &'static str) =
        ("tessera_postgres_read_batch_size", "read", "access_token");
    const ONE_BY_ONE: bool = false;

    async fn many(
        pool: &PgPool,
        lookups: &[&TokenLookup],
    ) -> StoreResult<Vec<StoreResult<Option<AccessRecord>>>> {
        read_numbered::<AccessRow, _>(pool, READ_ACCESS_SQL, lookups).await
    }
}

/// Refresh tokens with their families.
pub struct RefreshLookups;

impl BatchOp for RefreshLookups {
    type Item = TokenLookup;
    type Out = Option<RefreshRecord>;
    const METRIC: (&'static str, &'static str, &'static str) =
        ("tessera_postgres_read_batch_size", "read", "refresh_token");
    const ONE_BY_ONE: bool = false;

    async fn many(
        pool: &PgPool,
        lookups: &[&TokenLookup],
    ) -> StoreResult<Vec<StoreResult<Option<RefreshRecord>>>> {
        read_numbered::<RefreshRow, _>(pool, READ_REFRESH_SQL, lookups).await
    }
}

/// The lookups of a batch as rows numbered from 1 (`WITH ORDINALITY`), for a join that keeps a
/// token only if its id and (when given) its hash match. The number says whose row it is: two
/// lookups of one id with different hashes must not share an answer.
macro_rules! numbered_lookups {
    () => {
        "FROM UNNEST($1::TEXT[], $2::BYTEA[]) WITH ORDINALITY AS p(token_id, token_hash, ord) "
    };
}

/// Access tokens (introspection, `/ping`).
const READ_ACCESS_SQL: &str = concat!(
    "SELECT p.ord, ",
    access_columns!(),
    numbered_lookups!(),
    "JOIN access_tokens a ON a.token_id = p.token_id \
     AND (p.token_hash IS NULL OR a.token_hash = p.token_hash) ",
    access_joins!()
);

/// Refresh tokens with their families (refresh, introspection); the columns of
/// [`RefreshRow`].
const READ_REFRESH_SQL: &str = concat!(
    "SELECT p.ord, r.family_id, r.client_id, r.scope, r.issued_at, r.expires_at, \
     r.consumed_at, (r.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL) AS revoked, \
     f.client_type, f.dpop_bound ",
    numbered_lookups!(),
    "JOIN refresh_tokens r ON r.token_id = p.token_id AND r.token_hash = p.token_hash \
     JOIN token_families f ON f.family_id = r.family_id"
);

/// A row of a numbered lookup: the lookup's number (`ord`) and the row.
struct Numbered<R> {
    ord: i64,
    row: R,
}

impl<'r, R: sqlx::FromRow<'r, PgRow>> sqlx::FromRow<'r, PgRow> for Numbered<R> {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            ord: row.try_get("ord")?,
            row: R::from_row(row)?,
        })
    }
}

/// Runs a numbered lookup `sql` for `lookups` and answers each with its own row, or nothing.
async fn read_numbered<Row, Rec>(
    pool: &PgPool,
    sql: &'static str,
    lookups: &[&TokenLookup],
) -> StoreResult<Vec<StoreResult<Option<Rec>>>>
where
    Row: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    Rec: TryFrom<Row, Error = StoreError>,
{
    let ids: Vec<&str> = lookups.iter().map(|l| l.id.as_str()).collect();
    let hashes: Vec<Option<&[u8]>> = lookups.iter().map(|l| l.hash.as_deref()).collect();
    let rows: Vec<Numbered<Row>> = sqlx::query_as(sql)
        .bind(&ids)
        .bind(&hashes)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    let mut answers: Vec<StoreResult<Option<Rec>>> = (0..lookups.len()).map(|_| Ok(None)).collect();
    for n in rows {
        let slot = usize::try_from(n.ord - 1)
            .ok()
            .and_then(|i| answers.get_mut(i));
        if let Some(slot) = slot {
            *slot = Rec::try_from(n.row).map(Some);
        }
    }
    Ok(answers)
}
