//! Configurations and their cycles: what the Configurations screens and the API do, and the
//! console's side of the agents' sync protocol (lease, batch, finish). Every change is one
//! `BEGIN IMMEDIATE` transaction, so concurrent agents and administrators never interleave halfway.

use super::engine::{self, Context, Counts};
use super::mapping::ObjectMappings;
use super::metrics::SyncMetrics;
use super::scope::Scope;
use crate::db::sync::{self as store, ConfigurationRow, CycleRow};
use crate::db::{self, audit};
use crate::directory::Dialect;
use crate::protocol::sync::{
    Assignment, Batch, BatchAccepted, CycleKind, CycleOrder, Finish, FinishAccepted, LeaseRequest,
    LeaseResponse, Role,
};
use serde::Serialize;
use sqlx::{SqliteConnection, SqlitePool};

/// Failed cycles in a row before a configuration is quarantined.
pub const QUARANTINE_AFTER: i64 = 3;
/// Quarantined retries back off up to once a day, as in the admin center.
const QUARANTINE_MAX_BACKOFF_MS: i64 = 24 * 3600 * 1000;
/// Default cycle interval: the admin center's "every 2 minutes".
pub const DEFAULT_INTERVAL_SECONDS: i64 = 120;
pub const DEFAULT_DELETE_THRESHOLD: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, SyncError>;

/// The status codes of the admin center, plus what an administrator reads.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// NotRun, Active, Paused, Quarantine.
    pub code: &'static str,
    /// e.g. "Healthy", "Delete threshold exceeded", "Quarantine: cannot bind…".
    pub text: String,
}

pub fn status(c: &ConfigurationRow) -> Status {
    if let Some(reason) = &c.quarantine_reason {
        return Status {
            code: "Quarantine",
            text: format!("Quarantine: {reason}"),
        };
    }
    let code = match (c.enabled, c.last_cycle_finished_at.is_some()) {
        (true, true) => "Active",
        (false, true) => "Paused",
        (_, false) => "NotRun",
    };
    let text = if c.threshold_exceeded {
        "Delete threshold exceeded".to_owned()
    } else {
        match code {
            "Active" if c.failure_count > 0 => {
                format!("Active, {} failed cycle(s) in a row", c.failure_count)
            }
            "Active" => "Healthy".to_owned(),
            "Paused" => "Disabled".to_owned(),
            _ if c.enabled => "Enabled, first cycle pending".to_owned(),
            _ => "Not enabled yet".to_owned(),
        }
    };
    Status { code, text }
}

pub fn scope_of(c: &ConfigurationRow) -> Scope {
    serde_json::from_str(&c.scope_json).unwrap_or_default()
}

pub fn mappings_of(c: &ConfigurationRow) -> ObjectMappings {
    serde_json::from_str(&c.mappings_json)
        .unwrap_or_else(|_| ObjectMappings::defaults(dialect_of(c), &c.domain))
}

pub fn dialect_of(c: &ConfigurationRow) -> Dialect {
    if c.dialect == Dialect::ActiveDirectory.as_str() {
        Dialect::ActiveDirectory
    } else {
        Dialect::OpenLdap
    }
}

async fn begin(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

async fn load(conn: &mut SqliteConnection, id: &str) -> Result<ConfigurationRow> {
    store::configuration(conn, id)
        .await?
        .ok_or_else(|| SyncError::NotFound(format!("No configuration with id {id}.")))
}

async fn audit_change(
    conn: &mut SqliteConnection,
    actor: &str,
    action: &str,
    c: &ConfigurationRow,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<()> {
    audit::insert(
        conn,
        &audit::NewAuditEntry {
            at: db::now_ms(),
            actor,
            action,
            target_type: "configuration",
            target_id: &c.domain,
            before,
            after,
        },
    )
    .await?;
    Ok(())
}

/// The settings an administrator edits, as the API shows them.
pub fn settings_json(c: &ConfigurationRow) -> serde_json::Value {
    serde_json::json!({
        "enabled": c.enabled,
        "password_hash_sync": c.password_hash_sync,
        "scope": scope_of(c),
        "notification_email": c.notification_email,
        "prevent_accidental_deletes": c.prevent_accidental_deletes,
        "delete_threshold": c.delete_threshold,
        "interval_seconds": c.interval_seconds,
    })
}

/// New configuration: for a domain that has an agent and no configuration yet; created disabled,
/// as in the admin center.
pub async fn create(
    pool: &SqlitePool,
    actor: &str,
    domain: &str,
    password_hash_sync: bool,
) -> Result<ConfigurationRow> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return Err(SyncError::Invalid(
            "Pick a domain: `domain` is empty.".into(),
        ));
    }
    let mut tx = begin(pool).await?;
    let Some(reported) = store::reported_domain(&mut tx, &domain).await? else {
        return Err(SyncError::Invalid(format!(
            "No running agent has reported {domain}: connect the directory on an agent (`hybridsync agent add-directory --domain {domain} …`) and make sure the agent runs, then try again."
        )));
    };
    let dialect = if reported.dialect == Dialect::ActiveDirectory.as_str() {
        Dialect::ActiveDirectory
    } else {
        Dialect::OpenLdap
    };
    if store::configuration_by_domain(&mut tx, &domain)
        .await?
        .is_some()
    {
        return Err(SyncError::Conflict(format!(
            "{domain} already has a configuration; a domain has one configuration."
        )));
    }
    let now = db::now_ms();
    let row = ConfigurationRow {
        configuration_id: uuid::Uuid::new_v4().to_string(),
        domain: domain.clone(),
        dialect: dialect.as_str().to_owned(),
        enabled: false,
        password_hash_sync,
        scope_json: serde_json::to_string(&Scope::default()).unwrap_or_default(),
        mappings_json: serde_json::to_string(&ObjectMappings::defaults(dialect, &domain))
            .unwrap_or_default(),
        notification_email: None,
        prevent_accidental_deletes: true,
        delete_threshold: DEFAULT_DELETE_THRESHOLD,
        interval_seconds: DEFAULT_INTERVAL_SECONDS,
        sync_requested: false,
        full_requested: true,
        preview_requested: false,
        watermark: None,
        current_cycle_id: None,
        last_cycle_id: None,
        last_cycle_finished_at: None,
        threshold_exceeded: false,
        failure_count: 0,
        quarantine_reason: None,
        quarantine_since: None,
        next_attempt_at: None,
        leader_agent_id: None,
        lease_expires_at: None,
        created_at: now,
        created_by: actor.to_owned(),
        updated_at: now,
    };
    store::insert_configuration(&mut tx, &row).await?;
    audit_change(
        &mut tx,
        actor,
        "configuration.create",
        &row,
        None,
        Some(settings_json(&row)),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// A change to a configuration's settings; absent fields stay as they are.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    pub password_hash_sync: Option<bool>,
    pub scope: Option<Scope>,
    pub mappings: Option<ObjectMappings>,
    /// Empty string clears it.
    pub notification_email: Option<String>,
    pub prevent_accidental_deletes: Option<bool>,
    pub delete_threshold: Option<i64>,
    pub interval_seconds: Option<i64>,
}

/// Checks what needs no agent. Scope DNs are checked through an agent by the caller first.
pub fn check_changes(ch: &Changes) -> std::result::Result<(), String> {
    if let Some(scope) = &ch.scope {
        scope.check()?;
    }
    if let Some(m) = &ch.mappings {
        m.validate().map_err(|e| e.to_string())?;
    }
    if let Some(email) = &ch.notification_email {
        let e = email.trim();
        if !e.is_empty()
            && (e.len() > 254
                || e.contains(char::is_whitespace)
                || !e
                    .split_once('@')
                    .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')))
        {
            return Err(format!(
                "{e:?} is not an email address (expected e.g. it-team@example.com)."
            ));
        }
    }
    if let Some(t) = ch.delete_threshold {
        if !(1..=150_000).contains(&t) {
            return Err(format!(
                "The accidental-deletion threshold must be between 1 and 150000, not {t}."
            ));
        }
    }
    if let Some(i) = ch.interval_seconds {
        if !(1..=86_400).contains(&i) {
            return Err(format!(
                "The sync interval must be between 1 and 86400 seconds, not {i}."
            ));
        }
    }
    Ok(())
}

pub async fn update(
    pool: &SqlitePool,
    actor: &str,
    id: &str,
    ch: Changes,
) -> Result<ConfigurationRow> {
    check_changes(&ch).map_err(SyncError::Invalid)?;
    let mut tx = begin(pool).await?;
    let mut c = load(&mut tx, id).await?;
    let before = settings_json(&c);
    let mappings_before = c.mappings_json.clone();
    if let Some(v) = ch.password_hash_sync {
        c.password_hash_sync = v;
    }
    if let Some(scope) = &ch.scope {
        c.scope_json = serde_json::to_string(scope).unwrap_or_default();
    }
    if let Some(m) = &ch.mappings {
        c.mappings_json = serde_json::to_string(m).unwrap_or_default();
        if c.mappings_json != mappings_before {
            // "Save schema" warns that a sync will occur: new mappings apply to every object, so
            // the next cycle is a full one that re-evaluates even unchanged objects.
            c.full_requested = true;
            store::invalidate_hashes(&mut tx, &c.domain).await?;
        }
    }
    if let Some(e) = &ch.notification_email {
        let e = e.trim();
        c.notification_email = (!e.is_empty()).then(|| e.to_owned());
    }
    if let Some(v) = ch.prevent_accidental_deletes {
        c.prevent_accidental_deletes = v;
    }
    if let Some(v) = ch.delete_threshold {
        c.delete_threshold = v;
    }
    if let Some(v) = ch.interval_seconds {
        c.interval_seconds = v;
    }
    c.updated_at = db::now_ms();
    store::save_configuration(&mut tx, &c).await?;
    let mut after = settings_json(&c);
    if ch.mappings.is_some() {
        after["mappings_changed"] = serde_json::Value::Bool(c.mappings_json != mappings_before);
    }
    audit_change(
        &mut tx,
        actor,
        "configuration.update",
        &c,
        Some(before),
        Some(after),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

/// The one-click operations of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Enable,
    Disable,
    SyncNow,
    Restart,
    AllowDeletes,
    ClearQuarantine,
    Preview,
}

impl Operation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enable" => Operation::Enable,
            "disable" => Operation::Disable,
            "sync-now" => Operation::SyncNow,
            "restart" => Operation::Restart,
            "allow-deletes" => Operation::AllowDeletes,
            "clear-quarantine" => Operation::ClearQuarantine,
            "preview" => Operation::Preview,
            _ => return None,
        })
    }
    pub fn audit_action(self) -> &'static str {
        match self {
            Operation::Enable => "configuration.enable",
            Operation::Disable => "configuration.disable",
            Operation::SyncNow => "configuration.sync_now",
            Operation::Restart => "configuration.restart",
            Operation::AllowDeletes => "configuration.allow_deletes",
            Operation::ClearQuarantine => "configuration.clear_quarantine",
            Operation::Preview => "configuration.preview",
        }
    }
    /// What the operation did, for the flash message.
    pub fn done(self) -> &'static str {
        match self {
            Operation::Enable => "Configuration enabled: the first cycle starts now.",
            Operation::Disable => "Configuration disabled: no cycles run until it is enabled again.",
            Operation::SyncNow => "A cycle starts now.",
            Operation::Restart => "Restarted: staged deletions, watermark and quarantine are cleared; a full cycle starts now.",
            Operation::AllowDeletes => "The staged deletions were applied.",
            Operation::ClearQuarantine => "Quarantine cleared: a full cycle starts now.",
            Operation::Preview => "Preview requested: the domain's agent reads the directory; nothing is applied.",
        }
    }
}

/// Runs one operation; returns the configuration after it and, for Allow deletes, how many went.
pub async fn operate(
    pool: &SqlitePool,
    actor: &str,
    id: &str,
    op: Operation,
) -> Result<(ConfigurationRow, u64)> {
    let mut tx = begin(pool).await?;
    let mut c = load(&mut tx, id).await?;
    let before = serde_json::json!({"status": status(&c).text});
    let mut applied = 0;
    match op {
        Operation::Enable => {
            c.enabled = true;
            c.sync_requested = true;
        }
        Operation::Disable => c.enabled = false,
        Operation::SyncNow => {
            if !c.enabled {
                return Err(SyncError::Conflict(
                    "The configuration is disabled: enable it first (Sync now runs a cycle of an enabled configuration; Preview works while disabled).".into(),
                ));
            }
            c.sync_requested = true;
        }
        Operation::Restart => {
            store::clear_staged(&mut tx, &c.configuration_id).await?;
            clear_state(&mut c);
            c.threshold_exceeded = false;
            c.sync_requested = true;
        }
        Operation::ClearQuarantine => {
            if c.quarantine_reason.is_none() {
                return Err(SyncError::Conflict(
                    "The configuration is not in quarantine.".into(),
                ));
            }
            clear_state(&mut c);
            c.sync_requested = true;
        }
        Operation::AllowDeletes => {
            if !c.threshold_exceeded {
                return Err(SyncError::Conflict(
                    "No deletions are staged: the accidental-deletion threshold was not exceeded."
                        .into(),
                ));
            }
            applied = apply_staged(&mut tx, &c, actor).await?;
            c.threshold_exceeded = false;
        }
        Operation::Preview => c.preview_requested = true,
    }
    c.updated_at = db::now_ms();
    store::save_configuration(&mut tx, &c).await?;
    let mut after = serde_json::json!({"status": status(&c).text});
    if op == Operation::AllowDeletes {
        after["deleted"] = applied.into();
    }
    audit_change(
        &mut tx,
        actor,
        op.audit_action(),
        &c,
        Some(before),
        Some(after),
    )
    .await?;
    tx.commit().await?;
    Ok((c, applied))
}

/// Restart sync / Clear quarantine: the next cycle is a full one, from no watermark.
fn clear_state(c: &mut ConfigurationRow) {
    c.watermark = None;
    c.full_requested = true;
    c.failure_count = 0;
    c.quarantine_reason = None;
    c.quarantine_since = None;
    c.next_attempt_at = None;
}

async fn apply_staged(
    conn: &mut SqliteConnection,
    c: &ConfigurationRow,
    actor: &str,
) -> Result<u64> {
    let now = db::now_ms();
    let ctx = context(c, None, format!("Allow deletes by {actor}"), false);
    let mut logs = Vec::new();
    let staged = store::staged(conn, &c.configuration_id).await?;
    for (row, reason) in &staged {
        // Still a candidate? The source may have come back since it was staged.
        if !row.provisioned || (!row.gone && row.in_scope) {
            continue;
        }
        engine::delete_cloud_object(conn, row, now).await?;
        let outcome = engine::deletion_outcome(row, false, reason);
        logs.push(engine::log_of(&ctx, &outcome, now, 0));
    }
    store::insert_logs(conn, &logs).await?;
    store::clear_staged(conn, &c.configuration_id).await?;
    Ok(logs.len() as u64)
}

pub async fn delete(pool: &SqlitePool, actor: &str, id: &str) -> Result<ConfigurationRow> {
    let mut tx = begin(pool).await?;
    let c = load(&mut tx, id).await?;
    store::delete_configuration(&mut tx, id).await?;
    audit_change(
        &mut tx,
        actor,
        "configuration.delete",
        &c,
        Some(settings_json(&c)),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

pub fn context(
    c: &ConfigurationRow,
    cycle_id: Option<String>,
    initiated_by: String,
    dry_run: bool,
) -> Context {
    Context {
        configuration_id: c.configuration_id.clone(),
        domain: c.domain.clone(),
        mappings: mappings_of(c),
        scope: scope_of(c),
        password_hash_sync: c.password_hash_sync,
        cycle_id,
        initiated_by,
        dry_run,
    }
}

/// The source attributes agents read: what the mappings use plus what the engine needs.
pub fn attributes_to_read(c: &ConfigurationRow) -> Vec<String> {
    let mut attrs = mappings_of(c).source_attributes();
    attrs.extend(["member", "objectclass"].map(String::from));
    // The lock state, shown with each user (and refreshed by unlocks).
    if dialect_of(c) == Dialect::ActiveDirectory {
        attrs.extend(["iscriticalsystemobject", "lockouttime"].map(String::from));
    } else {
        attrs.push("pwdaccountlockedtime".into());
    }
    attrs.sort();
    attrs.dedup();
    attrs
}

// ---------------------------------------------------------------------------------------------
// The agents' side

/// How long a leader's lease lasts, in poll intervals: a standby polling every interval takes over
/// within three intervals of the leader's last renewal.
const LEASE_INTERVALS: u64 = 2;

/// `POST /agent-api/v1/sync/lease`: for each domain the agent serves, whether it runs the cycles
/// and whether one is due now. A cycle found abandoned ends as failed, and counts in `metrics`.
pub async fn lease(
    pool: &SqlitePool,
    metrics: &SyncMetrics,
    agent_id: &str,
    agent_name: impl Fn(&str) -> String,
    req: &LeaseRequest,
) -> Result<LeaseResponse> {
    let poll_ms = req.poll_interval_ms.clamp(100, 3_600_000);
    let mut assignments = Vec::new();
    for reported in &req.domains {
        let domain = &reported.domain;
        let mut tx = begin(pool).await?;
        store::report_domain(
            &mut tx,
            &store::DomainRow {
                domain: domain.clone(),
                dialect: reported.dialect.clone(),
                base_dn: reported.base_dn.clone(),
                reported_by: agent_id.to_owned(),
                reported_at: db::now_ms(),
            },
        )
        .await?;
        let Some(mut c) = store::configuration_by_domain(&mut tx, domain).await? else {
            assignments.push(Assignment {
                domain: domain.clone(),
                role: Role::None,
                reason: Some(format!("{domain} has no configuration in the console.")),
                cycle: None,
            });
            tx.commit().await?;
            continue;
        };
        let now = db::now_ms();
        let lease_ms = i64::try_from(poll_ms.saturating_mul(LEASE_INTERVALS)).unwrap_or(i64::MAX);
        let held_by_other = c.leader_agent_id.as_deref().is_some_and(|l| l != agent_id)
            && c.lease_expires_at.is_some_and(|t| t > now);
        if held_by_other {
            let leader = c.leader_agent_id.clone().unwrap_or_default();
            assignments.push(Assignment {
                domain: domain.clone(),
                role: Role::Standby,
                reason: Some(format!(
                    "agent {} runs {domain}'s cycles; this agent takes over if it stops",
                    agent_name(&leader)
                )),
                cycle: None,
            });
            tx.commit().await?;
            continue;
        }
        let takeover = c.leader_agent_id.as_deref() != Some(agent_id);
        c.leader_agent_id = Some(agent_id.to_owned());
        c.lease_expires_at = Some(now.saturating_add(lease_ms));
        // A cycle still open here was abandoned: its agent stopped, or (same agent) restarted.
        let mut abandoned = None;
        if let Some(open) = c.current_cycle_id.take() {
            if let Some(mut cycle) = store::cycle(&mut tx, &open).await? {
                if cycle.state == "running" {
                    cycle.state = "failed".into();
                    cycle.finished_at = Some(now);
                    cycle.error = Some(if takeover {
                        format!(
                            "agent {} stopped during the cycle; agent {} took over",
                            agent_name(&cycle.agent_id),
                            agent_name(agent_id)
                        )
                    } else {
                        "the agent restarted during the cycle".to_owned()
                    });
                    store::save_cycle(&mut tx, &cycle).await?;
                    store::forget_preview(&mut tx, &cycle.cycle_id).await?;
                    abandoned = Some(cycle);
                }
            }
        }
        let order = due(&c, now).map(|kind| {
            let cycle_id = uuid::Uuid::new_v4().to_string();
            CycleOrder {
                cycle_id,
                configuration_id: c.configuration_id.clone(),
                kind,
                watermark: if kind == CycleKind::Full {
                    None
                } else {
                    c.watermark.clone()
                },
                attributes: attributes_to_read(&c),
                password_hash_sync: c.password_hash_sync,
            }
        });
        if let Some(order) = &order {
            store::insert_cycle(
                &mut tx,
                &CycleRow {
                    cycle_id: order.cycle_id.clone(),
                    configuration_id: c.configuration_id.clone(),
                    agent_id: agent_id.to_owned(),
                    kind: order.kind.as_str().to_owned(),
                    state: "running".into(),
                    started_at: now,
                    finished_at: None,
                    imported: 0,
                    created: 0,
                    updated: 0,
                    deleted: 0,
                    staged: 0,
                    skipped: 0,
                    failed: 0,
                    error: None,
                    plan_json: None,
                },
            )
            .await?;
            c.current_cycle_id = Some(order.cycle_id.clone());
            if order.kind == CycleKind::Preview {
                c.preview_requested = false;
            } else {
                c.sync_requested = false;
            }
        }
        store::save_configuration(&mut tx, &c).await?;
        tx.commit().await?;
        if let Some(cycle) = &abandoned {
            metrics.cycle_ended(cycle);
        }
        if takeover {
            tracing::info!(domain = %domain, agent_id, "agent now runs the domain's cycles");
        }
        assignments.push(Assignment {
            domain: domain.clone(),
            role: Role::Leader,
            reason: (!c.enabled).then(|| "the configuration is disabled".to_owned()),
            cycle: order,
        });
    }
    Ok(LeaseResponse {
        assignments,
        poll_seconds: poll_ms.div_ceil(1000).max(1),
    })
}

/// Which cycle, if any, the leader should run now.
fn due(c: &ConfigurationRow, now: i64) -> Option<CycleKind> {
    if c.preview_requested {
        return Some(CycleKind::Preview);
    }
    if !c.enabled {
        return None;
    }
    if c.quarantine_reason.is_some() && c.next_attempt_at.is_some_and(|t| now < t) {
        return None;
    }
    let interval_due = c
        .last_cycle_finished_at
        .is_none_or(|t| now >= t.saturating_add(c.interval_seconds.saturating_mul(1000)));
    let retry_due = c.quarantine_reason.is_some();
    if !(c.sync_requested || c.full_requested || interval_due || retry_due) {
        return None;
    }
    Some(if c.full_requested || c.watermark.is_none() {
        CycleKind::Full
    } else {
        CycleKind::Delta
    })
}

/// The configuration and cycle a batch or finish belongs to, if this agent still runs it.
async fn current(
    conn: &mut SqliteConnection,
    agent_id: &str,
    cycle_id: &str,
) -> Result<(ConfigurationRow, CycleRow)> {
    let cycle = store::cycle(conn, cycle_id)
        .await?
        .ok_or_else(|| SyncError::NotFound(format!("No cycle {cycle_id}.")))?;
    let c = load(conn, &cycle.configuration_id).await?;
    if c.current_cycle_id.as_deref() != Some(cycle_id)
        || c.leader_agent_id.as_deref() != Some(agent_id)
        || cycle.state != "running"
    {
        return Err(SyncError::Conflict(format!(
            "Cycle {cycle_id} is no longer current for {}: another agent took over or the cycle was ended. Ask for a new lease.",
            c.domain
        )));
    }
    Ok((c, cycle))
}

fn add(cycle: &mut CycleRow, counts: &Counts) {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    cycle.imported += n(counts.imported);
    cycle.created += n(counts.created);
    cycle.updated += n(counts.updated);
    cycle.deleted += n(counts.deleted);
    cycle.staged += n(counts.staged);
    cycle.skipped += n(counts.skipped);
    cycle.failed += n(counts.failed);
}

/// A preview's plan: counts and the first items.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct Plan {
    pub items: Vec<engine::Outcome>,
    pub truncated: bool,
    pub would_exceed_threshold: bool,
}

fn extend_plan(cycle: &mut CycleRow, outcomes: Vec<engine::Outcome>) {
    let mut plan: Plan = cycle
        .plan_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    for o in outcomes.into_iter().filter(|o| o.action != "none") {
        if plan.items.len() >= engine::PLAN_ITEMS {
            plan.truncated = true;
            break;
        }
        plan.items.push(o);
    }
    cycle.plan_json = serde_json::to_string(&plan).ok();
}

/// `POST /agent-api/v1/sync/cycles/{id}/batch`.
pub async fn batch(
    pool: &SqlitePool,
    agent_id: &str,
    cycle_id: &str,
    batch: &Batch,
) -> Result<BatchAccepted> {
    let poll_ms = batch.poll_interval_ms.clamp(100, 3_600_000);
    let mut tx = begin(pool).await?;
    let (mut c, mut cycle) = current(&mut tx, agent_id, cycle_id).await?;
    let dry_run = cycle.kind == "preview";
    let ctx = context(&c, Some(cycle_id.to_owned()), "cycle".into(), dry_run);
    let now = db::now_ms();
    let applied = engine::apply_batch(&mut tx, &ctx, &batch.objects, now).await?;
    add(&mut cycle, &applied.counts);
    if dry_run {
        extend_plan(&mut cycle, applied.outcomes);
    }
    store::save_cycle(&mut tx, &cycle).await?;
    // Each batch renews the lease: a long cycle keeps its leader.
    c.lease_expires_at = Some(now.saturating_add(
        i64::try_from(poll_ms.saturating_mul(LEASE_INTERVALS)).unwrap_or(i64::MAX),
    ));
    store::save_configuration(&mut tx, &c).await?;
    tx.commit().await?;
    let counts = applied.counts;
    Ok(BatchAccepted {
        imported: counts.imported,
        created: counts.created,
        updated: counts.updated,
        skipped: counts.skipped,
        failed: counts.failed,
    })
}

/// `POST /agent-api/v1/sync/cycles/{id}/finish`: deletions (against the threshold), the
/// watermark, and the cycle's outcome, which is counted in `metrics` once committed.
pub async fn finish(
    pool: &SqlitePool,
    metrics: &SyncMetrics,
    agent_id: &str,
    cycle_id: &str,
    f: &Finish,
) -> Result<FinishAccepted> {
    let mut tx = begin(pool).await?;
    let (mut c, mut cycle) = current(&mut tx, agent_id, cycle_id).await?;
    let now = db::now_ms();
    c.current_cycle_id = None;
    cycle.finished_at = Some(now);
    if cycle.kind == "preview" {
        let accepted = finish_preview(&mut tx, &c, &mut cycle, f).await?;
        store::save_cycle(&mut tx, &cycle).await?;
        store::save_configuration(&mut tx, &c).await?;
        tx.commit().await?;
        metrics.cycle_ended(&cycle);
        return Ok(accepted);
    }
    if let Some(error) = &f.error {
        cycle.state = "failed".into();
        cycle.error = Some(error.clone());
        c.failure_count += 1;
        c.last_cycle_id = Some(cycle_id.to_owned());
        if c.failure_count >= QUARANTINE_AFTER {
            if c.quarantine_reason.is_none() {
                c.quarantine_since = Some(now);
                tracing::warn!(domain = %c.domain, "configuration quarantined: {error}");
            }
            c.quarantine_reason = Some(error.clone());
            let doublings = u32::try_from(c.failure_count - QUARANTINE_AFTER)
                .unwrap_or(u32::MAX)
                .min(20);
            let backoff = c
                .interval_seconds
                .saturating_mul(1000)
                .saturating_mul(1_i64 << doublings)
                .min(QUARANTINE_MAX_BACKOFF_MS);
            c.next_attempt_at = Some(now.saturating_add(backoff));
        }
        store::save_cycle(&mut tx, &cycle).await?;
        store::save_configuration(&mut tx, &c).await?;
        tx.commit().await?;
        metrics.cycle_ended(&cycle);
        return Ok(FinishAccepted {
            state: cycle.state,
            deleted: 0,
            staged: 0,
        });
    }
    let ctx = context(&c, Some(cycle_id.to_owned()), "cycle".into(), false);
    if f.complete && cycle.kind == "delta" {
        // The agent had no state for a delta (it just took over, or lost its files) and read
        // everything: record what really ran.
        cycle.kind = "full".into();
    }
    if f.complete {
        store::mark_unseen_gone(&mut tx, &c.domain, cycle_id).await?;
    } else if !f.deleted.is_empty() {
        store::mark_anchors_gone(&mut tx, &c.domain, &f.deleted).await?;
    }
    if !ctx.scope.group_anchors().is_empty() {
        let applied = engine::reconcile_group_scope(&mut tx, &ctx, now).await?;
        add(&mut cycle, &applied.counts);
    }
    let candidates = store::deletion_candidates(&mut tx, &c.domain).await?;
    let threshold_hit = c.prevent_accidental_deletes
        && i64::try_from(candidates.len()).unwrap_or(i64::MAX) >= c.delete_threshold;
    let mut logs = Vec::new();
    let (mut deleted, mut staged) = (0, 0);
    if threshold_hit {
        let already: std::collections::HashSet<String> =
            store::staged_ids(&mut tx, &c.configuration_id)
                .await?
                .into_iter()
                .collect();
        let mut list = Vec::with_capacity(candidates.len());
        for row in &candidates {
            let reason = engine::deletion_reason(row);
            if !already.contains(&row.object_id) {
                logs.push(engine::log_of(
                    &ctx,
                    &engine::deletion_outcome(row, true, reason),
                    now,
                    0,
                ));
            }
            list.push((row.object_id.clone(), reason.to_owned()));
        }
        staged = list.len() as u64;
        store::replace_staged(&mut tx, &c.configuration_id, &list, now).await?;
        c.threshold_exceeded = true;
        cycle.state = "threshold".into();
        tracing::warn!(domain = %c.domain, candidates = candidates.len(), threshold = c.delete_threshold, "delete threshold exceeded; deletions staged");
    } else {
        for row in &candidates {
            engine::delete_cloud_object(&mut tx, row, now).await?;
            logs.push(engine::log_of(
                &ctx,
                &engine::deletion_outcome(row, false, engine::deletion_reason(row)),
                now,
                0,
            ));
        }
        deleted = candidates.len() as u64;
        store::clear_staged(&mut tx, &c.configuration_id).await?;
        c.threshold_exceeded = false;
        cycle.state = "succeeded".into();
    }
    store::insert_logs(&mut tx, &logs).await?;
    store::purge_gone(&mut tx, &c.domain).await?;
    if let Some(present) = f.present {
        let held = store::imported_count(&mut tx, &c.domain).await?;
        if held != present as i64 && !threshold_hit {
            tracing::warn!(domain = %c.domain, directory = present, console = held, "object counts differ after a delta cycle; the next cycle is a full one");
            c.full_requested = true;
        }
    }
    cycle.deleted += deleted as i64;
    cycle.staged = staged as i64;
    c.watermark = f.watermark.clone();
    if cycle.kind == "full" {
        c.full_requested = false;
    }
    c.last_cycle_id = Some(cycle_id.to_owned());
    c.last_cycle_finished_at = Some(now);
    c.failure_count = 0;
    c.quarantine_reason = None;
    c.quarantine_since = None;
    c.next_attempt_at = None;
    store::save_cycle(&mut tx, &cycle).await?;
    store::save_configuration(&mut tx, &c).await?;
    tx.commit().await?;
    metrics.cycle_ended(&cycle);
    Ok(FinishAccepted {
        state: cycle.state,
        deleted,
        staged,
    })
}

async fn finish_preview(
    conn: &mut SqliteConnection,
    c: &ConfigurationRow,
    cycle: &mut CycleRow,
    f: &Finish,
) -> Result<FinishAccepted> {
    if let Some(error) = &f.error {
        cycle.state = "failed".into();
        cycle.error = Some(error.clone());
        store::forget_preview(conn, &cycle.cycle_id).await?;
        return Ok(FinishAccepted {
            state: cycle.state.clone(),
            deleted: 0,
            staged: 0,
        });
    }
    let mut rows = if f.complete {
        store::preview_unseen(conn, &c.domain, &cycle.cycle_id).await?
    } else {
        let anchors: Vec<&str> = f.deleted.iter().map(String::as_str).collect();
        store::objects_by_anchor(conn, &c.domain, &anchors)
            .await?
            .into_iter()
            .filter(|r| r.provisioned)
            .map(|mut r| {
                r.gone = true;
                r
            })
            .collect()
    };
    let mut plan: Plan = cycle
        .plan_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    // Objects the batches found leaving the scope are deletions too.
    let leaving = plan
        .items
        .iter()
        .filter(|o| o.action == "skip" && o.target_id.is_some())
        .count();
    for row in &mut rows {
        row.gone = true;
    }
    let total = rows.len() + leaving;
    for row in &rows {
        if plan.items.len() >= engine::PLAN_ITEMS {
            plan.truncated = true;
            break;
        }
        plan.items.push(engine::deletion_outcome(
            row,
            false,
            engine::deletion_reason(row),
        ));
    }
    for o in plan.items.iter_mut() {
        if o.action == "skip" && o.target_id.is_some() {
            o.action = "delete".into();
        }
    }
    plan.would_exceed_threshold = c.prevent_accidental_deletes
        && i64::try_from(total).unwrap_or(i64::MAX) >= c.delete_threshold;
    cycle.deleted = total as i64;
    cycle.plan_json = serde_json::to_string(&plan).ok();
    cycle.state = "succeeded".into();
    store::forget_preview(conn, &cycle.cycle_id).await?;
    Ok(FinishAccepted {
        state: cycle.state.clone(),
        deleted: 0,
        staged: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Through an agent: scoping DNs and Provision on demand

/// Checks each scoping DN through an agent of the domain (it exists, and is an organizational unit
/// or a group as the mode says) and fills in group anchors.
pub async fn validate_scope(
    fleet: &crate::fleet::Fleet,
    c: &ConfigurationRow,
    scope: &mut Scope,
) -> Result<()> {
    use super::scope::ScopeMode;
    use crate::protocol::sync::{ObjectKind, ReadRequest};
    scope.check().map_err(SyncError::Invalid)?;
    for entry in &mut scope.entries {
        let request = ReadRequest {
            domain: c.domain.clone(),
            dn: entry.dn.trim().to_owned(),
            attributes: vec!["objectclass".into()],
            password_hash_sync: false,
        };
        let (answer, _) = super::calls::read_object(fleet, c.leader_agent_id.as_deref(), &request)
            .await
            .map_err(|e| SyncError::Invalid(format!("Cannot check {}: {e}", entry.dn)))?;
        entry.dn = request.dn;
        match (scope.mode, answer.object) {
            (_, None) if answer.other_classes.is_empty() => {
                return Err(SyncError::Invalid(format!(
                    "{} does not exist in {}: check the distinguished name (copy it from the directory).",
                    entry.dn, c.domain
                )))
            }
            (ScopeMode::Groups, Some(o)) if o.kind == ObjectKind::Group => {
                entry.anchor = Some(o.anchor);
            }
            (ScopeMode::Groups, other) => {
                return Err(SyncError::Invalid(format!(
                    "{} is not a group (it is {}): Selected security groups takes group DNs.",
                    entry.dn,
                    describe_classes(other.as_ref().map(|o| o.kind), &answer.other_classes)
                )))
            }
            (ScopeMode::Ous, None)
                if answer.other_classes.iter().any(|k| {
                    ["organizationalunit", "container", "domain", "domaindns", "organization", "builtindomain"]
                        .contains(&k.to_ascii_lowercase().as_str())
                }) =>
            {
                entry.anchor = None;
            }
            (ScopeMode::Ous, other) => {
                return Err(SyncError::Invalid(format!(
                    "{} is not an organizational unit or container (it is {}): Selected organizational units takes OU DNs.",
                    entry.dn,
                    describe_classes(other.as_ref().map(|o| o.kind), &answer.other_classes)
                )))
            }
            (ScopeMode::AllUsers, _) => {}
        }
    }
    Ok(())
}

fn describe_classes(kind: Option<crate::protocol::sync::ObjectKind>, classes: &[String]) -> String {
    match kind {
        Some(k) => format!("a {}", k.as_str()),
        None if classes.is_empty() => "of no known class".to_owned(),
        None => format!("of class {}", classes.join(", ")),
    }
}

/// The answer of Provision on demand: the four steps and what was done.
#[derive(Debug, Serialize)]
pub struct OnDemand {
    pub agent: String,
    pub outcome: engine::Outcome,
}

pub async fn provision_on_demand(
    pool: &SqlitePool,
    fleet: &crate::fleet::Fleet,
    actor: &str,
    id: &str,
    dn: &str,
) -> Result<OnDemand> {
    use crate::protocol::sync::ReadRequest;
    let dn = dn.trim();
    if dn.is_empty() || !dn.contains('=') {
        return Err(SyncError::Invalid(format!(
            "{dn:?} is not a distinguished name (expected e.g. CN=Ann Lee,OU=Sales,DC=corp,DC=example,DC=test)."
        )));
    }
    let c = {
        let mut conn = pool.acquire().await?;
        load(&mut conn, id).await?
    };
    let request = ReadRequest {
        domain: c.domain.clone(),
        dn: dn.to_owned(),
        attributes: attributes_to_read(&c),
        password_hash_sync: c.password_hash_sync,
    };
    let (answer, agent) = super::calls::read_object(fleet, c.leader_agent_id.as_deref(), &request)
        .await
        .map_err(SyncError::Invalid)?;
    let Some(object) = answer.object else {
        return Err(SyncError::NotFound(if answer.other_classes.is_empty() {
            format!(
                "No object at {dn} in {}: check the distinguished name.",
                c.domain
            )
        } else {
            format!(
                "{dn} is {}, not a user or group: only users and groups are provisioned.",
                describe_classes(None, &answer.other_classes)
            )
        }));
    };
    let started = std::time::Instant::now();
    let mut tx = begin(pool).await?;
    let ctx = context(&c, None, format!("Provision on demand by {actor}"), false);
    let existing = store::objects_by_anchor(&mut tx, &c.domain, &[object.anchor.as_str()])
        .await?
        .into_iter()
        .next();
    let members: std::collections::HashSet<String> = {
        let groups = ctx.scope.group_anchors();
        if groups.is_empty() {
            Default::default()
        } else {
            store::members_of_groups(&mut tx, &c.domain, &groups)
                .await?
                .into_iter()
                .collect()
        }
    };
    let hash = String::new(); // always re-evaluated: on demand means "now, whatever changed"
    let mut outcome = engine::import_one(
        &mut tx,
        &ctx,
        &object,
        existing,
        &hash,
        &members,
        db::now_ms(),
    )
    .await?;
    outcome.steps[0]
        .detail
        .push_str(&format!(" (through agent {})", agent.machine_name));
    let elapsed = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let mut log = engine::log_of(&ctx, &outcome, db::now_ms(), elapsed);
    if outcome.action == "none" {
        log.action = "skip";
        log.status = "skipped";
    }
    store::insert_logs(&mut tx, &[log]).await?;
    tx.commit().await?;
    Ok(OnDemand {
        agent: agent.machine_name,
        outcome,
    })
}
