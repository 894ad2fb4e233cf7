-- Tessera's schema on SQLite. Times are Unix seconds. Tokens and secrets are stored only as
-- hashes; signing keys only sealed under the master key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- `revision` is named by every update and bumped by it: an update made from a copy read before
-- another change fails (and the service reads again and reapplies its change) instead of
-- writing back the other change's fields.
CREATE TABLE clients (
    client_id                  TEXT PRIMARY KEY,
    name                       TEXT NOT NULL,
    secret_hash                BLOB NOT NULL,
    previous_secret_hash       BLOB,
    previous_secret_expires_at INTEGER,
    scopes                     TEXT NOT NULL,
    token_format               TEXT NOT NULL CHECK (token_format IN ('opaque', 'jwt')),
    profile                    TEXT CHECK (profile IN ('seed', 'moov', 'rfc6749')),
    access_ttl                 INTEGER,
    refresh_ttl                INTEGER,
    origins                    TEXT NOT NULL DEFAULT '',
    audience                   TEXT,
    disabled                   INTEGER NOT NULL DEFAULT 0,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL,
    -- '*' (every token) or an audience value (tokens addressed to it); NULL: own tokens only.
    resource_server            TEXT,
    -- Space-delimited resource indicators (RFC 8707) the client may request as audience.
    resources                  TEXT NOT NULL DEFAULT '',
    revision                   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- A family is every token descended from one client_credentials grant. Revoking it (reuse
-- detection, revoking a refresh token) revokes all of them with one row update.
CREATE TABLE token_families (
    family_id    TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,
    client_type  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    refreshed_at INTEGER,
    revoked_at   INTEGER,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX token_families_client ON token_families (client_id);
CREATE INDEX token_families_expiry ON token_families (expires_at);

-- Tokens are keyed by the id inside them (a UUID v7, time-ordered), and found by it with the
-- stored hash checked. Keyed by the hash, every new token landed on a random page of two
-- B-trees, which made each grant write about four times as many pages to the write-ahead log.
CREATE TABLE access_tokens (
    token_id    TEXT PRIMARY KEY,
    token_hash  BLOB NOT NULL,
    family_id   TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    format      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    audience    TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    -- The kid that signed a JWT access token (NULL for opaque tokens): revoking the key
    -- revokes its tokens at once, on every instance.
    signing_kid TEXT
) WITHOUT ROWID;
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
-- Only JWTs have a signing key: opaque tokens (NULL) stay out of this index.
CREATE INDEX access_tokens_kid ON access_tokens (signing_kid) WHERE signing_kid IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_id    TEXT PRIMARY KEY,
    token_hash  BLOB NOT NULL,
    family_id   TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    consumed_at INTEGER,
    revoked_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- The background cleanup finds its rows with `expires_at < ? OR revoked_at < ?`: with an index
-- for each half SQLite splits the OR across the two, so a batch never scans a table (it runs
-- inside the one writer's transaction, and a scan there stalls the token requests batched with
-- it). Partial: most rows are never revoked.
CREATE INDEX token_families_revoked ON token_families (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX access_tokens_revoked ON access_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired', 'revoked')),
    private_key     BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    activated_at    INTEGER,
    retired_at      INTEGER,
    -- A retired key stays in the JWKS until this time (every token it signed has expired).
    published_until INTEGER
) WITHOUT ROWID;

-- The audit trail: security-relevant events, never a secret or token.
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    client_id  TEXT,
    request_id TEXT,
    source     TEXT,
    detail     TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_client ON audit_events (client_id, id);
