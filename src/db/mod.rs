//! All SQL. Small functions over an executor (`&mut SqliteConnection` or the pool), one file per table.
//!
//! Nothing here knows HTTP. Times are Unix milliseconds; secrets arrive already hashed.

pub mod accounts;
pub mod agents;
pub mod api_tokens;
pub mod audit;
pub mod enrollment_tokens;
pub mod fleet_snapshot;
pub mod oidc_accounts;
pub mod raw;
pub mod self_service;
pub mod sessions;
pub mod sync;
pub mod writeback;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// File name of the console database inside the data dir.
pub const DATABASE_FILE: &str = "hybridsync.sqlite3";

/// Opens (creating if needed) the console database in `data_dir`, in WAL mode, and applies migrations.
///
/// The CLI's `admin` commands open the same file while the console runs; WAL plus a busy timeout
/// lets them write without stopping it.
pub async fn open(data_dir: &Path) -> anyhow::Result<SqlitePool> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join(DATABASE_FILE);
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    MIGRATOR
        .run(&pool)
        .await
        .with_context(|| format!("cannot apply migrations to {}", path.display()))?;
    Ok(pool)
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
