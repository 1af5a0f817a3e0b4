//! Synchronization tables: `configurations`, `sync_cycles`, `directory_objects` (imported source
//! objects and the cloud directory made from them), `group_members`, `staged_deletes`,
//! `provisioning_logs` and `preview_seen`.

use super::agents::json_param;
use serde::Serialize;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

/// A configuration and its scheduling state, one per domain.
#[derive(Debug, Clone, FromRow)]
pub struct ConfigurationRow {
    pub configuration_id: String,
    pub domain: String,
    pub dialect: String,
    pub enabled: bool,
    pub password_hash_sync: bool,
    pub scope_json: String,
    pub mappings_json: String,
    pub notification_email: Option<String>,
    pub prevent_accidental_deletes: bool,
    pub delete_threshold: i64,
    pub interval_seconds: i64,
    pub sync_requested: bool,
    pub full_requested: bool,
    pub preview_requested: bool,
    pub watermark: Option<String>,
    pub current_cycle_id: Option<String>,
    pub last_cycle_id: Option<String>,
    pub last_cycle_finished_at: Option<i64>,
    pub threshold_exceeded: bool,
    pub failure_count: i64,
    pub quarantine_reason: Option<String>,
    pub quarantine_since: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub leader_agent_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
}

pub async fn insert_configuration(
    conn: &mut SqliteConnection,
    c: &ConfigurationRow,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO configurations (configuration_id, domain, dialect, enabled, password_hash_sync, \
         scope_json, mappings_json, notification_email, prevent_accidental_deletes, delete_threshold, \
         interval_seconds, created_at, created_by, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.configuration_id)
    .bind(&c.domain)
    .bind(&c.dialect)
    .bind(c.enabled)
    .bind(c.password_hash_sync)
    .bind(&c.scope_json)
    .bind(&c.mappings_json)
    .bind(&c.notification_email)
    .bind(c.prevent_accidental_deletes)
    .bind(c.delete_threshold)
    .bind(c.interval_seconds)
    .bind(c.created_at)
    .bind(&c.created_by)
    .bind(c.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes every mutable column of `c`. Callers load, change and save inside one transaction.
pub async fn save_configuration(
    conn: &mut SqliteConnection,
    c: &ConfigurationRow,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE configurations SET enabled = ?, password_hash_sync = ?, scope_json = ?, \
         mappings_json = ?, notification_email = ?, prevent_accidental_deletes = ?, \
         delete_threshold = ?, interval_seconds = ?, sync_requested = ?, full_requested = ?, \
         preview_requested = ?, watermark = ?, current_cycle_id = ?, last_cycle_id = ?, \
         last_cycle_finished_at = ?, threshold_exceeded = ?, failure_count = ?, \
         quarantine_reason = ?, quarantine_since = ?, next_attempt_at = ?, leader_agent_id = ?, \
         lease_expires_at = ?, updated_at = ? WHERE configuration_id = ?",
    )
    .bind(c.enabled)
    .bind(c.password_hash_sync)
    .bind(&c.scope_json)
    .bind(&c.mappings_json)
    .bind(&c.notification_email)
    .bind(c.prevent_accidental_deletes)
    .bind(c.delete_threshold)
    .bind(c.interval_seconds)
    .bind(c.sync_requested)
    .bind(c.full_requested)
    .bind(c.preview_requested)
    .bind(&c.watermark)
    .bind(&c.current_cycle_id)
    .bind(&c.last_cycle_id)
    .bind(c.last_cycle_finished_at)
    .bind(c.threshold_exceeded)
    .bind(c.failure_count)
    .bind(&c.quarantine_reason)
    .bind(c.quarantine_since)
    .bind(c.next_attempt_at)
    .bind(&c.leader_agent_id)
    .bind(c.lease_expires_at)
    .bind(c.updated_at)
    .bind(&c.configuration_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn configuration(
    conn: &mut SqliteConnection,
    id: &str,
) -> sqlx::Result<Option<ConfigurationRow>> {
    sqlx::query_as("SELECT * FROM configurations WHERE configuration_id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn configuration_by_domain(
    conn: &mut SqliteConnection,
    domain: &str,
) -> sqlx::Result<Option<ConfigurationRow>> {
    sqlx::query_as("SELECT * FROM configurations WHERE domain = ?")
        .bind(domain)
        .fetch_optional(conn)
        .await
}

/// By domain.
pub async fn configurations(pool: &SqlitePool) -> sqlx::Result<Vec<ConfigurationRow>> {
    sqlx::query_as("SELECT * FROM configurations ORDER BY domain")
        .fetch_all(pool)
        .await
}

pub async fn delete_configuration(conn: &mut SqliteConnection, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM configurations WHERE configuration_id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------------------------------------
// Cycles

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct CycleRow {
    pub cycle_id: String,
    pub configuration_id: String,
    pub agent_id: String,
    pub kind: String,
    pub state: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub imported: i64,
    pub created: i64,
    pub updated: i64,
    pub deleted: i64,
    pub staged: i64,
    pub skipped: i64,
    pub failed: i64,
    pub error: Option<String>,
    pub plan_json: Option<String>,
}

pub async fn insert_cycle(conn: &mut SqliteConnection, c: &CycleRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_cycles (cycle_id, configuration_id, agent_id, kind, state, started_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.cycle_id)
    .bind(&c.configuration_id)
    .bind(&c.agent_id)
    .bind(&c.kind)
    .bind(&c.state)
    .bind(c.started_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn save_cycle(conn: &mut SqliteConnection, c: &CycleRow) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sync_cycles SET kind = ?, state = ?, finished_at = ?, imported = ?, created = ?, updated = ?, \
         deleted = ?, staged = ?, skipped = ?, failed = ?, error = ?, plan_json = ? \
         WHERE cycle_id = ?",
    )
    .bind(&c.kind)
    .bind(&c.state)
    .bind(c.finished_at)
    .bind(c.imported)
    .bind(c.created)
    .bind(c.updated)
    .bind(c.deleted)
    .bind(c.staged)
    .bind(c.skipped)
    .bind(c.failed)
    .bind(&c.error)
    .bind(&c.plan_json)
    .bind(&c.cycle_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn cycle(conn: &mut SqliteConnection, id: &str) -> sqlx::Result<Option<CycleRow>> {
    sqlx::query_as("SELECT * FROM sync_cycles WHERE cycle_id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Newest first.
pub async fn cycles(
    pool: &SqlitePool,
    configuration_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<CycleRow>> {
    sqlx::query_as(
        "SELECT * FROM sync_cycles WHERE configuration_id = ? ORDER BY started_at DESC LIMIT ?",
    )
    .bind(configuration_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The newest finished preview of a configuration.
pub async fn latest_preview(
    pool: &SqlitePool,
    configuration_id: &str,
) -> sqlx::Result<Option<CycleRow>> {
    sqlx::query_as(
        "SELECT * FROM sync_cycles WHERE configuration_id = ? AND kind = 'preview' \
         ORDER BY started_at DESC LIMIT 1",
    )
    .bind(configuration_id)
    .fetch_optional(pool)
    .await
}

// ---------------------------------------------------------------------------------------------
// Directory objects

/// One imported object, with its cloud directory object when provisioned.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ObjectRow {
    pub object_id: String,
    pub domain: String,
    pub kind: String,
    pub anchor: String,
    pub dn: String,
    pub source_hash: String,
    pub source_json: String,
    pub in_scope: bool,
    pub gone: bool,
    pub provisioned: bool,
    pub attributes_json: Option<String>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub password_hash: Option<String>,
    pub password_synced_at: Option<i64>,
    pub last_seen_cycle: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub provisioned_at: Option<i64>,
}

/// The rows of `domain` with these anchors.
pub async fn objects_by_anchor(
    conn: &mut SqliteConnection,
    domain: &str,
    anchors: &[&str],
) -> sqlx::Result<Vec<ObjectRow>> {
    sqlx::query_as(
        "SELECT * FROM directory_objects WHERE domain = ? \
         AND anchor IN (SELECT value FROM json_each(?))",
    )
    .bind(domain)
    .bind(json_param(&anchors)?)
    .fetch_all(conn)
    .await
}

pub async fn object(conn: &mut SqliteConnection, id: &str) -> sqlx::Result<Option<ObjectRow>> {
    sqlx::query_as("SELECT * FROM directory_objects WHERE object_id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn object_by_dn(
    conn: &mut SqliteConnection,
    domain: &str,
    dn: &str,
) -> sqlx::Result<Option<ObjectRow>> {
    sqlx::query_as("SELECT * FROM directory_objects WHERE domain = ? AND dn = ? COLLATE NOCASE")
        .bind(domain)
        .bind(dn)
        .fetch_optional(conn)
        .await
}

/// (object id, DN) of the objects of `domain` with one of these DNs (ASCII case-insensitive).
pub async fn ids_by_dn(
    conn: &mut SqliteConnection,
    domain: &str,
    dns: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT object_id, dn FROM directory_objects WHERE domain = ? \
         AND dn COLLATE NOCASE IN (SELECT value FROM json_each(?))",
    )
    .bind(domain)
    .bind(json_param(&dns)?)
    .fetch_all(conn)
    .await
}

pub async fn insert_object(conn: &mut SqliteConnection, o: &ObjectRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO directory_objects (object_id, domain, kind, anchor, dn, source_hash, \
         source_json, in_scope, gone, provisioned, attributes_json, display_name, \
         user_principal_name, password_hash, password_synced_at, last_seen_cycle, created_at, \
         updated_at, provisioned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&o.object_id)
    .bind(&o.domain)
    .bind(&o.kind)
    .bind(&o.anchor)
    .bind(&o.dn)
    .bind(&o.source_hash)
    .bind(&o.source_json)
    .bind(o.in_scope)
    .bind(o.gone)
    .bind(o.provisioned)
    .bind(&o.attributes_json)
    .bind(&o.display_name)
    .bind(&o.user_principal_name)
    .bind(&o.password_hash)
    .bind(o.password_synced_at)
    .bind(&o.last_seen_cycle)
    .bind(o.created_at)
    .bind(o.updated_at)
    .bind(o.provisioned_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts many new rows with one statement per chunk (a first sync brings 150,000).
pub async fn insert_objects(conn: &mut SqliteConnection, rows: &[ObjectRow]) -> sqlx::Result<()> {
    for chunk in rows.chunks(1000) {
        sqlx::query(
            "INSERT INTO directory_objects (object_id, domain, kind, anchor, dn, source_hash, \
             source_json, in_scope, gone, provisioned, attributes_json, display_name, \
             user_principal_name, password_hash, password_synced_at, last_seen_cycle, created_at, \
             updated_at, provisioned_at) \
             SELECT value ->> 'object_id', value ->> 'domain', value ->> 'kind', value ->> 'anchor', \
             value ->> 'dn', value ->> 'source_hash', value ->> 'source_json', value ->> 'in_scope', \
             value ->> 'gone', value ->> 'provisioned', value ->> 'attributes_json', \
             value ->> 'display_name', value ->> 'user_principal_name', value ->> 'password_hash', \
             value ->> 'password_synced_at', value ->> 'last_seen_cycle', value ->> 'created_at', \
             value ->> 'updated_at', value ->> 'provisioned_at' FROM json_each(?)",
        )
        .bind(json_param(&chunk)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn save_object(conn: &mut SqliteConnection, o: &ObjectRow) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE directory_objects SET kind = ?, dn = ?, source_hash = ?, source_json = ?, \
         in_scope = ?, gone = ?, provisioned = ?, attributes_json = ?, display_name = ?, \
         user_principal_name = ?, password_hash = ?, password_synced_at = ?, last_seen_cycle = ?, \
         updated_at = ?, provisioned_at = ? WHERE object_id = ?",
    )
    .bind(&o.kind)
    .bind(&o.dn)
    .bind(&o.source_hash)
    .bind(&o.source_json)
    .bind(o.in_scope)
    .bind(o.gone)
    .bind(o.provisioned)
    .bind(&o.attributes_json)
    .bind(&o.display_name)
    .bind(&o.user_principal_name)
    .bind(&o.password_hash)
    .bind(o.password_synced_at)
    .bind(&o.last_seen_cycle)
    .bind(o.updated_at)
    .bind(o.provisioned_at)
    .bind(&o.object_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks unchanged objects as seen by `cycle_id` (one statement for a whole batch).
pub async fn mark_seen(
    conn: &mut SqliteConnection,
    ids: &[&str],
    cycle_id: &str,
) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE directory_objects SET last_seen_cycle = ? \
         WHERE object_id IN (SELECT value FROM json_each(?))",
    )
    .bind(cycle_id)
    .bind(json_param(&ids)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_object(conn: &mut SqliteConnection, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM directory_objects WHERE object_id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A full cycle ended: what it did not see is gone from the directory.
pub async fn mark_unseen_gone(
    conn: &mut SqliteConnection,
    domain: &str,
    cycle_id: &str,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE directory_objects SET gone = 1 WHERE domain = ? AND gone = 0 \
         AND (last_seen_cycle IS NULL OR last_seen_cycle != ?)",
    )
    .bind(domain)
    .bind(cycle_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A delta cycle reported these anchors deleted.
pub async fn mark_anchors_gone(
    conn: &mut SqliteConnection,
    domain: &str,
    anchors: &[String],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE directory_objects SET gone = 1 WHERE domain = ? \
         AND anchor IN (SELECT value FROM json_each(?))",
    )
    .bind(domain)
    .bind(json_param(&anchors)?)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Cloud objects that must go: their source is gone or out of scope.
pub async fn deletion_candidates(
    conn: &mut SqliteConnection,
    domain: &str,
) -> sqlx::Result<Vec<ObjectRow>> {
    sqlx::query_as(
        // Pinned: with a domain term several indexes qualify, and only this partial one avoids
        // reading every provisioned object of a large domain.
        "SELECT * FROM directory_objects INDEXED BY directory_objects_deletion_candidates \
         WHERE domain = ? AND provisioned = 1 AND (gone = 1 OR in_scope = 0) ORDER BY kind DESC, dn",
    )
    .bind(domain)
    .fetch_all(conn)
    .await
}

/// Imported objects whose source is gone and that are not in the cloud directory: nothing to keep.
pub async fn purge_gone(conn: &mut SqliteConnection, domain: &str) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM directory_objects INDEXED BY directory_objects_gone \
         WHERE domain = ? AND gone = 1 AND provisioned = 0",
    )
    .bind(domain)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Forgets what was imported last, so the next cycle re-evaluates every object (mappings changed).
pub async fn invalidate_hashes(conn: &mut SqliteConnection, domain: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE directory_objects SET source_hash = '' WHERE domain = ?")
        .bind(domain)
        .execute(conn)
        .await?;
    Ok(())
}

/// After an unlock the directory says "not locked": the console shows it at once, and the next
/// cycle re-reads the object.
pub async fn clear_lock(conn: &mut SqliteConnection, object_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE directory_objects SET source_json = json_remove(source_json, '$.lockouttime',          '$.pwdaccountlockedtime'), source_hash = '' WHERE object_id = ?",
    )
    .bind(object_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The synced user whose UPN is `upn` (ASCII case-insensitive).
pub async fn user_by_upn(pool: &SqlitePool, upn: &str) -> sqlx::Result<Option<ObjectRow>> {
    sqlx::query_as(
        "SELECT * FROM directory_objects WHERE kind = 'user' AND provisioned = 1 \
         AND user_principal_name = ? COLLATE NOCASE LIMIT 1",
    )
    .bind(upn)
    .fetch_optional(pool)
    .await
}

/// Imported objects of `domain` whose source is present.
pub async fn imported_count(conn: &mut SqliteConnection, domain: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM directory_objects WHERE domain = ? AND gone = 0")
        .bind(domain)
        .fetch_one(conn)
        .await
}

/// Users of `domain` that are direct members of one of these groups (by anchor).
pub async fn members_of_groups(
    conn: &mut SqliteConnection,
    domain: &str,
    group_anchors: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT m.member_id FROM group_members m \
         JOIN directory_objects g ON g.object_id = m.group_id \
         WHERE g.domain = ? AND g.anchor IN (SELECT value FROM json_each(?))",
    )
    .bind(domain)
    .bind(json_param(&group_anchors)?)
    .fetch_all(conn)
    .await
}

/// Every object of `domain` of `kind` (for scope re-evaluation).
pub async fn objects_of_domain(
    conn: &mut SqliteConnection,
    domain: &str,
    kind: &str,
) -> sqlx::Result<Vec<ObjectRow>> {
    sqlx::query_as("SELECT * FROM directory_objects WHERE domain = ? AND kind = ? AND gone = 0")
        .bind(domain)
        .bind(kind)
        .fetch_all(conn)
        .await
}

pub async fn member_ids(conn: &mut SqliteConnection, group_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT member_id FROM group_members WHERE group_id = ?")
        .bind(group_id)
        .fetch_all(conn)
        .await
}

pub async fn replace_members(
    conn: &mut SqliteConnection,
    group_id: &str,
    member_ids: &[String],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM group_members WHERE group_id = ?")
        .bind(group_id)
        .execute(&mut *conn)
        .await?;
    if !member_ids.is_empty() {
        sqlx::query(
            "INSERT OR IGNORE INTO group_members (group_id, member_id) \
             SELECT ?, value FROM json_each(?)",
        )
        .bind(group_id)
        .bind(json_param(&member_ids)?)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Cloud directory listing: provisioned objects of `kind`, searched by name, UPN or anchor.
pub async fn list_provisioned(
    pool: &SqlitePool,
    kind: &str,
    search: &str,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<ObjectRow>, i64)> {
    let pattern = format!("%{}%", like_escape(search));
    let filter = "kind = ? AND provisioned = 1 AND (? = '' OR display_name LIKE ? ESCAPE '\\' \
                  OR user_principal_name LIKE ? ESCAPE '\\' OR anchor = ? OR dn LIKE ? ESCAPE '\\')";
    let rows = sqlx::query_as(&format!(
        "SELECT * FROM directory_objects WHERE {filter} \
         ORDER BY display_name COLLATE NOCASE, object_id LIMIT ? OFFSET ?"
    ))
    .bind(kind)
    .bind(search)
    .bind(&pattern)
    .bind(&pattern)
    .bind(search)
    .bind(&pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM directory_objects WHERE {filter}"
    ))
    .bind(kind)
    .bind(search)
    .bind(&pattern)
    .bind(&pattern)
    .bind(search)
    .bind(&pattern)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// Provisioned groups `object_id` is a direct member of, or provisioned members of group `object_id`.
pub async fn related(
    pool: &SqlitePool,
    object_id: &str,
    members_of_group: bool,
) -> sqlx::Result<Vec<ObjectRow>> {
    let sql = if members_of_group {
        "SELECT o.* FROM group_members m JOIN directory_objects o ON o.object_id = m.member_id \
         WHERE m.group_id = ? AND o.provisioned = 1 ORDER BY o.display_name COLLATE NOCASE"
    } else {
        "SELECT o.* FROM group_members m JOIN directory_objects o ON o.object_id = m.group_id \
         WHERE m.member_id = ? AND o.provisioned = 1 ORDER BY o.display_name COLLATE NOCASE"
    };
    sqlx::query_as(sql).bind(object_id).fetch_all(pool).await
}

/// Counts of provisioned objects per kind for a domain: (users, groups).
pub async fn provisioned_counts(pool: &SqlitePool, domain: &str) -> sqlx::Result<(i64, i64)> {
    // Grouped by kind so SQLite counts in the directory_objects_counts index alone.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, COUNT(*) FROM directory_objects \
         WHERE domain = ? AND provisioned = 1 GROUP BY kind",
    )
    .bind(domain)
    .fetch_all(pool)
    .await?;
    let count = |kind: &str| rows.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
    Ok((count("user"), count("group")))
}

// ---------------------------------------------------------------------------------------------
// Staged deletions

pub async fn replace_staged(
    conn: &mut SqliteConnection,
    configuration_id: &str,
    staged: &[(String, String)],
    at: i64,
) -> sqlx::Result<()> {
    clear_staged(conn, configuration_id).await?;
    if staged.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO staged_deletes (configuration_id, object_id, reason, staged_at) \
         SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ? FROM json_each(?)",
    )
    .bind(configuration_id)
    .bind(at)
    .bind(json_param(&staged)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn clear_staged(conn: &mut SqliteConnection, configuration_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM staged_deletes WHERE configuration_id = ?")
        .bind(configuration_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Staged objects with the reason they would go.
pub async fn staged(
    conn: &mut SqliteConnection,
    configuration_id: &str,
) -> sqlx::Result<Vec<(ObjectRow, String)>> {
    let reasons: Vec<(String, String)> = sqlx::query_as(
        "SELECT object_id, reason FROM staged_deletes WHERE configuration_id = ? ORDER BY object_id",
    )
    .bind(configuration_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(reasons.len());
    for (id, reason) in reasons {
        if let Some(row) = object(conn, &id).await? {
            out.push((row, reason));
        }
    }
    Ok(out)
}

pub async fn staged_ids(
    conn: &mut SqliteConnection,
    configuration_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT object_id FROM staged_deletes WHERE configuration_id = ?")
        .bind(configuration_id)
        .fetch_all(conn)
        .await
}

// ---------------------------------------------------------------------------------------------
// Preview bookkeeping

pub async fn preview_seen(
    conn: &mut SqliteConnection,
    cycle_id: &str,
    anchors: &[&str],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO preview_seen (cycle_id, anchor) SELECT ?, value FROM json_each(?)",
    )
    .bind(cycle_id)
    .bind(json_param(&anchors)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Provisioned objects a complete preview did not see.
pub async fn preview_unseen(
    conn: &mut SqliteConnection,
    domain: &str,
    cycle_id: &str,
) -> sqlx::Result<Vec<ObjectRow>> {
    sqlx::query_as(
        "SELECT * FROM directory_objects o WHERE o.domain = ? AND o.provisioned = 1 \
         AND NOT EXISTS (SELECT 1 FROM preview_seen s WHERE s.cycle_id = ? AND s.anchor = o.anchor)",
    )
    .bind(domain)
    .bind(cycle_id)
    .fetch_all(conn)
    .await
}

pub async fn forget_preview(conn: &mut SqliteConnection, cycle_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM preview_seen WHERE cycle_id = ?")
        .bind(cycle_id)
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Provisioning logs

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LogRow {
    pub log_id: i64,
    pub at: i64,
    pub cycle_id: Option<String>,
    pub configuration_id: Option<String>,
    pub domain: String,
    pub object_kind: String,
    pub source_dn: String,
    pub source_anchor: String,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub action: String,
    pub status: String,
    pub initiated_by: String,
    pub modified_json: String,
    pub steps_json: String,
    pub error: Option<String>,
    pub recommendation: Option<String>,
    pub duration_ms: i64,
}

/// A log row to write (`log_id` is assigned by the database).
#[derive(Debug, Clone, Serialize)]
pub struct NewLog {
    pub at: i64,
    pub cycle_id: Option<String>,
    pub configuration_id: Option<String>,
    pub domain: String,
    pub object_kind: String,
    pub source_dn: String,
    pub source_anchor: String,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub action: &'static str,
    pub status: &'static str,
    pub initiated_by: String,
    pub modified_json: String,
    pub steps_json: String,
    pub error: Option<String>,
    pub recommendation: Option<String>,
    pub duration_ms: i64,
}

/// Writes many log rows with one statement.
pub async fn insert_logs(conn: &mut SqliteConnection, logs: &[NewLog]) -> sqlx::Result<()> {
    for chunk in logs.chunks(2000) {
        sqlx::query(
            "INSERT INTO provisioning_logs (at, cycle_id, configuration_id, domain, object_kind, \
             source_dn, source_anchor, target_id, target_name, action, status, initiated_by, \
             modified_json, steps_json, error, recommendation, duration_ms) \
             SELECT value ->> 'at', value ->> 'cycle_id', value ->> 'configuration_id', \
             value ->> 'domain', value ->> 'object_kind', value ->> 'source_dn', \
             value ->> 'source_anchor', value ->> 'target_id', value ->> 'target_name', \
             value ->> 'action', value ->> 'status', value ->> 'initiated_by', \
             value ->> 'modified_json', value ->> 'steps_json', value ->> 'error', \
             value ->> 'recommendation', value ->> 'duration_ms' FROM json_each(?)",
        )
        .bind(json_param(&chunk)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Filters of the provisioning logs; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub status: String,
    pub action: String,
    pub configuration_id: String,
    pub cycle_id: String,
    /// Anchor (exact), or part of the DN or target name.
    pub search: String,
}

pub async fn logs(
    pool: &SqlitePool,
    f: &LogFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<LogRow>, i64)> {
    let pattern = format!("%{}%", like_escape(&f.search));
    let filter = "(? IS NULL OR at >= ?) AND (? IS NULL OR at < ?) AND (? = '' OR status = ?) \
                  AND (? = '' OR action = ?) AND (? = '' OR configuration_id = ?) \
                  AND (? = '' OR cycle_id = ?) AND (? = '' OR source_anchor = ? \
                  OR source_dn LIKE ? ESCAPE '\\' OR target_name LIKE ? ESCAPE '\\')";
    macro_rules! bind_filter {
        ($q:expr) => {
            $q.bind(f.since)
                .bind(f.since)
                .bind(f.until)
                .bind(f.until)
                .bind(&f.status)
                .bind(&f.status)
                .bind(&f.action)
                .bind(&f.action)
                .bind(&f.configuration_id)
                .bind(&f.configuration_id)
                .bind(&f.cycle_id)
                .bind(&f.cycle_id)
                .bind(&f.search)
                .bind(&f.search)
                .bind(&pattern)
                .bind(&pattern)
        };
    }
    let sql = format!(
        "SELECT * FROM provisioning_logs WHERE {filter} ORDER BY at DESC, log_id DESC LIMIT ? OFFSET ?"
    );
    let rows = bind_filter!(sqlx::query_as(&sql))
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let count_sql = format!("SELECT COUNT(*) FROM provisioning_logs WHERE {filter}");
    let total = bind_filter!(sqlx::query_scalar(&count_sql))
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

pub async fn log(pool: &SqlitePool, id: i64) -> sqlx::Result<Option<LogRow>> {
    sqlx::query_as("SELECT * FROM provisioning_logs WHERE log_id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// `%`, `_` and `\` taken literally in a LIKE pattern with `ESCAPE '\'`.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reported domains

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct DomainRow {
    pub domain: String,
    pub dialect: String,
    pub base_dn: String,
    pub reported_by: String,
    pub reported_at: i64,
}

pub async fn report_domain(conn: &mut SqliteConnection, d: &DomainRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_domains (domain, dialect, base_dn, reported_by, reported_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET dialect = excluded.dialect, \
         base_dn = excluded.base_dn, reported_by = excluded.reported_by, \
         reported_at = excluded.reported_at \
         WHERE dialect != excluded.dialect OR base_dn != excluded.base_dn",
    )
    .bind(&d.domain)
    .bind(&d.dialect)
    .bind(&d.base_dn)
    .bind(&d.reported_by)
    .bind(d.reported_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn reported_domain(
    conn: &mut SqliteConnection,
    domain: &str,
) -> sqlx::Result<Option<DomainRow>> {
    sqlx::query_as("SELECT * FROM sync_domains WHERE domain = ?")
        .bind(domain)
        .fetch_optional(conn)
        .await
}

pub async fn reported_domains(pool: &SqlitePool) -> sqlx::Result<Vec<DomainRow>> {
    sqlx::query_as("SELECT * FROM sync_domains ORDER BY domain")
        .fetch_all(pool)
        .await
}
