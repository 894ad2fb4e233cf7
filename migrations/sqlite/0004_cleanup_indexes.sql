-- The background cleanup deletes expired and revoked rows in small batches; these indexes let
-- each batch find its rows without scanning the table (partial: most rows are never revoked).
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
CREATE INDEX token_families_revoked ON token_families (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX access_tokens_revoked ON access_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
