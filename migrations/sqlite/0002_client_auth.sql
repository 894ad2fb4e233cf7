-- How each client authenticates (methods, registered keys or jwks_uri, DPoP and FAPI 2.0
-- rules), as one JSON object (see src/domain/client/auth.rs), so that a later setting needs no
-- migration. Existing clients keep the two secret methods.
ALTER TABLE clients ADD COLUMN auth TEXT NOT NULL
    DEFAULT '{"methods":["client_secret_basic","client_secret_post"]}';

-- JWT ids used once (private_key_jwt assertions, DPoP proofs), shared by every instance on the
-- database: the id is SHA-256 over a kind, the JWT's issuer and its jti. A row is kept until
-- the JWT could no longer be accepted (`expires_at`), then the cleanup deletes it; an expired
-- row may also be taken over by a new use.
CREATE TABLE used_jwt_ids (
    id         BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX used_jwt_ids_expiry ON used_jwt_ids (expires_at);
