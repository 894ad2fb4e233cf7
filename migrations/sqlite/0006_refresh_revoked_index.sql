-- The background cleanup finds its rows with `expires_at < ? OR revoked_at < ?`. Migration 0004
-- gave every token table an index for each half except `refresh_tokens`, which had none on
-- `revoked_at`: without it SQLite cannot split the OR across two indexes, so every cleanup batch
-- scanned the whole table (300,000 rows after a 10-second load), inside the one writer's
-- transaction, stalling the token requests batched with it (BENCHMARKS.md).
-- Partial: most refresh tokens are never revoked one by one.
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
