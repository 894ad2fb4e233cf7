-- The background cleanup finds its rows with `expires_at < $1 OR revoked_at < $1`. Every token
-- table has an index for each half except `refresh_tokens`, which had none on `revoked_at`:
-- PostgreSQL then cannot combine two indexes (BitmapOr) and scans the table whenever fewer
-- rows qualify than the batch takes, which is every run's last batch (SQLite had the same gap;
-- see its migration 0006). Partial: most refresh tokens are never revoked one by one.
CREATE INDEX refresh_tokens_revoked ON refresh_tokens (revoked_at) WHERE revoked_at IS NOT NULL;
