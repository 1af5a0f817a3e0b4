-- Heartbeat and poll timestamps change for every agent every few seconds, and the console writes
-- them in one group commit a second; the rest of an agent's row changes rarely. In the wide `agent`
-- row (some 400 bytes with the health checks and reasons, ten to a page) every stamp rewrote a page
-- of its own, and the WAL checkpoint copied each page again. Here a row is about 70 bytes, fifty to
-- a page, and the key is a number given in enrollment order that is never reused
-- (AUTOINCREMENT): the console keeps it with each agent and writes the stamps by it, with no
-- lookup by agent id. The four columns move here from `agent`.
CREATE TABLE agent_liveness (
    liveness_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id          TEXT    NOT NULL UNIQUE REFERENCES agent (agent_id) ON DELETE CASCADE,
    last_heartbeat_at INTEGER,
    last_contact_at   INTEGER NOT NULL,
    uptime_seconds    INTEGER,
    last_poll_at      INTEGER
);

INSERT INTO agent_liveness (agent_id, last_heartbeat_at, last_contact_at, uptime_seconds, last_poll_at)
SELECT agent_id, last_heartbeat_at, last_contact_at, uptime_seconds, last_poll_at FROM agent ORDER BY rowid;

ALTER TABLE agent DROP COLUMN last_heartbeat_at;
ALTER TABLE agent DROP COLUMN last_contact_at;
ALTER TABLE agent DROP COLUMN uptime_seconds;
ALTER TABLE agent DROP COLUMN last_poll_at;

-- The fleet snapshot describes these columns too (see 20261130140000_fleet_snapshot.sql). A
-- snapshot written before this migration has no liveness ids and a format the console no longer
-- reads, so it is left to be ignored.
CREATE TRIGGER fleet_snapshot_stale_after_liveness_insert AFTER INSERT ON agent_liveness
WHEN EXISTS (SELECT 1 FROM fleet_snapshot)
BEGIN
    DELETE FROM fleet_snapshot;
END;

CREATE TRIGGER fleet_snapshot_stale_after_liveness_update AFTER UPDATE ON agent_liveness
WHEN EXISTS (SELECT 1 FROM fleet_snapshot)
BEGIN
    DELETE FROM fleet_snapshot;
END;

CREATE TRIGGER fleet_snapshot_stale_after_liveness_delete AFTER DELETE ON agent_liveness
WHEN EXISTS (SELECT 1 FROM fleet_snapshot)
BEGIN
    DELETE FROM fleet_snapshot;
END;
