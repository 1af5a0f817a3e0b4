-- Cloud sync: configurations (one per domain), their cycles, the cloud directory the agents keep in
-- step with the on-premises directories, staged deletions and provisioning logs.
-- Times are Unix milliseconds.

CREATE TABLE configurations (
    configuration_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL UNIQUE COLLATE NOCASE,
    dialect TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 0,
    password_hash_sync INTEGER NOT NULL DEFAULT 0,
    -- {"mode": "all_users" | "groups" | "ous", "entries": [{"dn": "...", "anchor": "..."}]}
    scope_json TEXT NOT NULL,
    -- {"users": [...], "groups": [...]} as in sync::mapping::ObjectMappings
    mappings_json TEXT NOT NULL,
    notification_email TEXT,
    prevent_accidental_deletes INTEGER NOT NULL DEFAULT 1,
    delete_threshold INTEGER NOT NULL DEFAULT 500,
    interval_seconds INTEGER NOT NULL DEFAULT 120,
    -- Cycle scheduling and state.
    sync_requested INTEGER NOT NULL DEFAULT 0,
    full_requested INTEGER NOT NULL DEFAULT 1,
    preview_requested INTEGER NOT NULL DEFAULT 0,
    watermark TEXT,
    current_cycle_id TEXT,
    last_cycle_id TEXT,
    last_cycle_finished_at INTEGER,
    threshold_exceeded INTEGER NOT NULL DEFAULT 0,
    -- Quarantine: consecutive failed cycles; quarantined once they reach the limit.
    failure_count INTEGER NOT NULL DEFAULT 0,
    quarantine_reason TEXT,
    quarantine_since INTEGER,
    next_attempt_at INTEGER,
    -- The agent that runs this domain's cycles, and until when its lease holds.
    leader_agent_id TEXT,
    lease_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE sync_cycles (
    cycle_id TEXT PRIMARY KEY,
    configuration_id TEXT NOT NULL REFERENCES configurations (configuration_id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('full', 'delta', 'preview')),
    state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'threshold')),
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    imported INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    staged INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    -- Preview cycles: what the cycle would do, as JSON.
    plan_json TEXT
);
CREATE INDEX sync_cycles_by_configuration ON sync_cycles (configuration_id, started_at DESC);

-- The imported source objects of every domain (the connector space) and, when `provisioned`, the
-- cloud directory object made from them. Keyed by domain and source anchor, not by configuration:
-- deleting a configuration leaves the synced objects in place.
CREATE TABLE directory_objects (
    object_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL COLLATE NOCASE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
    anchor TEXT NOT NULL,
    dn TEXT NOT NULL,
    source_hash TEXT NOT NULL,
    source_json TEXT NOT NULL,
    in_scope INTEGER NOT NULL,
    gone INTEGER NOT NULL DEFAULT 0,
    provisioned INTEGER NOT NULL DEFAULT 0,
    attributes_json TEXT,
    display_name TEXT,
    user_principal_name TEXT,
    -- Password hash sync: the directory's stored hash, "{SCHEME}value"; never a password.
    password_hash TEXT,
    password_synced_at INTEGER,
    last_seen_cycle TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    provisioned_at INTEGER,
    UNIQUE (domain, anchor)
);
CREATE INDEX directory_objects_by_dn ON directory_objects (domain, dn COLLATE NOCASE);
CREATE INDEX directory_objects_listing ON directory_objects (kind, provisioned, display_name);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES directory_objects (object_id) ON DELETE CASCADE,
    member_id TEXT NOT NULL REFERENCES directory_objects (object_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_member ON group_members (member_id);

CREATE TABLE staged_deletes (
    configuration_id TEXT NOT NULL REFERENCES configurations (configuration_id) ON DELETE CASCADE,
    object_id TEXT NOT NULL REFERENCES directory_objects (object_id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    staged_at INTEGER NOT NULL,
    PRIMARY KEY (configuration_id, object_id)
) WITHOUT ROWID;

CREATE TABLE provisioning_logs (
    log_id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    cycle_id TEXT,
    configuration_id TEXT,
    domain TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    source_dn TEXT NOT NULL,
    source_anchor TEXT NOT NULL,
    target_id TEXT,
    target_name TEXT,
    action TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'stagedDelete', 'skip')),
    status TEXT NOT NULL CHECK (status IN ('success', 'warning', 'failure', 'skipped')),
    initiated_by TEXT NOT NULL,
    -- [{"name", "old", "new"}]
    modified_json TEXT NOT NULL DEFAULT '[]',
    -- [{"name", "status", "detail"}]
    steps_json TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    recommendation TEXT,
    duration_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX provisioning_logs_by_time ON provisioning_logs (at DESC);
CREATE INDEX provisioning_logs_by_anchor ON provisioning_logs (source_anchor);
CREATE INDEX provisioning_logs_by_configuration ON provisioning_logs (configuration_id, at DESC);

-- Preview cycles: the anchors a complete (full) preview saw, to tell what it would delete.
CREATE TABLE preview_seen (
    cycle_id TEXT NOT NULL,
    anchor TEXT NOT NULL,
    PRIMARY KEY (cycle_id, anchor)
) WITHOUT ROWID;

-- The directories agents reported when asking for leases: what "New configuration" offers.
CREATE TABLE sync_domains (
    domain TEXT PRIMARY KEY COLLATE NOCASE,
    dialect TEXT NOT NULL,
    base_dn TEXT NOT NULL,
    reported_by TEXT NOT NULL,
    reported_at INTEGER NOT NULL
);
