-- Tessera's schema on PostgreSQL: the same tables, columns and rules as migrations/sqlite
-- (0001 + 0002), in PostgreSQL types. Times are Unix seconds (BIGINT). Tokens and secrets are
-- stored only as hashes (BYTEA); signing keys only sealed under the master key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE clients (
    client_id                  TEXT PRIMARY KEY,
    name                       TEXT NOT NULL,
    secret_hash                BYTEA NOT NULL,
    previous_secret_hash       BYTEA,
    previous_secret_expires_at BIGINT,
    scopes                     TEXT NOT NULL,
    token_format               TEXT NOT NULL CHECK (token_format IN ('opaque', 'jwt')),
    profile                    TEXT CHECK (profile IN ('seed', 'moov', 'rfc6749')),
    access_ttl                 BIGINT,
    refresh_ttl                BIGINT,
    origins                    TEXT NOT NULL DEFAULT '',
    audience                   TEXT,
    -- '*' (every token) or an audience value (tokens addressed to it); NULL: own tokens only.
    resource_server            TEXT,
    -- Space-delimited resource indicators (RFC 8707) the client may request as audience.
    resources                  TEXT NOT NULL DEFAULT '',
    disabled                   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL
);

-- A family is every token descended from one client_credentials grant. Revoking it (reuse
-- detection, revoking a refresh token) revokes all of them with one row update, and its row is
-- the lock that serialises a refresh against a revocation of the same family.
CREATE TABLE token_families (
    family_id    TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,
    client_type  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    refreshed_at BIGINT,
    revoked_at   BIGINT,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX token_families_client ON token_families (client_id);
CREATE INDEX token_families_expiry ON token_families (expires_at);
-- The cleanup finds revoked families by this (partial: most families are never revoked).
CREATE INDEX token_families_revoked ON token_families (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    consumed_at BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired', 'revoked')),
    private_key     BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    activated_at    BIGINT,
    retired_at      BIGINT,
    -- A retired key stays in the JWKS until this time (every token it signed has expired).
    published_until BIGINT
);
-- At most one active and one next key. SQLite gets this from its single writer; here several
-- instances may create the first key at the same moment, and these indexes decide who wins.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';

CREATE TABLE access_tokens (
    token_id    TEXT PRIMARY KEY,
    token_hash  BYTEA NOT NULL UNIQUE,
    family_id   TEXT NOT NULL REFERENCES token_families (family_id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    format      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    audience    TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    -- The kid that signed a JWT access token (NULL for opaque tokens): revoking the key revokes
    -- its tokens at once, on every instance.
    signing_kid TEXT
);
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
CREATE INDEX access_tokens_kid ON access_tokens (signing_kid);
CREATE INDEX access_tokens_revoked ON access_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
