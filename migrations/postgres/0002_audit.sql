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
