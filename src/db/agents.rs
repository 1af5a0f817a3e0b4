//! The `agent`, `agent_liveness` and `agent_event` tables: the fleet as persisted.
//!
//! The console keeps the live fleet in memory (`fleet::Fleet`) and writes heartbeat state here in
//! batches; enrollment and deletion are written here first, in a transaction, then applied in memory.
//!
//! An agent's heartbeat and poll timestamps live in the narrow `agent_liveness` table (one row per
//! agent, deleted with it), because they are rewritten every few seconds and the rest rarely. The
//! row's `liveness_id` is the key the console writes them by; [`AgentRow`] joins the two.

use sqlx::{FromRow, SqliteConnection, SqlitePool};

#[derive(Debug, Clone, FromRow)]
pub struct AgentRow {
    pub agent_id: String,
    pub credential_hash: Vec<u8>,
    pub console_token_generation: i64,
    pub machine_name: String,
    pub external_ip: String,
    pub listen_addr: Option<String>,
    pub version: String,
    pub extension: String,
    pub environment: String,
    pub registered_at: i64,
    pub enrollment_token_id: Option<i64>,
    pub last_heartbeat_at: Option<i64>,
    pub last_contact_at: i64,
    pub heartbeat_interval_seconds: i64,
    pub uptime_seconds: Option<i64>,
    pub status: String,
    pub status_since: i64,
    pub health: String,
    pub health_reason: String,
    pub health_since: i64,
    pub checks_json: String,
    pub last_poll_at: Option<i64>,
    pub last_poll_error: Option<String>,
    pub domains_json: String,
    /// Lowercase hex SHA-256 of the agent's TLS certificate, pinned at enrollment.
    pub tls_cert_sha256: Option<String>,
    /// The key of the agent's `agent_liveness` row (0 until [`upsert`] has written it).
    pub liveness_id: i64,
}

/// The `agent` columns with the liveness row's, as [`AgentRow`] names them. (Both rows are always
/// written together; were the liveness row missing, the agent reads as not heard from since it
/// registered, and its stamps would find no row.)
const AGENT_WITH_LIVENESS: &str = "SELECT a.*, coalesce(l.liveness_id, 0) AS liveness_id, \
    l.last_heartbeat_at, coalesce(l.last_contact_at, a.registered_at) AS last_contact_at, \
    l.uptime_seconds, l.last_poll_at \
    FROM agent a LEFT JOIN agent_liveness l ON l.agent_id = a.agent_id";

#[derive(Debug, Clone, FromRow)]
pub struct AgentEventRow {
    pub agent_event_id: i64,
    pub agent_id: String,
    pub at: i64,
    pub kind: String,
    pub from_value: Option<String>,
    pub to_value: String,
    pub reason: String,
}

/// A transition or lifecycle event waiting to be written.
#[derive(Debug, Clone)]
pub struct NewAgentEvent {
    pub agent_id: String,
    pub at: i64,
    pub kind: &'static str,
    pub from_value: Option<String>,
    pub to_value: String,
    pub reason: String,
}

pub async fn get(conn: &mut SqliteConnection, agent_id: &str) -> sqlx::Result<Option<AgentRow>> {
    sqlx::query_as(&format!("{AGENT_WITH_LIVENESS} WHERE a.agent_id = ?"))
        .bind(agent_id)
        .fetch_optional(conn)
        .await
}

/// Inserts a new agent or replaces every column of an existing one (re-install keeps the id), with
/// its liveness row. Returns the liveness row's key, which a re-installed agent keeps.
///
/// The console holds that key in 32 bits, so the 4,294,967,296th enrollment of a database is
/// refused (keys are never reused) rather than written under a key the console cannot hold.
pub async fn upsert(conn: &mut SqliteConnection, row: &AgentRow) -> sqlx::Result<u32> {
    upsert_agent_row(conn, row).await?;
    Ok(upsert_liveness(conn, &[LivenessValues::of(row)]).await?[0])
}

/// The `agent` row of [`upsert`] alone; a batch enrollment writes its agents' liveness rows
/// afterwards, with one [`upsert_liveness`].
pub async fn upsert_agent_row(conn: &mut SqliteConnection, row: &AgentRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO agent (agent_id, credential_hash, console_token_generation, machine_name, external_ip, \
           listen_addr, version, extension, environment, registered_at, enrollment_token_id, \
           heartbeat_interval_seconds, status, status_since, health, health_reason, health_since, \
           checks_json, last_poll_error, domains_json, tls_cert_sha256) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (agent_id) DO UPDATE SET credential_hash = excluded.credential_hash, \
           console_token_generation = excluded.console_token_generation, machine_name = excluded.machine_name, \
           external_ip = excluded.external_ip, listen_addr = excluded.listen_addr, version = excluded.version, \
           extension = excluded.extension, environment = excluded.environment, \
           enrollment_token_id = excluded.enrollment_token_id, \
           heartbeat_interval_seconds = excluded.heartbeat_interval_seconds, \
           status = excluded.status, status_since = excluded.status_since, \
           health = excluded.health, health_reason = excluded.health_reason, health_since = excluded.health_since, \
           checks_json = excluded.checks_json, last_poll_error = excluded.last_poll_error, \
           domains_json = excluded.domains_json, tls_cert_sha256 = excluded.tls_cert_sha256",
    )
    .bind(&row.agent_id)
    .bind(&row.credential_hash)
    .bind(row.console_token_generation)
    .bind(&row.machine_name)
    .bind(&row.external_ip)
    .bind(&row.listen_addr)
    .bind(&row.version)
    .bind(&row.extension)
    .bind(&row.environment)
    .bind(row.registered_at)
    .bind(row.enrollment_token_id)
    .bind(row.heartbeat_interval_seconds)
    .bind(&row.status)
    .bind(row.status_since)
    .bind(&row.health)
    .bind(&row.health_reason)
    .bind(row.health_since)
    .bind(&row.checks_json)
    .bind(&row.last_poll_error)
    .bind(&row.domains_json)
    .bind(&row.tls_cert_sha256)
    .execute(conn)
    .await?;
    Ok(())
}

/// An agent's liveness row as [`upsert_liveness`] writes it.
pub struct LivenessValues<'a> {
    pub agent_id: &'a str,
    pub last_heartbeat_at: Option<i64>,
    pub last_contact_at: i64,
    pub uptime_seconds: Option<i64>,
    pub last_poll_at: Option<i64>,
}

impl<'a> LivenessValues<'a> {
    pub fn of(row: &'a AgentRow) -> Self {
        LivenessValues {
            agent_id: &row.agent_id,
            last_heartbeat_at: row.last_heartbeat_at,
            last_contact_at: row.last_contact_at,
            uptime_seconds: row.uptime_seconds,
            last_poll_at: row.last_poll_at,
        }
    }
}

/// Writes the liveness rows of `rows` (new ones, or the existing ones of re-installed agents), with
/// one statement, and returns their keys in the order of `rows`. Their agents' rows must exist.
pub async fn upsert_liveness(
    conn: &mut SqliteConnection,
    rows: &[LivenessValues<'_>],
) -> sqlx::Result<Vec<u32>> {
    type LivenessRow<'a> = (&'a str, Option<i64>, i64, Option<i64>, Option<i64>);
    let packed: Vec<LivenessRow<'_>> = rows
        .iter()
        .map(|r| {
            (
                r.agent_id,
                r.last_heartbeat_at,
                r.last_contact_at,
                r.uptime_seconds,
                r.last_poll_at,
            )
        })
        .collect();
    // Where each agent is in `rows`: the returned keys are matched by id, borrowing the texts
    // (a String per returned row left a batch enrollment's heap megabytes larger).
    let position: std::collections::HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.agent_id, i))
        .collect();
    let mut keys: Vec<Option<i64>> = vec![None; rows.len()];
    let json = json_param(&packed)?;
    drop(packed);
    {
        use futures::TryStreamExt;
        use sqlx::Row;
        // `WHERE true` tells SQLite's parser that `ON CONFLICT` is not a join constraint.
        let mut returned = sqlx::query(
            "INSERT INTO agent_liveness (agent_id, last_heartbeat_at, last_contact_at, uptime_seconds, last_poll_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?) WHERE true \
             ON CONFLICT (agent_id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at, \
               last_contact_at = excluded.last_contact_at, uptime_seconds = excluded.uptime_seconds, \
               last_poll_at = excluded.last_poll_at \
             RETURNING agent_id, liveness_id",
        )
        .bind(json)
        .fetch(conn);
        while let Some(row) = returned.try_next().await? {
            let agent_id: &str = row.try_get(0)?;
            if let Some(&i) = position.get(agent_id) {
                keys[i] = Some(row.try_get(1)?);
            }
        }
    }
    rows.iter()
        .zip(keys)
        .map(|(r, key)| {
            let id = key.ok_or_else(|| {
                sqlx::Error::Protocol(format!("no liveness row was written for agent {}", r.agent_id))
            })?;
            u32::try_from(id).map_err(|_| {
                sqlx::Error::Protocol(format!(
                    "agent_liveness key {id} is beyond the 4,294,967,295 the console can hold: this \
                     database has enrolled that many agents; start a new data directory"
                ))
            })
        })
        .collect()
}

/// Many rows as the one JSON text parameter that the batch statements unpack with `json_each`.
pub(crate) fn json_param<T: serde::Serialize>(rows: &T) -> sqlx::Result<String> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Writes the live state of many agents with two statements (rows as one JSON parameter, unpacked
/// by `json_each`): their `agent` rows, then their liveness rows. Agents deleted meanwhile are
/// skipped by the joins.
pub async fn update_live_states(
    conn: &mut SqliteConnection,
    rows: &[AgentRow],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    /// One row as the statement reads it, positionally; serializes as a JSON array borrowing
    /// the row's texts (no `Value` tree per row).
    #[derive(serde::Serialize)]
    struct Packed<'a>(
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        i64,
        &'a str,
        i64,
        &'a str,
        &'a str,
        i64,
        &'a str,
        Option<&'a str>,
        &'a str,
    );
    let packed: Vec<Packed<'_>> = rows
        .iter()
        .map(|r| {
            Packed(
                &r.agent_id,
                &r.machine_name,
                &r.external_ip,
                r.listen_addr.as_deref(),
                &r.version,
                r.heartbeat_interval_seconds,
                &r.status,
                r.status_since,
                &r.health,
                &r.health_reason,
                r.health_since,
                &r.checks_json,
                r.last_poll_error.as_deref(),
                &r.domains_json,
            )
        })
        .collect();
    let json = json_param(&packed)?;
    drop(packed);
    sqlx::query(
        // Each row becomes binary JSON once (the MATERIALIZED table); reading 14 fields from the
        // text would parse the row 14 times. A third less time for 100,000 rows; the 5 short
        // fields of the stamps are faster read from the text.
        "WITH v AS MATERIALIZED (SELECT jsonb(value) AS r FROM json_each(?)) \
         UPDATE agent SET machine_name = v.r ->> 1, external_ip = v.r ->> 2, listen_addr = v.r ->> 3, \
           version = v.r ->> 4, heartbeat_interval_seconds = v.r ->> 5, status = v.r ->> 6, \
           status_since = v.r ->> 7, health = v.r ->> 8, health_reason = v.r ->> 9, \
           health_since = v.r ->> 10, checks_json = v.r ->> 11, last_poll_error = v.r ->> 12, \
           domains_json = v.r ->> 13 \
         FROM v WHERE agent.agent_id = v.r ->> 0",
    )
    .bind(json)
    .execute(&mut *conn)
    .await?;
    let stamps: Vec<StampRow> = rows
        .iter()
        .map(|r| {
            (
                r.liveness_id,
                r.last_heartbeat_at,
                r.last_contact_at,
                r.uptime_seconds,
                r.last_poll_at,
            )
        })
        .collect();
    write_stamps(conn, &stamps).await
}

/// A status, health or lifecycle change to record, borrowed from the queue the fleet keeps it in.
#[derive(Debug, Clone, Copy)]
pub struct AgentEventRef<'a> {
    pub agent_id: uuid::Uuid,
    pub at: i64,
    pub kind: &'a str,
    pub from_value: Option<&'a str>,
    pub to_value: &'a str,
    pub reason: &'a str,
}

/// An event as `insert_events` packs it: agent id, at, kind, from, to, reason.
type EventRow<'a> = (uuid::Uuid, i64, &'a str, Option<&'a str>, &'a str, &'a str);

/// Records many events with one statement, skipping those of agents deleted meanwhile.
///
/// Callers with many events pass them ordered by agent id: each one goes into the
/// `(agent_id, at)` index, and in that order a batch walks the index once instead of touching a
/// random page per event (200,000 events into a 1.8 million row table: 2.5 s instead of 5.4 s).
pub async fn insert_events(
    conn: &mut SqliteConnection,
    events: impl ExactSizeIterator<Item = AgentEventRef<'_>>,
) -> sqlx::Result<()> {
    if events.len() == 0 {
        return Ok(());
    }
    // Tuples serialize as JSON arrays (the id as its hyphenated text, as `agent_id` holds it),
    // borrowing the texts: no intermediate `Value` per field.
    let packed: Vec<EventRow<'_>> = events
        .map(|e| (e.agent_id, e.at, e.kind, e.from_value, e.to_value, e.reason))
        .collect();
    let json = json_param(&packed)?;
    sqlx::query(
        "INSERT INTO agent_event (agent_id, at, kind, from_value, to_value, reason) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
         FROM json_each(?) WHERE EXISTS (SELECT 1 FROM agent WHERE agent_id = value ->> 0)",
    )
    .bind(json)
    .execute(conn)
    .await?;
    Ok(())
}

/// One `agent` row as SQLite holds it, borrowed while [`for_each`] reads the table. Its
/// timestamps are in its liveness row ([`for_each_liveness`]).
pub struct AgentRowRef<'a> {
    pub agent_id: &'a str,
    pub credential_hash: &'a [u8],
    pub console_token_generation: i64,
    pub machine_name: &'a str,
    pub external_ip: &'a str,
    pub listen_addr: Option<&'a str>,
    pub version: &'a str,
    pub extension: &'a str,
    pub environment: &'a str,
    pub registered_at: i64,
    pub enrollment_token_id: Option<i64>,
    pub heartbeat_interval_seconds: i64,
    pub status: &'a str,
    pub status_since: i64,
    pub health: &'a str,
    pub health_reason: &'a str,
    pub health_since: i64,
    pub checks_json: &'a str,
    pub last_poll_error: Option<&'a str>,
    pub domains_json: &'a str,
    pub tls_cert_sha256: Option<&'a str>,
}

/// How many agents there are.
pub async fn count(pool: &SqlitePool) -> sqlx::Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM agent")
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Calls `each` with every agent row, its values borrowed from SQLite's own buffers: the
/// console's start-up path at fleet scale (see [`super::raw`]).
pub async fn for_each(
    pool: &SqlitePool,
    mut each: impl FnMut(AgentRowRef<'_>),
) -> sqlx::Result<()> {
    const SQL: &std::ffi::CStr = c"SELECT agent_id, credential_hash, console_token_generation, \
        machine_name, external_ip, listen_addr, version, extension, environment, registered_at, \
        enrollment_token_id, heartbeat_interval_seconds, status, status_since, health, \
        health_reason, health_since, checks_json, last_poll_error, domains_json, tls_cert_sha256 \
        FROM agent";
    super::raw::for_each_row(pool, SQL, |r| {
        each(AgentRowRef {
            agent_id: r.text(0)?.unwrap_or_default(),
            credential_hash: r.bytes(1).unwrap_or_default(),
            console_token_generation: r.int(2).unwrap_or(1),
            machine_name: r.text(3)?.unwrap_or_default(),
            external_ip: r.text(4)?.unwrap_or_default(),
            listen_addr: r.text(5)?,
            version: r.text(6)?.unwrap_or_default(),
            extension: r.text(7)?.unwrap_or_default(),
            environment: r.text(8)?.unwrap_or_default(),
            registered_at: r.int(9).unwrap_or(0),
            enrollment_token_id: r.int(10),
            heartbeat_interval_seconds: r.int(11).unwrap_or(30),
            status: r.text(12)?.unwrap_or_default(),
            status_since: r.int(13).unwrap_or(0),
            health: r.text(14)?.unwrap_or_default(),
            health_reason: r.text(15)?.unwrap_or_default(),
            health_since: r.int(16).unwrap_or(0),
            checks_json: r.text(17)?.unwrap_or("[]"),
            last_poll_error: r.text(18)?,
            domains_json: r.text(19)?.unwrap_or("[]"),
            tls_cert_sha256: r.text(20)?,
        });
        Ok(())
    })
    .await
    .map_err(|e| sqlx::Error::Protocol(format!("cannot read the agent table: {e}")))
}

/// One `agent_liveness` row as SQLite holds it, borrowed while [`for_each_liveness`] reads the
/// table.
pub struct LivenessRef<'a> {
    pub agent_id: &'a str,
    pub liveness_id: i64,
    pub last_heartbeat_at: Option<i64>,
    pub last_contact_at: i64,
    pub uptime_seconds: Option<i64>,
    pub last_poll_at: Option<i64>,
}

/// Calls `each` with every liveness row, in key order (see [`for_each`]).
///
/// A table of its own rather than joined to [`for_each`]'s: the join looks each agent up in the
/// liveness table's id index, at random, and at 100,000 agents that read took 0.95 s instead of
/// 0.37 s; the caller matches the rows to its agents in memory.
pub async fn for_each_liveness(
    pool: &SqlitePool,
    mut each: impl FnMut(LivenessRef<'_>),
) -> sqlx::Result<()> {
    const SQL: &std::ffi::CStr = c"SELECT agent_id, liveness_id, last_heartbeat_at, \
        last_contact_at, uptime_seconds, last_poll_at FROM agent_liveness";
    super::raw::for_each_row(pool, SQL, |r| {
        each(LivenessRef {
            agent_id: r.text(0)?.unwrap_or_default(),
            liveness_id: r.int(1).unwrap_or(0),
            last_heartbeat_at: r.int(2),
            last_contact_at: r.int(3).unwrap_or(0),
            uptime_seconds: r.int(4),
            last_poll_at: r.int(5),
        });
        Ok(())
    })
    .await
    .map_err(|e| sqlx::Error::Protocol(format!("cannot read the agent_liveness table: {e}")))
}

/// The columns a plain heartbeat or poll changes: the agent's liveness row.
#[derive(Debug, Clone)]
pub struct HeartbeatStamp {
    /// The key the row is written by.
    pub liveness_id: i64,
    pub last_heartbeat_at: Option<i64>,
    pub last_contact_at: i64,
    pub uptime_seconds: Option<i64>,
    pub last_poll_at: Option<i64>,
}

/// Writes many agents' heartbeat and poll timestamps with one statement.
pub async fn update_heartbeats(
    conn: &mut SqliteConnection,
    stamps: &[HeartbeatStamp],
) -> sqlx::Result<()> {
    let rows: Vec<StampRow> = stamps
        .iter()
        .map(|s| {
            (
                s.liveness_id,
                s.last_heartbeat_at,
                s.last_contact_at,
                s.uptime_seconds,
                s.last_poll_at,
            )
        })
        .collect();
    write_stamps(conn, &rows).await
}

/// (liveness id, last heartbeat, last contact, uptime, last poll), positionally as
/// [`write_stamps`] reads it.
type StampRow = (i64, Option<i64>, i64, Option<i64>, Option<i64>);

/// The rows travel as one JSON parameter of numbers that SQLite unpacks with `json_each`; each is
/// a lookup of the liveness table's integer key, no statement round trip and no index. A row
/// whose key no longer exists (its agent was deleted meanwhile) changes nothing: keys are never
/// reused, so a stamp cannot land on another agent.
async fn write_stamps(conn: &mut SqliteConnection, rows: &[StampRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE agent_liveness SET last_heartbeat_at = v.hb, last_contact_at = v.contact, \
           uptime_seconds = v.uptime, last_poll_at = v.poll \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS hb, value ->> 2 AS contact, value ->> 3 AS uptime, \
               value ->> 4 AS poll FROM json_each(?)) AS v \
         WHERE agent_liveness.liveness_id = v.id",
    )
    .bind(json_param(&rows)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records an event, unless the agent has been deleted meanwhile (then it is dropped on purpose:
/// the agent's whole history went with it).
pub async fn insert_event(conn: &mut SqliteConnection, event: &NewAgentEvent) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO agent_event (agent_id, at, kind, from_value, to_value, reason) \
         SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM agent WHERE agent_id = ?)",
    )
    .bind(&event.agent_id)
    .bind(event.at)
    .bind(event.kind)
    .bind(&event.from_value)
    .bind(&event.to_value)
    .bind(&event.reason)
    .bind(&event.agent_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The id from which events are kept: the first one recorded at or after `before` (Unix ms), or
/// one past the last when all are older.
///
/// Events are appended in time order (ids grow with `at`, give or take the second a group commit
/// holds them), so the old ones are a prefix of the table in id order: this walks that prefix once
/// instead of needing an index on `at` that every insert would pay for.
pub async fn first_kept_event_id(pool: &SqlitePool, before: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce( \
           (SELECT agent_event_id FROM agent_event WHERE at >= ? ORDER BY agent_event_id LIMIT 1), \
           (SELECT max(agent_event_id) + 1 FROM agent_event), 0)",
    )
    .bind(before)
    .fetch_one(pool)
    .await
}

/// Deletes up to `limit` of the oldest events with an id below `first_kept`; returns how many.
pub async fn delete_events_before(
    pool: &SqlitePool,
    first_kept: i64,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM agent_event WHERE agent_event_id IN \
           (SELECT agent_event_id FROM agent_event WHERE agent_event_id < ? \
            ORDER BY agent_event_id LIMIT ?)",
    )
    .bind(first_kept)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Newest first.
pub async fn list_events(
    pool: &SqlitePool,
    agent_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<AgentEventRow>> {
    sqlx::query_as("SELECT * FROM agent_event WHERE agent_id = ? ORDER BY at DESC, agent_event_id DESC LIMIT ?")
        .bind(agent_id)
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn delete(conn: &mut SqliteConnection, agent_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM agent WHERE agent_id = ?")
        .bind(agent_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{DATABASE_FILE, MIGRATOR};
    use sqlx::migrate::Migrator;
    use sqlx::sqlite::SqliteConnectOptions;

    const LIVENESS_MIGRATION: i64 = 20261130150000;
    const A1: &str = "6f1c1b8e-0000-4000-8000-000000000001";
    const A2: &str = "6f1c1b8e-0000-4000-8000-000000000002";
    const A3: &str = "6f1c1b8e-0000-4000-8000-000000000003";

    async fn count(pool: &SqlitePool, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }

    fn stamp(liveness_id: i64, at: i64) -> HeartbeatStamp {
        HeartbeatStamp {
            liveness_id,
            last_heartbeat_at: Some(at),
            last_contact_at: at,
            uptime_seconds: Some(50),
            last_poll_at: None,
        }
    }

    /// A database at the schema before `agent_liveness`, holding two agents (the second enrolled
    /// first) and a snapshot record, opened (so migrated) by the current console.
    #[tokio::test]
    async fn the_liveness_migration_moves_the_timestamps_and_stamps_are_written_by_a_key_never_reused(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join(DATABASE_FILE))
            .create_if_missing(true)
            .foreign_keys(true);
        let old = SqlitePool::connect_with(options).await.unwrap();
        let earlier = Migrator {
            migrations: MIGRATOR
                .migrations
                .iter()
                .filter(|m| m.version < LIVENESS_MIGRATION)
                .cloned()
                .collect(),
            ..Migrator::DEFAULT
        };
        earlier.run(&old).await.unwrap();
        for (id, heartbeat) in [(A2, 5000), (A1, 5100)] {
            sqlx::query(
                "INSERT INTO agent (agent_id, credential_hash, machine_name, external_ip, version, extension, \
                   environment, registered_at, last_heartbeat_at, last_contact_at, uptime_seconds, status, \
                   status_since, health, health_reason, health_since, last_poll_at) \
                 VALUES (?, ?, 'dc1', '192.0.2.1', '0.1.0', 'ad2aadprov', 'public', 1000, ?, 6000, 42, \
                   'active', 1000, 'healthy', 'ok', 1000, 5500)",
            )
            .bind(id)
            .bind(id.as_bytes())
            .bind(heartbeat)
            .execute(&old)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO fleet_snapshot (id, format, agents, written_at, generation) VALUES (1, 1, 2, 7000, x'00')",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let pool = crate::db::open(dir.path()).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let row = get(&mut conn, A1).await.unwrap().expect("the agent");
        assert_eq!(
            (
                row.liveness_id,
                row.last_heartbeat_at,
                row.last_contact_at,
                row.uptime_seconds,
                row.last_poll_at
            ),
            (2, Some(5100), 6000, Some(42), Some(5500)),
            "the timestamps moved with the agent, keyed in enrollment order"
        );
        assert_eq!(get(&mut conn, A2).await.unwrap().unwrap().liveness_id, 1);
        assert!(
            sqlx::query("SELECT last_heartbeat_at FROM agent")
                .fetch_all(&mut *conn)
                .await
                .is_err(),
            "the old columns are gone, so nothing can read a stale copy"
        );
        let mut loaded = Vec::new();
        for_each_liveness(&pool, |r| {
            loaded.push((r.agent_id.to_string(), r.liveness_id, r.last_heartbeat_at))
        })
        .await
        .unwrap();
        assert_eq!(
            loaded,
            [(A2.into(), 1, Some(5000)), (A1.into(), 2, Some(5100))],
            "the start-up read of the liveness rows, in key order"
        );

        // A stamp changes its own agent's row, and the snapshot no longer describes the fleet.
        update_heartbeats(&mut conn, &[stamp(2, 9000)])
            .await
            .unwrap();
        assert_eq!(
            count(&pool, "SELECT count(*) FROM fleet_snapshot").await,
            0,
            "a changed liveness row makes the snapshot stale"
        );
        let row = get(&mut conn, A1).await.unwrap().unwrap();
        assert_eq!(
            (row.last_heartbeat_at, row.last_contact_at, row.last_poll_at),
            (Some(9000), 9000, None)
        );
        assert_eq!(
            get(&mut conn, A2).await.unwrap().unwrap().last_heartbeat_at,
            Some(5000),
            "the other agent's row is untouched"
        );

        // Deleting the newest agent takes its liveness row with it; the next enrollment gets a
        // new key, so a stamp still queued for the deleted agent lands nowhere.
        assert!(delete(&mut conn, A1).await.unwrap());
        assert_eq!(count(&pool, "SELECT count(*) FROM agent_liveness").await, 1);
        let mut newcomer = get(&mut conn, A2).await.unwrap().unwrap();
        newcomer.agent_id = A3.into();
        newcomer.credential_hash = A3.as_bytes().to_vec();
        newcomer.last_heartbeat_at = Some(7000);
        assert_eq!(upsert(&mut conn, &newcomer).await.unwrap(), 3);
        update_heartbeats(&mut conn, &[stamp(2, 9999)])
            .await
            .unwrap();
        assert_eq!(
            get(&mut conn, A3).await.unwrap().unwrap().last_heartbeat_at,
            Some(7000),
            "the deleted agent's stamp did not land on the newcomer"
        );

        // A re-install (the same id written again) keeps its key and takes the new timestamps.
        newcomer.last_heartbeat_at = Some(7100);
        assert_eq!(upsert(&mut conn, &newcomer).await.unwrap(), 3);
        let row = get(&mut conn, A3).await.unwrap().unwrap();
        assert_eq!((row.liveness_id, row.last_heartbeat_at), (3, Some(7100)));

        // A whole-row write carries the timestamps to the liveness row too.
        let mut changed = row.clone();
        changed.machine_name = "dc3".into();
        changed.last_contact_at = 8000;
        update_live_states(&mut conn, &[changed]).await.unwrap();
        let row = get(&mut conn, A3).await.unwrap().unwrap();
        assert_eq!(
            (row.machine_name.as_str(), row.last_contact_at),
            ("dc3", 8000)
        );

        // Once the keys pass what the console holds (32 bits), enrollment is refused, saying why.
        sqlx::query("UPDATE sqlite_sequence SET seq = 4294967295 WHERE name = 'agent_liveness'")
            .execute(&mut *conn)
            .await
            .unwrap();
        let mut last = row.clone();
        last.agent_id = A1.into();
        last.credential_hash = A1.as_bytes().to_vec();
        let refused = upsert(&mut conn, &last).await.unwrap_err().to_string();
        assert!(
            refused.contains("4294967296") && refused.contains("start a new data directory"),
            "{refused}"
        );
    }
}
