-- DPoP (RFC 9449): sender-constrained access tokens.
--
-- `access_tokens.dpop_jkt`: the RFC 7638 thumbprint of the key a DPoP-bound access token is
-- bound to (its `cnf.jkt`); NULL for a bearer token. A resource server that introspects the
-- token learns it, and `/ping` checks a proof's key against it.
--
-- `token_families.dpop_bound`: the grant was made with a DPoP proof, so every refresh of the
-- family must carry one too (no downgrade to bearer tokens). The refresh token itself is not
-- key-bound: Tessera's clients are confidential, and RFC 9449 §5 binds refresh tokens only for
-- public clients; each refresh binds its new access token to the key of its own proof.
ALTER TABLE access_tokens ADD COLUMN dpop_jkt TEXT;
ALTER TABLE token_families ADD COLUMN dpop_bound INTEGER NOT NULL DEFAULT 0;
