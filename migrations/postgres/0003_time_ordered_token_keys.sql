-- Opaque tokens carry their id (a UUID v7, time-ordered), and the store finds them by it,
-- checking the stored hash, as SQLite does since its migration 0005. Keyed by the hash, every
-- new token landed on a random leaf page of two B-trees (the `refresh_tokens` primary key and
-- the unique index on `access_tokens.token_hash`): under load each such page is dirtied at a
-- random place, and the first change to a page after a checkpoint writes the whole 8 KiB page
-- to the WAL (full_page_writes). Time-ordered keys append to the right-hand edge instead.
--
-- Tokens minted before this migration carry no id and keep working until they expire:
--   * a refresh token's row gets the id `h:` || hex(hash), which the store computes from a
--     presented id-less token;
--   * an access token keeps its id (introspection reports it as `jti`) and stays findable by
--     hash through a partial unique index that holds only those rows, so new rows never
--     touch it.
-- PostgreSQL changes keys in place: no table is rebuilt.

ALTER TABLE refresh_tokens ADD COLUMN token_id TEXT;
UPDATE refresh_tokens SET token_id = 'h:' || encode(token_hash, 'hex');
ALTER TABLE refresh_tokens ALTER COLUMN token_id SET NOT NULL;
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_pkey;
ALTER TABLE refresh_tokens ADD PRIMARY KEY (token_id);

-- 1 for an opaque token minted before ids were embedded: found by its hash.
ALTER TABLE access_tokens ADD COLUMN legacy_hash BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE access_tokens SET legacy_hash = TRUE WHERE format = 'opaque';
ALTER TABLE access_tokens DROP CONSTRAINT access_tokens_token_hash_key;
CREATE UNIQUE INDEX access_tokens_legacy_hash ON access_tokens (token_hash) WHERE legacy_hash;

-- Only JWTs have a signing key: opaque tokens (NULL) stay out of this index.
DROP INDEX access_tokens_kid;
CREATE INDEX access_tokens_kid ON access_tokens (signing_kid) WHERE signing_kid IS NOT NULL;
