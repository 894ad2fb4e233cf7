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

-- Bulk revocation by issue time ("we restored an old backup").
CREATE INDEX token_families_created ON token_families (created_at);
