//! The `fleet_snapshot` table: one row naming the fleet snapshot file written at the console's last
//! clean shutdown, while it still matches the agent table (see the migration for how it goes stale).

use sqlx::SqlitePool;

/// The valid snapshot, if any: `(format, generation)`.
pub async fn read(pool: &SqlitePool) -> sqlx::Result<Option<(i64, Vec<u8>)>> {
    sqlx::query_as("SELECT format, generation FROM fleet_snapshot WHERE id = 1")
        .fetch_optional(pool)
        .await
}

/// Records the snapshot just written.
pub async fn save(
    pool: &SqlitePool,
    format: i64,
    agents: usize,
    now: i64,
    generation: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO fleet_snapshot (id, format, agents, written_at, generation) \
         VALUES (1, ?, ?, ?, ?)",
    )
    .bind(format)
    .bind(i64::try_from(agents).unwrap_or(i64::MAX))
    .bind(now)
    .bind(generation)
    .execute(pool)
    .await?;
    Ok(())
}
