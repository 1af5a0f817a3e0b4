-- The self-service portal (/my): short-lived sessions of synced users, keyed by the SHA-256 of the
-- cookie value (the token itself is never stored).
CREATE TABLE self_service_session (
    token_hash BLOB PRIMARY KEY,
    object_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX self_service_session_expires ON self_service_session (expires_at);
