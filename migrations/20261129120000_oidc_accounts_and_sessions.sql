-- Accounts signed in through OpenID Connect are identified by (issuer, subject), never by username,
-- so a provider user cannot take over a local account that happens to share its name. Their
-- password_hash is '!', which no password verifies.
ALTER TABLE account ADD COLUMN oidc_issuer TEXT;
ALTER TABLE account ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX account_oidc ON account (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL;
