//! Synchronization in the JSON API: `/api/v1/configurations` (and their operations), `/users`,
//! `/groups`, `/provisioning-logs`, `/expressions/test`; and the agents' side under
//! `/agent-api/v1/sync` (lease, batch, finish). The JSON shapes here are also what the pages show.

use super::agent_api::AgentCaller;
use super::api::{ApiJson, ApiPath, ApiQuery, ListBody};
use super::error::{ApiError, ApiResult, AppError};
use super::session::ApiUser;
use super::view::rfc3339;
use crate::db::{self, sync as store};
use crate::protocol::sync::{
    Batch, BatchAccepted, Finish, FinishAccepted, LeaseRequest, LeaseResponse,
};
use crate::state::AppState;
use crate::sync::calls;
use crate::sync::engine;
use crate::sync::expr;
use crate::sync::mapping::ObjectMappings;
use crate::sync::scope::Scope;
use crate::sync::service::{self, Changes, Operation, SyncError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

impl From<SyncError> for AppError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::NotFound(m) => AppError::not_found(m),
            SyncError::Invalid(m) => AppError::unprocessable(m),
            SyncError::Conflict(m) => AppError::conflict(m),
            SyncError::Database(e) => e.into(),
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        AppError::from(e).into()
    }
}

#[derive(Serialize)]
pub struct LeaderJson {
    pub agent_id: String,
    pub machine_name: String,
    pub lease_expires_at: Option<String>,
    pub lease_current: bool,
}

#[derive(Serialize)]
pub struct QuarantineJson {
    pub reason: String,
    pub since: Option<String>,
    pub next_attempt: Option<String>,
    pub failed_cycles: i64,
}

#[derive(Serialize, Clone)]
pub struct CycleJson {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub agent_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub imported: i64,
    pub created: i64,
    pub updated: i64,
    pub deleted: i64,
    pub staged: i64,
    pub skipped: i64,
    pub failed: i64,
    pub error: Option<String>,
}

impl From<&store::CycleRow> for CycleJson {
    fn from(c: &store::CycleRow) -> Self {
        CycleJson {
            id: c.cycle_id.clone(),
            kind: c.kind.clone(),
            state: c.state.clone(),
            agent_id: c.agent_id.clone(),
            started_at: rfc3339(c.started_at),
            finished_at: c.finished_at.map(rfc3339),
            duration_ms: c.finished_at.map(|f| f - c.started_at),
            imported: c.imported,
            created: c.created,
            updated: c.updated,
            deleted: c.deleted,
            staged: c.staged,
            skipped: c.skipped,
            failed: c.failed,
            error: c.error.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct ConfigurationJson {
    pub id: String,
    pub domain: String,
    pub dialect: String,
    pub status: service::Status,
    pub enabled: bool,
    pub password_hash_sync: bool,
    /// Why password hash sync cannot do anything here, if it cannot (AD).
    pub password_hash_sync_note: Option<String>,
    pub scope: Scope,
    pub mappings: ObjectMappings,
    pub notification_email: Option<String>,
    pub prevent_accidental_deletes: bool,
    pub delete_threshold: i64,
    pub interval_seconds: i64,
    pub leader: Option<LeaderJson>,
    pub last_cycle: Option<CycleJson>,
    pub quarantine: Option<QuarantineJson>,
    pub staged_deletes: usize,
    pub users: i64,
    pub groups: i64,
    pub created_at: String,
    pub created_by: String,
}

/// The note shown with password hash sync on an Active Directory domain.
pub const AD_HASH_NOTE: &str = "Active Directory does not let LDAP clients read password hashes (unicodePwd is write-only), so password hash sync sends none for this domain; users sign in to the console through writeback-checked binds instead.";

pub async fn configuration_json(
    state: &AppState,
    c: &store::ConfigurationRow,
) -> Result<ConfigurationJson, sqlx::Error> {
    let mut conn = state.db.acquire().await?;
    let last_cycle = match &c.last_cycle_id {
        Some(id) => store::cycle(&mut conn, id).await?,
        None => None,
    };
    let staged = store::staged_ids(&mut conn, &c.configuration_id)
        .await?
        .len();
    drop(conn);
    let (users, groups) = store::provisioned_counts(&state.db, &c.domain).await?;
    let now = db::now_ms();
    let dialect = service::dialect_of(c);
    Ok(ConfigurationJson {
        id: c.configuration_id.clone(),
        domain: c.domain.clone(),
        dialect: c.dialect.clone(),
        status: service::status(c),
        enabled: c.enabled,
        password_hash_sync: c.password_hash_sync,
        password_hash_sync_note: (c.password_hash_sync
            && dialect == crate::directory::Dialect::ActiveDirectory)
            .then(|| AD_HASH_NOTE.to_owned()),
        scope: service::scope_of(c),
        mappings: service::mappings_of(c),
        notification_email: c.notification_email.clone(),
        prevent_accidental_deletes: c.prevent_accidental_deletes,
        delete_threshold: c.delete_threshold,
        interval_seconds: c.interval_seconds,
        leader: c.leader_agent_id.as_ref().map(|id| LeaderJson {
            agent_id: id.clone(),
            machine_name: state
                .fleet
                .get(id)
                .map(|a| a.machine_name)
                .unwrap_or_else(|| "(deleted agent)".into()),
            lease_expires_at: c.lease_expires_at.map(rfc3339),
            lease_current: c.lease_expires_at.is_some_and(|t| t > now),
        }),
        last_cycle: last_cycle.as_ref().map(CycleJson::from),
        quarantine: c.quarantine_reason.as_ref().map(|r| QuarantineJson {
            reason: r.clone(),
            since: c.quarantine_since.map(rfc3339),
            next_attempt: c.next_attempt_at.map(rfc3339),
            failed_cycles: c.failure_count,
        }),
        staged_deletes: staged,
        users,
        groups,
        created_at: rfc3339(c.created_at),
        created_by: c.created_by.clone(),
    })
}

pub async fn list_configurations(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<Json<ListBody<ConfigurationJson>>> {
    let rows = store::configurations(&state.db).await?;
    let mut items = Vec::with_capacity(rows.len());
    for c in &rows {
        items.push(configuration_json(&state, c).await?);
    }
    Ok(Json(ListBody {
        total: items.len(),
        items,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConfiguration {
    domain: String,
    #[serde(default)]
    password_hash_sync: bool,
}

pub async fn create_configuration(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiJson(body): ApiJson<NewConfiguration>,
) -> ApiResult<(StatusCode, Json<ConfigurationJson>)> {
    user.require_manage("creating a configuration")?;
    let c = service::create(
        &state.db,
        &user.username,
        &body.domain,
        body.password_hash_sync,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration_json(&state, &c).await?),
    ))
}

async fn load(state: &AppState, id: &str) -> Result<store::ConfigurationRow, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::configuration(&mut conn, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("No configuration with id {id}.")).into())
}

/// A configuration with its cycle history, staged deletions and latest preview.
#[derive(Serialize)]
pub struct ConfigurationDetail {
    #[serde(flatten)]
    pub configuration: ConfigurationJson,
    pub cycles: Vec<CycleJson>,
    pub staged: Vec<StagedJson>,
    pub preview: Option<PreviewJson>,
}

#[derive(Serialize)]
pub struct StagedJson {
    pub object_id: String,
    pub kind: String,
    pub display_name: Option<String>,
    pub dn: String,
    pub anchor: String,
    pub reason: String,
}

#[derive(Serialize)]
pub struct PreviewJson {
    pub cycle: CycleJson,
    pub would_create: i64,
    pub would_update: i64,
    pub would_delete: i64,
    pub would_exceed_threshold: bool,
    pub truncated: bool,
    pub items: Vec<engine::Outcome>,
}

pub fn preview_json(cycle: &store::CycleRow) -> PreviewJson {
    let plan: service::Plan = cycle
        .plan_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    PreviewJson {
        cycle: CycleJson::from(cycle),
        would_create: cycle.created,
        would_update: cycle.updated,
        would_delete: cycle.deleted,
        would_exceed_threshold: plan.would_exceed_threshold,
        truncated: plan.truncated,
        items: plan.items,
    }
}

pub async fn configuration_detail(
    state: &AppState,
    c: &store::ConfigurationRow,
) -> Result<ConfigurationDetail, sqlx::Error> {
    let cycles = store::cycles(&state.db, &c.configuration_id, 20).await?;
    let mut conn = state.db.acquire().await?;
    let staged = store::staged(&mut conn, &c.configuration_id).await?;
    drop(conn);
    let preview = store::latest_preview(&state.db, &c.configuration_id).await?;
    Ok(ConfigurationDetail {
        configuration: configuration_json(state, c).await?,
        cycles: cycles.iter().map(CycleJson::from).collect(),
        staged: staged
            .into_iter()
            .map(|(row, reason)| StagedJson {
                object_id: row.object_id,
                kind: row.kind,
                display_name: row.display_name,
                dn: row.dn,
                anchor: row.anchor,
                reason,
            })
            .collect(),
        preview: preview
            .filter(|p| p.state != "running")
            .as_ref()
            .map(preview_json),
    })
}

pub async fn get_configuration(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConfigurationDetail>> {
    let c = load(&state, &id).await?;
    Ok(Json(configuration_detail(&state, &c).await?))
}

/// Checks scoping DNs through an agent, then saves.
pub async fn apply_changes(
    state: &AppState,
    actor: &str,
    id: &str,
    mut changes: Changes,
) -> Result<store::ConfigurationRow, ApiError> {
    service::check_changes(&changes).map_err(AppError::unprocessable)?;
    if let Some(scope) = changes.scope.as_mut() {
        let c = load(state, id).await?;
        service::validate_scope(&state.fleet, &c, scope).await?;
    }
    Ok(service::update(&state.db, actor, id, changes).await?)
}

pub async fn patch_configuration(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(changes): ApiJson<Changes>,
) -> ApiResult<Json<ConfigurationJson>> {
    user.require_manage("changing a configuration")?;
    let c = apply_changes(&state, &user.username, &id, changes).await?;
    Ok(Json(configuration_json(&state, &c).await?))
}

#[derive(Serialize)]
pub struct Deleted {
    pub deleted: String,
    pub domain: String,
    pub message: String,
}

/// What Delete configuration removes and what stays, for the confirmation and the answer.
pub async fn delete_message(state: &AppState, domain: &str) -> Result<String, sqlx::Error> {
    let (users, groups) = store::provisioned_counts(&state.db, domain).await?;
    Ok(format!(
        "The configuration of {domain} goes: its scoping filters, attribute mappings, properties, cycle history and staged deletions. Synchronization of {domain} stops. The {users} users and {groups} groups already synced stay in the cloud directory."
    ))
}

pub async fn delete_configuration(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    user.require_manage("deleting a configuration")?;
    let c = service::delete(&state.db, &user.username, &id).await?;
    let message = delete_message(&state, &c.domain).await?;
    Ok(Json(Deleted {
        deleted: c.configuration_id,
        domain: c.domain,
        message,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OnDemandBody {
    pub dn: String,
}

/// How long `POST …/preview` waits for the agent's dry run before answering 202 (inside the
/// console's 30 s request timeout).
const PREVIEW_WAIT: Duration = Duration::from_secs(25);

/// Runs an operation; Sync now and Preview also wake the domain's agent.
pub async fn run_operation(
    state: &AppState,
    actor: &str,
    id: &str,
    op: Operation,
) -> Result<(store::ConfigurationRow, u64), ApiError> {
    let (c, applied) = service::operate(&state.db, actor, id, op).await?;
    if matches!(
        op,
        Operation::SyncNow
            | Operation::Enable
            | Operation::Restart
            | Operation::ClearQuarantine
            | Operation::Preview
    ) {
        let fleet = state.fleet.clone();
        let leader = c.leader_agent_id.clone();
        let domain = c.domain.clone();
        tokio::spawn(async move { calls::wake(&fleet, leader.as_deref(), &domain).await });
    }
    Ok((c, applied))
}

pub async fn provision_on_demand(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<OnDemandBody>,
) -> ApiResult<Json<service::OnDemand>> {
    user.require_manage("provisioning on demand")?;
    let result =
        service::provision_on_demand(&state.db, &state.fleet, &user.username, &id, &body.dn)
            .await?;
    Ok(Json(result))
}

pub async fn operate_configuration(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath((id, operation)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let op = Operation::parse(&operation).ok_or_else(|| {
        AppError::not_found(format!(
            "No operation {operation:?}: use enable, disable, sync-now, restart, allow-deletes, clear-quarantine, preview or provision-on-demand."
        ))
    })?;
    user.require_manage("changing a configuration")?;
    let before = load(&state, &id).await?;
    let previous_preview = store::latest_preview(&state.db, &id)
        .await?
        .map(|p| p.cycle_id);
    let (c, applied) = run_operation(&state, &user.username, &id, op).await?;
    if op == Operation::Preview {
        let deadline = tokio::time::Instant::now() + PREVIEW_WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(p) = store::latest_preview(&state.db, &id).await? {
                if Some(&p.cycle_id) != previous_preview.as_ref() && p.state != "running" {
                    if p.state == "failed" {
                        return Err(AppError::new(
                            StatusCode::BAD_GATEWAY,
                            "preview_failed",
                            format!(
                                "The preview failed on the agent: {}",
                                p.error.unwrap_or_default()
                            ),
                        )
                        .into());
                    }
                    return Ok(Json(preview_json(&p)).into_response());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "status": "pending",
                "message": format!("The preview of {} has not finished within {}s; its result will be on GET /api/v1/configurations/{id} (\"preview\").", before.domain, PREVIEW_WAIT.as_secs()),
            })),
        )
            .into_response());
    }
    let mut body = serde_json::to_value(configuration_json(&state, &c).await?)
        .map_err(|e| AppError::Internal(e.into()))?;
    body["message"] = op.done().into();
    if op == Operation::AllowDeletes {
        body["deleted"] = applied.into();
    }
    Ok(Json(body).into_response())
}

// ---------------------------------------------------------------------------------------------
// Users and groups

#[derive(Serialize)]
pub struct ObjectJson {
    pub id: String,
    pub kind: String,
    pub domain: String,
    pub anchor: String,
    pub dn: String,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub account_enabled: Option<bool>,
    /// Locked out on-premises, as of the last cycle or unlock.
    pub locked: bool,
    pub password_hash_synced: bool,
    pub password_synced_at: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&store::ObjectRow> for ObjectJson {
    fn from(o: &store::ObjectRow) -> Self {
        let attributes = engine::target_attributes(o);
        ObjectJson {
            id: o.object_id.clone(),
            kind: o.kind.clone(),
            domain: o.domain.clone(),
            anchor: o.anchor.clone(),
            dn: o.dn.clone(),
            display_name: o.display_name.clone(),
            user_principal_name: o.user_principal_name.clone(),
            account_enabled: attributes.get("accountEnabled").map(|v| v == "true"),
            locked: locked(o),
            password_hash_synced: o.password_hash.is_some(),
            password_synced_at: o.password_synced_at.map(rfc3339),
            attributes,
            created_at: rfc3339(o.provisioned_at.unwrap_or(o.created_at)),
            updated_at: rfc3339(o.updated_at),
        }
    }
}

/// AD: `lockoutTime` other than 0; OpenLDAP: `pwdAccountLockedTime` present.
pub fn locked(o: &store::ObjectRow) -> bool {
    let source: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&o.source_json).unwrap_or_default();
    let set = |name: &str| source.get(name).and_then(|v| v.first()).cloned();
    set("lockouttime").is_some_and(|v| v.trim() != "0") || set("pwdaccountlockedtime").is_some()
}

#[derive(Deserialize, Default)]
pub struct ObjectQuery {
    #[serde(default)]
    pub q: String,
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
}

fn limit_of(limit: Option<usize>) -> Result<i64, AppError> {
    match limit {
        None => Ok(50),
        Some(l @ 1..=500) => Ok(l as i64),
        Some(l) => Err(AppError::bad_request(format!(
            "limit {l} is out of range: use 1 to 500."
        ))),
    }
}

async fn list_objects(
    state: &AppState,
    kind: &str,
    q: &ObjectQuery,
) -> ApiResult<Json<ListBody<ObjectJson>>> {
    let limit = limit_of(q.limit)?;
    let (rows, total) =
        store::list_provisioned(&state.db, kind, q.q.trim(), limit, q.offset as i64).await?;
    Ok(Json(ListBody {
        items: rows.iter().map(ObjectJson::from).collect(),
        total: usize::try_from(total).unwrap_or(0),
    }))
}

pub async fn list_users(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(q): ApiQuery<ObjectQuery>,
) -> ApiResult<Json<ListBody<ObjectJson>>> {
    list_objects(&state, "user", &q).await
}

pub async fn list_groups(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(q): ApiQuery<ObjectQuery>,
) -> ApiResult<Json<ListBody<ObjectJson>>> {
    list_objects(&state, "group", &q).await
}

#[derive(Serialize)]
pub struct ObjectDetail {
    #[serde(flatten)]
    pub object: ObjectJson,
    /// Groups of a user, members of a group.
    pub related: Vec<ObjectJson>,
}

pub async fn object_detail(
    state: &AppState,
    kind: &str,
    id: &str,
) -> Result<ObjectDetail, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = store::object(&mut conn, id)
        .await?
        .filter(|o| o.kind == kind && o.provisioned)
        .ok_or_else(|| AppError::not_found(format!("No synced {kind} with id {id}.")))?;
    drop(conn);
    let related = store::related(&state.db, id, kind == "group").await?;
    Ok(ObjectDetail {
        object: ObjectJson::from(&row),
        related: related.iter().map(ObjectJson::from).collect(),
    })
}

pub async fn get_user(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ObjectDetail>> {
    Ok(Json(object_detail(&state, "user", &id).await?))
}

pub async fn get_group(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ObjectDetail>> {
    Ok(Json(object_detail(&state, "group", &id).await?))
}

// ---------------------------------------------------------------------------------------------
// Provisioning logs

#[derive(Serialize)]
pub struct LogJson {
    pub id: i64,
    pub at: String,
    pub cycle_id: Option<String>,
    pub configuration_id: Option<String>,
    pub domain: String,
    pub object_kind: String,
    pub source: LogSource,
    pub target: LogTarget,
    pub action: String,
    pub status: String,
    pub initiated_by: String,
    pub modified_properties: Vec<engine::Change>,
    pub steps: Vec<engine::Step>,
    pub error: Option<String>,
    pub recommendation: Option<String>,
    pub duration_ms: i64,
}

#[derive(Serialize)]
pub struct LogSource {
    pub dn: String,
    pub anchor: String,
}

#[derive(Serialize)]
pub struct LogTarget {
    pub id: Option<String>,
    pub display_name: Option<String>,
}

impl From<&store::LogRow> for LogJson {
    fn from(l: &store::LogRow) -> Self {
        LogJson {
            id: l.log_id,
            at: rfc3339(l.at),
            cycle_id: l.cycle_id.clone(),
            configuration_id: l.configuration_id.clone(),
            domain: l.domain.clone(),
            object_kind: l.object_kind.clone(),
            source: LogSource {
                dn: l.source_dn.clone(),
                anchor: l.source_anchor.clone(),
            },
            target: LogTarget {
                id: l.target_id.clone(),
                display_name: l.target_name.clone(),
            },
            action: l.action.clone(),
            status: l.status.clone(),
            initiated_by: l.initiated_by.clone(),
            modified_properties: serde_json::from_str(&l.modified_json).unwrap_or_default(),
            steps: serde_json::from_str(&l.steps_json).unwrap_or_default(),
            error: l.error.clone(),
            recommendation: l.recommendation.clone(),
            duration_ms: l.duration_ms,
        }
    }
}

/// Filters of the provisioning logs (API query and page form alike).
#[derive(Deserialize, Default, Clone)]
pub struct LogQuery {
    /// RFC 3339 time or date (YYYY-MM-DD).
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub configuration: String,
    #[serde(default)]
    pub cycle: String,
    /// Anchor, or part of a DN or name.
    #[serde(default)]
    pub q: String,
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
}

pub const LOG_STATUSES: [&str; 4] = ["success", "warning", "failure", "skipped"];
pub const LOG_ACTIONS: [&str; 5] = ["create", "update", "delete", "stagedDelete", "skip"];

fn parse_time(field: &str, value: &str) -> Result<Option<i64>, AppError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(v, &date_format) {
        let t = d.midnight().assume_utc();
        return Ok(Some(t.unix_timestamp() * 1000));
    }
    Err(AppError::bad_request(format!(
        "{field}={v:?} is not a time: use a date such as 2026-11-30 or an RFC 3339 time such as 2026-11-30T08:00:00Z."
    )))
}

impl LogQuery {
    pub fn filter(&self) -> Result<store::LogFilter, AppError> {
        if !self.status.is_empty() && !LOG_STATUSES.contains(&self.status.as_str()) {
            return Err(AppError::bad_request(format!(
                "status={:?} is unknown: use one of {}.",
                self.status,
                LOG_STATUSES.join(", ")
            )));
        }
        if !self.action.is_empty() && !LOG_ACTIONS.contains(&self.action.as_str()) {
            return Err(AppError::bad_request(format!(
                "action={:?} is unknown: use one of {}.",
                self.action,
                LOG_ACTIONS.join(", ")
            )));
        }
        let until = parse_time("until", &self.until)?.map(|t| {
            // A bare date means the whole day.
            if self.until.trim().len() == 10 {
                t + 24 * 3600 * 1000
            } else {
                t
            }
        });
        Ok(store::LogFilter {
            since: parse_time("since", &self.since)?,
            until,
            status: self.status.clone(),
            action: self.action.clone(),
            configuration_id: self.configuration.clone(),
            cycle_id: self.cycle.clone(),
            search: self.q.trim().to_owned(),
        })
    }
}

pub async fn list_logs(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<ListBody<LogJson>>> {
    let limit = limit_of(q.limit)?;
    let filter = q.filter()?;
    let (rows, total) = store::logs(&state.db, &filter, limit, q.offset as i64).await?;
    Ok(Json(ListBody {
        items: rows.iter().map(LogJson::from).collect(),
        total: usize::try_from(total).unwrap_or(0),
    }))
}

pub async fn get_log(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<LogJson>> {
    let row = store::log(&state.db, id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("No provisioning log entry {id}.")))?;
    Ok(Json(LogJson::from(&row)))
}

// ---------------------------------------------------------------------------------------------
// Test expression

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionTest {
    pub expression: String,
    /// Sample attribute values: a text or a list of texts per attribute.
    #[serde(default)]
    pub sample: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize)]
pub struct ExpressionOutput {
    pub output: Option<String>,
    pub attributes: Vec<String>,
}

/// Evaluates an expression against sample values: the expression builder's "Test expression".
pub fn test_expression(body: &ExpressionTest) -> Result<ExpressionOutput, AppError> {
    let parsed =
        expr::parse(&body.expression).map_err(|e| AppError::unprocessable(e.to_string()))?;
    let mut attrs = expr::Attributes::new();
    for (name, value) in &body.sample {
        let values = match value {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            serde_json::Value::Null => continue,
            other => vec![other.to_string()],
        };
        attrs.insert(name.to_ascii_lowercase(), values);
    }
    let output = parsed
        .evaluate(&attrs)
        .map_err(|e| AppError::unprocessable(e.to_string()))?;
    Ok(ExpressionOutput {
        output: output.map(|v| v.to_string()),
        attributes: parsed.attributes(),
    })
}

pub async fn expression_test(
    _user: ApiUser,
    ApiJson(body): ApiJson<ExpressionTest>,
) -> ApiResult<Json<ExpressionOutput>> {
    Ok(Json(test_expression(&body)?))
}

// ---------------------------------------------------------------------------------------------
// Agents' side

/// Bodies of a batch of 1000 objects with their attributes exceed the console's default limit.
pub const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

pub async fn lease(
    State(state): State<AppState>,
    AgentCaller(id): AgentCaller,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> ApiResult<Json<LeaseResponse>> {
    if req.domains.len() > 64 {
        return Err(AppError::unprocessable("An agent may report at most 64 domains.").into());
    }
    let fleet = state.fleet.clone();
    let name = move |agent: &str| {
        fleet
            .get(agent)
            .map(|a| a.machine_name)
            .unwrap_or_else(|| agent.to_owned())
    };
    Ok(Json(
        service::lease(&state.db, &state.sync_metrics, &id, name, &req).await?,
    ))
}

pub async fn batch(
    State(state): State<AppState>,
    AgentCaller(id): AgentCaller,
    ApiPath(cycle): ApiPath<String>,
    ApiJson(body): ApiJson<Batch>,
) -> ApiResult<Json<BatchAccepted>> {
    if body.objects.len() > crate::protocol::sync::BATCH_SIZE {
        return Err(AppError::unprocessable(format!(
            "A batch carries at most {} objects.",
            crate::protocol::sync::BATCH_SIZE
        ))
        .into());
    }
    Ok(Json(service::batch(&state.db, &id, &cycle, &body).await?))
}

pub async fn finish(
    State(state): State<AppState>,
    AgentCaller(id): AgentCaller,
    ApiPath(cycle): ApiPath<String>,
    ApiJson(body): ApiJson<Finish>,
) -> ApiResult<Json<FinishAccepted>> {
    Ok(Json(
        service::finish(&state.db, &state.sync_metrics, &id, &cycle, &body).await?,
    ))
}
