-- The fleet snapshot the console wrote at its last clean shutdown (the file `fleet.snapshot` in the
-- data directory), so the next start reads one file instead of decoding every agent row. The file
-- counts only while this row names its generation, and the row is valid only while no agent row
-- changed since: the triggers below drop it on any change to the agent table, whoever makes it (the
-- console, an admin command, a later migration), in the same transaction as the change.
CREATE TABLE fleet_snapshot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    format      INTEGER NOT NULL,
    agents      INTEGER NOT NULL,
    written_at  INTEGER NOT NULL,
    generation  BLOB    NOT NULL
);

CREATE TRIGGER fleet_snapshot_stale_after_insert AFTER INSERT ON agent
WHEN EXISTS (SELECT 1 FROM fleet_snapshot)
BEGIN
    DELETE FROM fleet_snapshot;
END;

CREATE TRIGGER fleet_snapshot_stale_after_update AFTER UPDATE ON agent
WHEN EXISTS (SELECT 1 FROM fleet_snapshot)
BEGIN
    DELETE FROM fleet_snapshot;
END;

CREATE TRIGGER fleet_snapshot_stale_after_delete AFTER DELETE ON agent
WHEN EXISTS (SELECT 1 FROM fleet_snapshot)
BEGIN
    DELETE FROM fleet_snapshot;
END;
