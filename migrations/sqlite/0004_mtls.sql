-- Certificate-bound access tokens (RFC 8705 §3).
--
-- `access_tokens.cert_thumbprint`: the `x5t#S256` (base64url SHA-256 of the DER) of the client
-- certificate a certificate-bound access token is bound to (its `cnf["x5t#S256"]`); NULL for a
-- token that is not bound to a certificate. Introspection shows it and `/ping` compares the
-- connection's certificate with it.
--
-- `token_families.cert_bound`: the grant's first access token was bound to a certificate, so
-- every refresh of the family must present a client certificate too (no downgrade to bearer
-- tokens); the new access token is bound to the certificate of its own request, which may be a
-- new one (RFC 8705 §4 lets a confidential client change certificates).
ALTER TABLE access_tokens ADD COLUMN cert_thumbprint TEXT;
ALTER TABLE token_families ADD COLUMN cert_bound INTEGER NOT NULL DEFAULT 0;
