//! `writeback_settings`: the options of Password reset > On-premises integration (one row).

use serde::Serialize;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow, Serialize)]
pub struct WritebackSettings {
    pub enable_writeback: bool,
    pub use_cloud_sync: bool,
    pub allow_unlock_without_reset: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct SettingsRow {
    pub enable_writeback: bool,
    pub use_cloud_sync: bool,
    pub allow_unlock_without_reset: bool,
    pub updated_at: Option<i64>,
    pub updated_by: Option<String>,
}

impl SettingsRow {
    pub fn settings(&self) -> WritebackSettings {
        WritebackSettings {
            enable_writeback: self.enable_writeback,
            use_cloud_sync: self.use_cloud_sync,
            allow_unlock_without_reset: self.allow_unlock_without_reset,
        }
    }
}

pub async fn get(pool: &SqlitePool) -> sqlx::Result<SettingsRow> {
    sqlx::query_as(
        "SELECT enable_writeback, use_cloud_sync, allow_unlock_without_reset, updated_at, updated_by \
         FROM writeback_settings WHERE settings_id = 1",
    )
    .fetch_one(pool)
    .await
}

pub async fn save(
    conn: &mut SqliteConnection,
    s: &WritebackSettings,
    at: i64,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE writeback_settings SET enable_writeback = ?, use_cloud_sync = ?, \
         allow_unlock_without_reset = ?, updated_at = ?, updated_by = ? WHERE settings_id = 1",
    )
    .bind(s.enable_writeback)
    .bind(s.use_cloud_sync)
    .bind(s.allow_unlock_without_reset)
    .bind(at)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(())
}
