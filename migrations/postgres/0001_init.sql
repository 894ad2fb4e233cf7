-- Tessera's schema on PostgreSQL: the same tables, columns and rules as migrations/sqlite, in
-- PostgreSQL types. Times are Unix seconds (BIGINT). Tokens and secrets are
-- stored only as hashes (BYTEA); signing keys only sealed under the master key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- `revision` is named by every update and bumped by it: an update made from a copy read before
-- another change fails (and the service reads again and reapplies its change) instead of
-- writing back the other change's fields.
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
    updated_at                 BIGINT NOT NULL,
    revision                   BIGINT NOT NULL DEFAULT 0
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

-- Tokens are keyed by the id inside them (a UUID v7, time-ordered), and found by it with the
-- stored hash checked. Keyed by the hash, every new token landed on a random leaf page of a
-- B-tree: under load each such page is dirtied at a random place, and the first change to a
-- page after a checkpoint writes the whole 8 KiB page to the WAL (full_page_writes).
-- Time-ordered keys append to the right-hand edge instead.
CREATE TABLE refresh_tokens (
    token_id    TEXT PRIMARY KEY,
    token_hash  BYTEA NOT NULL,
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
-- The background cleanup finds its rows with `expires_at < $1 OR revoked_at < $1`: with an
-- index for each half PostgreSQL combines the two (BitmapOr) instead of scanning the table.
-- Partial: most tokens are never revoked one by one.
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;

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
    token_hash  BYTEA NOT NULL,
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
-- Only JWTs have a signing key: opaque tokens (NULL) stay out of this index.
CREATE INDEX access_tokens_kid ON access_tokens (signing_kid) WHERE signing_kid IS NOT NULL;
CREATE INDEX access_tokens_revoked ON access_tokens (revoked_at) WHERE revoked_at IS NOT NULL;

-- The audit trail: security-relevant events, never a secret or token.
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    at         BIGINT NOT NULL,
    event      TEXT NOT NULL,
    client_id  TEXT,
    request_id TEXT,
    source     TEXT,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_client ON audit_events (client_id, id);
