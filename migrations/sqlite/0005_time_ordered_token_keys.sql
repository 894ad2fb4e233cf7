-- Opaque tokens now carry their id (a UUID v7), and the store finds them by it, checking the
-- stored hash. Keyed by the hash, every new token landed on a random page of two B-trees
-- (`refresh_tokens` primary key, `access_tokens.token_hash` unique index), which made each grant
-- write about four times as many pages to the write-ahead log as time-ordered keys do.
--
-- Tokens minted before this migration carry no id and keep working until they expire:
--   * a refresh token's row gets the id `h:` || hex(hash), which the store computes from a
--     presented id-less token;
--   * an access token keeps its id (introspection reports it as `jti`) and stays findable by
--     hash through a partial index that holds only those rows, so new rows never touch it.
-- Both tables are rebuilt (SQLite cannot drop a primary key or a UNIQUE constraint in place).

CREATE TABLE refresh_tokens_new (
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
INSERT INTO refresh_tokens_new
    SELECT 'h:' || lower(hex(token_hash)), token_hash, family_id, client_id, scope, issued_at,
           expires_at, consumed_at, revoked_at
    FROM refresh_tokens;
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_new RENAME TO refresh_tokens;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

CREATE TABLE access_tokens_new (
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
    signing_kid TEXT,
    -- 1 for an opaque token minted before ids were embedded: found by its hash.
    legacy_hash INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO access_tokens_new
    SELECT token_id, token_hash, family_id, client_id, format, scope, audience, issued_at,
           expires_at, revoked_at, signing_kid, format = 'opaque'
    FROM access_tokens;
DROP TABLE access_tokens;
ALTER TABLE access_tokens_new RENAME TO access_tokens;
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
-- Only JWTs have a signing key: opaque tokens (NULL) stay out of this index.
CREATE INDEX access_tokens_kid ON access_tokens (signing_kid) WHERE signing_kid IS NOT NULL;
CREATE INDEX access_tokens_revoked ON access_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE UNIQUE INDEX access_tokens_legacy_hash ON access_tokens (token_hash) WHERE legacy_hash = 1;

-- Not used by any query (bulk revocation by issue time updates the token tables).
DROP INDEX token_families_created;
