-- Tessera's schema on SQLite. Times are Unix seconds. Tokens and secrets are stored only as
-- hashes; signing keys only sealed under the master key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

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
    updated_at                 INTEGER NOT NULL
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

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    consumed_at INTEGER,
    revoked_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE access_tokens (
    token_id   TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    family_id  TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL,
    format     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    audience   TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired', 'revoked')),
    private_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    activated_at INTEGER,
    retired_at  INTEGER
) WITHOUT ROWID;
