-- Introspection rights, RFC 8707 resources, key lifecycle, and which key signed a JWT.

-- '*' (every token) or an audience value (tokens addressed to it); NULL: own tokens only.
ALTER TABLE clients ADD COLUMN resource_server TEXT;
-- Space-delimited resource indicators (RFC 8707) the client may request as audience.
ALTER TABLE clients ADD COLUMN resources TEXT NOT NULL DEFAULT '';

-- The kid that signed a JWT access token (NULL for opaque tokens): revoking the key revokes
-- its tokens at once, on every instance.
ALTER TABLE access_tokens ADD COLUMN signing_kid TEXT;
CREATE INDEX access_tokens_kid ON access_tokens (signing_kid);

-- A retired key stays in the JWKS until this time (every token it signed has expired).
ALTER TABLE signing_keys ADD COLUMN published_until INTEGER;
