-- Password reset > On-premises integration: the three options of the screen (one row).
CREATE TABLE writeback_settings (
    settings_id INTEGER PRIMARY KEY CHECK (settings_id = 1),
    enable_writeback INTEGER NOT NULL DEFAULT 0,
    use_cloud_sync INTEGER NOT NULL DEFAULT 0,
    allow_unlock_without_reset INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER,
    updated_by TEXT
);
INSERT INTO writeback_settings (settings_id) VALUES (1);
