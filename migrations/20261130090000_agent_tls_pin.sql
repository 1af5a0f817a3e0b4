-- The certificate each agent serves its API with, pinned at enrollment (and rotated by a re-install):
-- lowercase hex SHA-256 of the DER certificate. The console calls an agent over TLS and refuses any
-- other certificate. NULL for agents enrolled before pinning: the console does not call those until
-- they are re-installed.
ALTER TABLE agent ADD COLUMN tls_cert_sha256 TEXT;
