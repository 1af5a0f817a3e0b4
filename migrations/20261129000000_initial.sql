-- Initial schema: console accounts, sessions, API and enrollment tokens, the agent fleet, audit log.
-- Times are Unix milliseconds (UTC). Secrets are stored only as SHA-256 digests (tokens) or argon2id
-- hashes (passwords). Tables are singular, keys are <table>_id.

CREATE TABLE account (
    account_id    INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('global-administrator', 'hybrid-identity-administrator', 'global-reader')),
    created_at    INTEGER NOT NULL
);

CREATE TABLE session (
    token_hash   BLOB    PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES account (account_id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX session_account ON session (account_id);

CREATE TABLE api_token (
    api_token_id INTEGER PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES account (account_id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE enrollment_token (
    enrollment_token_id INTEGER PRIMARY KEY,
    token_hash          BLOB    NOT NULL UNIQUE,
    created_by          TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    max_uses            INTEGER NOT NULL CHECK (max_uses > 0),
    uses                INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    revoked_at          INTEGER,
    revoked_by          TEXT
);

CREATE TABLE agent (
    agent_id                   TEXT    PRIMARY KEY,
    credential_hash            BLOB    NOT NULL UNIQUE,
    console_token_generation   INTEGER NOT NULL DEFAULT 1,
    machine_name               TEXT    NOT NULL,
    external_ip                TEXT    NOT NULL,
    listen_addr                TEXT,
    version                    TEXT    NOT NULL,
    extension                  TEXT    NOT NULL,
    environment                TEXT    NOT NULL,
    registered_at              INTEGER NOT NULL,
    enrollment_token_id        INTEGER,
    last_heartbeat_at          INTEGER,
    last_contact_at            INTEGER NOT NULL,
    heartbeat_interval_seconds INTEGER NOT NULL DEFAULT 30,
    uptime_seconds             INTEGER,
    status                     TEXT    NOT NULL CHECK (status IN ('active', 'inactive')),
    status_since               INTEGER NOT NULL,
    health                     TEXT    NOT NULL CHECK (health IN ('healthy', 'degraded', 'unhealthy')),
    health_reason              TEXT    NOT NULL,
    health_since               INTEGER NOT NULL,
    checks_json                TEXT    NOT NULL DEFAULT '[]',
    last_poll_at               INTEGER,
    last_poll_error            TEXT
);

-- Every status or health transition, and lifecycle events (enrolled, re-installed).
CREATE TABLE agent_event (
    agent_event_id INTEGER PRIMARY KEY,
    agent_id       TEXT    NOT NULL REFERENCES agent (agent_id) ON DELETE CASCADE,
    at             INTEGER NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('status', 'health', 'lifecycle')),
    from_value     TEXT,
    to_value       TEXT    NOT NULL,
    reason         TEXT    NOT NULL
);
CREATE INDEX agent_event_agent_at ON agent_event (agent_id, at);

CREATE TABLE audit_log (
    audit_log_id INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    target_type  TEXT    NOT NULL,
    target_id    TEXT    NOT NULL,
    before_json  TEXT,
    after_json   TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
