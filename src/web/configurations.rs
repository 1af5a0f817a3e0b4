//! Cloud sync > Configurations: the list with New configuration, a configuration's overview with
//! its operations (Enable/Disable, Sync now, Restart sync, Preview, Clear quarantine, Allow
//! deletes), Delete configuration, and the Manage screens: Scoping filters, Attribute mapping,
//! Provision on demand and Properties. The data comes from the JSON API's structs and functions
//! (`sync_api`), so a page and the API always show the same thing.

use super::auth_pages::CsrfOnly;
use super::error::{AppError, AppResult};
use super::session::{urlencode, CurrentUser};
use super::sync_api::{self, ConfigurationDetail, ConfigurationJson, ExpressionTest};
use super::view::{render, Layout};
use crate::db::sync as store;
use crate::directory::Dialect;
use crate::state::AppState;
use crate::sync::calls;
use crate::sync::mapping::{Apply, Mapping, MappingSource, ObjectMappings};
use crate::sync::scope::{Scope, ScopeEntry, ScopeMode, MAX_ENTRIES};
use crate::sync::service::{self, Changes, OnDemand, Operation};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// How long the Preview button waits for the agent's dry run before showing the page anyway.
const PREVIEW_WAIT: Duration = Duration::from_secs(15);

/// Display helpers the templates call as `when(…)`, `when_opt(…)` and `duration(…)`.
pub(super) trait ViewHelpers {
    /// An RFC 3339 time of the JSON structs as the pages show times: `2026-11-29 21:24:55 UTC`.
    fn when(&self, rfc3339: &str) -> String {
        display_time(rfc3339)
    }
    fn when_opt(&self, rfc3339: &Option<String>) -> String {
        rfc3339
            .as_deref()
            .map(display_time)
            .unwrap_or_else(|| "—".into())
    }
    /// Milliseconds as "850 ms" or "12.4 s".
    fn duration(&self, ms: &Option<i64>) -> String {
        match ms {
            Some(ms) if *ms < 1000 => format!("{ms} ms"),
            Some(ms) => format!("{:.1} s", *ms as f64 / 1000.0),
            None => "—".into(),
        }
    }
}

pub(super) fn display_time(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| super::view::timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .unwrap_or_else(|| rfc3339.to_owned())
}

pub(super) fn dialect_label(dialect: &str) -> &'static str {
    if dialect == Dialect::ActiveDirectory.as_str() {
        Dialect::ActiveDirectory.label()
    } else {
        Dialect::OpenLdap.label()
    }
}

/// A client error's status and message, to show in the form that caused it; a server error stays
/// an error page.
fn form_error(e: AppError) -> AppResult<(StatusCode, String)> {
    match e {
        AppError::Client {
            status, message, ..
        } => Ok((status, message)),
        other => Err(other),
    }
}

fn with_status(status: StatusCode, page: AppResult<Response>) -> AppResult<Response> {
    Ok((status, page?).into_response())
}

fn unknown(id: &str) -> AppError {
    AppError::not_found(format!(
        "No configuration with id {id}. It may have been deleted; see Cloud sync › Configurations."
    ))
}

async fn load(state: &AppState, id: &str) -> AppResult<store::ConfigurationRow> {
    let mut conn = state.db.acquire().await?;
    store::configuration(&mut conn, id)
        .await?
        .ok_or_else(|| unknown(id))
}

// ---------------------------------------------------------------------------------------------
// The list and New configuration

/// A domain an agent reported, offered by New configuration.
pub struct DomainOption {
    pub domain: String,
    pub dialect: &'static str,
    pub base_dn: String,
    /// Why it cannot be picked now, if it cannot.
    pub disabled: Option<String>,
}

#[derive(Template)]
#[template(path = "configurations/list.html")]
struct ListPage {
    layout: Layout,
    configurations: Vec<ConfigurationJson>,
    /// Whether any agent ever reported a directory.
    reported_any: bool,
    domains: Vec<DomainOption>,
    form_domain: String,
    form_hash_sync: bool,
    error: String,
    deleted: String,
}

impl ViewHelpers for ListPage {}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    deleted: String,
}

async fn list_page(
    state: &AppState,
    user: &CurrentUser,
    deleted: &str,
    form: &NewConfigurationForm,
    error: String,
) -> AppResult<Response> {
    let rows = store::configurations(&state.db).await?;
    let mut configurations = Vec::with_capacity(rows.len());
    for c in &rows {
        configurations.push(sync_api::configuration_json(state, c).await?);
    }
    let configured: HashSet<&str> = rows.iter().map(|c| c.domain.as_str()).collect();
    let reported = store::reported_domains(&state.db).await?;
    let domains = reported
        .iter()
        .filter(|d| !configured.contains(d.domain.as_str()))
        .map(|d| DomainOption {
            domain: d.domain.clone(),
            dialect: dialect_label(&d.dialect),
            base_dn: d.base_dn.clone(),
            disabled: calls::agents_serving(&state.fleet, &d.domain, None)
                .is_empty()
                .then(|| "no active agent serves it: start an agent that has it connected".into()),
        })
        .collect();
    // Shown only for a reported domain that really has no configuration now.
    let deleted = deleted.trim().to_ascii_lowercase();
    let deleted =
        if !configured.contains(deleted.as_str()) && reported.iter().any(|d| d.domain == deleted) {
            deleted
        } else {
            String::new()
        };
    render(&ListPage {
        layout: Layout::new(user, "configurations"),
        configurations,
        reported_any: !reported.is_empty(),
        domains,
        form_domain: form.domain.clone(),
        form_hash_sync: form.password_hash_sync.is_some(),
        error,
        deleted,
    })
}

pub async fn list_configurations(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<ListQuery>,
) -> AppResult<Response> {
    list_page(
        &state,
        &user,
        &q.deleted,
        &NewConfigurationForm::default(),
        String::new(),
    )
    .await
}

#[derive(Deserialize, Default)]
pub struct NewConfigurationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    password_hash_sync: Option<String>,
}

pub async fn create_configuration(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<NewConfigurationForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal.require_manage("creating a configuration")?;
    match service::create(
        &state.db,
        &user.principal.username,
        &form.domain,
        form.password_hash_sync.is_some(),
    )
    .await
    {
        Ok(c) => Ok(Redirect::to(&format!(
            "/configurations/{}?done=created",
            c.configuration_id
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = form_error(e.into())?;
            with_status(status, list_page(&state, &user, "", &form, message).await)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Overview and operations

/// The configuration's own navigation: Overview and the Manage screens.
pub struct ConfigNav {
    pub id: String,
    pub domain: String,
    pub section: &'static str,
}

impl ConfigNav {
    fn new(c: &store::ConfigurationRow, section: &'static str) -> Self {
        ConfigNav {
            id: c.configuration_id.clone(),
            domain: c.domain.clone(),
            section,
        }
    }
}

#[derive(Template)]
#[template(path = "configurations/show.html")]
struct OverviewPage {
    layout: Layout,
    nav: ConfigNav,
    d: ConfigurationDetail,
    dialect: &'static str,
    scope_summary: String,
    /// Machine names of the active agents serving the domain.
    serving: Vec<String>,
    flash: String,
    error: String,
}

impl ViewHelpers for OverviewPage {}

fn scope_summary(scope: &Scope) -> String {
    match scope.mode {
        ScopeMode::AllUsers => "All users".into(),
        mode => format!(
            "{} ({})",
            mode.label(),
            scope
                .entries
                .iter()
                .map(|e| e.dn.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

async fn overview(
    state: &AppState,
    user: &CurrentUser,
    c: &store::ConfigurationRow,
    flash: String,
    error: String,
) -> AppResult<Response> {
    let d = sync_api::configuration_detail(state, c).await?;
    let serving = calls::agents_serving(&state.fleet, &c.domain, c.leader_agent_id.as_deref())
        .into_iter()
        .map(|a| a.machine_name)
        .collect();
    render(&OverviewPage {
        layout: Layout::new(user, "configurations"),
        nav: ConfigNav::new(c, "overview"),
        dialect: dialect_label(&c.dialect),
        scope_summary: scope_summary(&d.configuration.scope),
        d,
        serving,
        flash,
        error,
    })
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    #[serde(default)]
    done: String,
}

/// The flash message of `?done=…` after an operation's redirect; unknown values show nothing.
fn flash(done: &str) -> String {
    match done {
        "created" => "Configuration created. It stays disabled until you enable it: review its scoping filters, attribute mapping and properties, test with Provision on demand, then Enable.".into(),
        "preview-ready" => "Preview finished: below is what the next cycle would do. Nothing was applied.".into(),
        d => Operation::parse(d)
            .map(|op| op.done().to_owned())
            .unwrap_or_default(),
    }
}

pub async fn show_configuration(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> AppResult<Response> {
    let c = load(&state, &id).await?;
    overview(&state, &user, &c, flash(&q.done), String::new()).await
}

#[derive(Deserialize)]
pub struct OperationForm {
    #[serde(default)]
    csrf: String,
    /// Allow deletes: the "Yes, delete these N objects" checkbox.
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn operate_configuration(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((id, operation)): Path<(String, String)>,
    Form(form): Form<OperationForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    let op = Operation::parse(&operation).ok_or_else(|| {
        AppError::not_found(format!(
            "No operation {operation:?}: use enable, disable, sync-now, restart, allow-deletes, clear-quarantine or preview."
        ))
    })?;
    user.principal.require_manage("changing a configuration")?;
    let c = load(&state, &id).await?;
    if op == Operation::AllowDeletes && form.confirm.as_deref() != Some("yes") {
        return with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            overview(
                &state,
                &user,
                &c,
                String::new(),
                "Nothing was deleted: tick “Yes, delete these objects” to confirm Allow deletes."
                    .into(),
            )
            .await,
        );
    }
    let previous_preview = store::latest_preview(&state.db, &id)
        .await?
        .map(|p| p.cycle_id);
    if let Err(e) = sync_api::run_operation(&state, &user.principal.username, &id, op).await {
        let (status, message) = form_error(e.0)?;
        let c = load(&state, &id).await?;
        return with_status(
            status,
            overview(&state, &user, &c, String::new(), message).await,
        );
    }
    let mut done = operation.clone();
    if op == Operation::Preview
        && !calls::agents_serving(&state.fleet, &c.domain, c.leader_agent_id.as_deref()).is_empty()
    {
        // Wait a little for the agent's dry run, so the page shows its result at once.
        let deadline = tokio::time::Instant::now() + PREVIEW_WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(p) = store::latest_preview(&state.db, &id).await? {
                if Some(&p.cycle_id) != previous_preview.as_ref() && p.state != "running" {
                    done = "preview-ready".into();
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(Redirect::to(&format!("/configurations/{id}?done={}", urlencode(&done))).into_response())
}

#[derive(Template)]
#[template(path = "configurations/delete.html")]
struct DeletePage {
    layout: Layout,
    nav: ConfigNav,
    message: String,
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    user.principal.require_manage("deleting a configuration")?;
    let c = load(&state, &id).await?;
    render(&DeletePage {
        layout: Layout::new(&user, "configurations"),
        message: sync_api::delete_message(&state, &c.domain).await?,
        nav: ConfigNav::new(&c, "overview"),
    })
}

pub async fn delete_configuration(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> AppResult<Redirect> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal.require_manage("deleting a configuration")?;
    let c = service::delete(&state.db, &user.principal.username, &id)
        .await
        .map_err(AppError::from)?;
    Ok(Redirect::to(&format!(
        "/configurations?deleted={}",
        urlencode(&c.domain)
    )))
}

// ---------------------------------------------------------------------------------------------
// Scoping filters

#[derive(Template)]
#[template(path = "configurations/scoping.html")]
struct ScopingPage {
    layout: Layout,
    nav: ConfigNav,
    /// The saved scope.
    current: Scope,
    /// The form: `all_users`, `groups` or `ous`, and the DNs one per line.
    mode: String,
    dns: String,
    max_entries: usize,
    saved: bool,
    error: String,
}

#[derive(Deserialize, Default)]
pub struct SavedQuery {
    #[serde(default)]
    saved: String,
}

fn scoping_page(
    user: &CurrentUser,
    c: &store::ConfigurationRow,
    mode: String,
    dns: String,
    saved: bool,
    error: String,
) -> AppResult<Response> {
    render(&ScopingPage {
        layout: Layout::new(user, "configurations"),
        nav: ConfigNav::new(c, "scoping"),
        current: service::scope_of(c),
        mode,
        dns,
        max_entries: MAX_ENTRIES,
        saved,
        error,
    })
}

pub async fn show_scoping(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(q): Query<SavedQuery>,
) -> AppResult<Response> {
    let c = load(&state, &id).await?;
    let scope = service::scope_of(&c);
    let dns = scope
        .entries
        .iter()
        .map(|e| e.dn.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    scoping_page(
        &user,
        &c,
        scope.mode.as_str().into(),
        dns,
        q.saved == "1",
        String::new(),
    )
}

#[derive(Deserialize)]
pub struct ScopingForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    dns: String,
}

pub async fn save_scoping(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<ScopingForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal.require_manage("changing scoping filters")?;
    let c = load(&state, &id).await?;
    let mode = match form.mode.as_str() {
        "all_users" => Some(ScopeMode::AllUsers),
        "groups" => Some(ScopeMode::Groups),
        "ous" => Some(ScopeMode::Ous),
        _ => None,
    };
    let result = match mode {
        None => Err(AppError::unprocessable(
            "Pick All users, Selected security groups or Selected organizational units.",
        )),
        Some(mode) => {
            // All users takes no DNs: what is left in the box is not part of the scope.
            let entries = if mode == ScopeMode::AllUsers {
                Vec::new()
            } else {
                form.dns
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|dn| ScopeEntry {
                        dn: dn.to_owned(),
                        anchor: None,
                    })
                    .collect()
            };
            let changes = Changes {
                scope: Some(Scope { mode, entries }),
                ..Default::default()
            };
            sync_api::apply_changes(&state, &user.principal.username, &id, changes)
                .await
                .map_err(|e| e.0)
        }
    };
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/configurations/{id}/scoping?saved=1")).into_response()),
        Err(e) => {
            let (status, message) = form_error(e)?;
            with_status(
                status,
                scoping_page(&user, &c, form.mode, form.dns, false, message),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attribute mapping

/// One mapping as the table shows it.
pub struct MappingRow {
    pub target: String,
    pub mapping_type: &'static str,
    pub value: String,
    pub default_value: String,
    pub apply: &'static str,
}

impl MappingRow {
    fn new(m: &Mapping) -> Self {
        let (mapping_type, value) = match &m.source {
            MappingSource::Direct { source } => ("Direct", source.clone()),
            MappingSource::Constant { value } => ("Constant", value.clone()),
            MappingSource::Expression { expression } => ("Expression", expression.clone()),
            MappingSource::None => ("None", String::new()),
        };
        MappingRow {
            target: m.target.clone(),
            mapping_type,
            value,
            default_value: m.default_value.clone().unwrap_or_default(),
            apply: match m.apply {
                Apply::Always => "Always",
                Apply::OnCreate => "Only during creation",
            },
        }
    }
}

/// The add/edit form of one mapping, as submitted (also the Test expression form).
#[derive(Deserialize, Default, Clone)]
pub struct MappingForm {
    #[serde(default)]
    csrf: String,
    /// `save`, `remove` or `test`.
    #[serde(default)]
    action: String,
    /// `user` or `group`.
    #[serde(default)]
    kind: String,
    /// The target of the mapping being edited; empty when adding one.
    #[serde(default)]
    original: String,
    #[serde(default)]
    target: String,
    /// `direct`, `constant`, `expression` or `none`.
    #[serde(default)]
    mapping_type: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    expression: String,
    #[serde(default)]
    default_value: String,
    /// `always` or `on_create`.
    #[serde(default)]
    apply: String,
    /// Test expression: the expression and sample values, `attribute: value` per line.
    #[serde(default)]
    test_expression: String,
    #[serde(default)]
    sample: String,
}

impl MappingForm {
    fn from_mapping(kind: &str, m: &Mapping) -> Self {
        let mut form = MappingForm {
            kind: kind.into(),
            original: m.target.clone(),
            target: m.target.clone(),
            default_value: m.default_value.clone().unwrap_or_default(),
            apply: match m.apply {
                Apply::Always => "always".into(),
                Apply::OnCreate => "on_create".into(),
            },
            ..Default::default()
        };
        match &m.source {
            MappingSource::Direct { source } => {
                form.mapping_type = "direct".into();
                form.source = source.clone();
            }
            MappingSource::Constant { value } => {
                form.mapping_type = "constant".into();
                form.value = value.clone();
            }
            MappingSource::Expression { expression } => {
                form.mapping_type = "expression".into();
                form.expression = expression.clone();
            }
            MappingSource::None => form.mapping_type = "none".into(),
        }
        form
    }

    /// Applies a `save` (add or edit) or `remove` to the mappings.
    fn edit(&self, mappings: &mut ObjectMappings) -> Result<(), String> {
        let list = list_of(mappings, &self.kind)
            .ok_or_else(|| "Pick the object type: user or group.".to_owned())?;
        match self.action.as_str() {
            "remove" => {
                let before = list.len();
                list.retain(|m| m.target != self.target);
                if list.len() == before {
                    return Err(format!(
                        "There is no {} mapping for {:?} (it may have been removed already).",
                        self.kind, self.target
                    ));
                }
            }
            "save" => {
                let mapping = self.mapping()?;
                if self.original.is_empty() {
                    list.push(mapping);
                } else {
                    let slot = list
                        .iter_mut()
                        .find(|m| m.target == self.original)
                        .ok_or_else(|| {
                            format!(
                                "There is no {} mapping for {:?} any more: add it as a new one.",
                                self.kind, self.original
                            )
                        })?;
                    *slot = mapping;
                }
            }
            other => return Err(format!("Unknown action {other:?}: use save or remove.")),
        }
        Ok(())
    }

    fn mapping(&self) -> Result<Mapping, String> {
        let source = match self.mapping_type.as_str() {
            "direct" => MappingSource::Direct {
                source: self.source.trim().to_owned(),
            },
            "constant" => MappingSource::Constant {
                value: self.value.clone(),
            },
            "expression" => MappingSource::Expression {
                expression: self.expression.trim().to_owned(),
            },
            "none" => MappingSource::None,
            _ => return Err("Pick a mapping type: Direct, Constant, Expression or None.".into()),
        };
        let apply = match self.apply.as_str() {
            "" | "always" => Apply::Always,
            "on_create" => Apply::OnCreate,
            _ => return Err("Apply this mapping: pick Always or Only during creation.".into()),
        };
        let default_value = self.default_value.trim();
        Ok(Mapping {
            target: self.target.trim().to_owned(),
            source,
            default_value: (!default_value.is_empty()).then(|| default_value.to_owned()),
            apply,
        })
    }
}

/// The result of Test expression.
#[derive(Default)]
pub struct TestResult {
    pub ran: bool,
    pub output: Option<String>,
    pub attributes: Vec<String>,
    pub error: String,
}

#[derive(Template)]
#[template(path = "configurations/mappings.html")]
struct MappingsPage {
    layout: Layout,
    nav: ConfigNav,
    users: Vec<MappingRow>,
    groups: Vec<MappingRow>,
    form: MappingForm,
    saved: bool,
    error: String,
    test: TestResult,
}

fn mappings_page(
    user: &CurrentUser,
    c: &store::ConfigurationRow,
    form: MappingForm,
    saved: bool,
    error: String,
    test: TestResult,
) -> AppResult<Response> {
    let mappings = service::mappings_of(c);
    render(&MappingsPage {
        layout: Layout::new(user, "configurations"),
        nav: ConfigNav::new(c, "mappings"),
        users: mappings.users.iter().map(MappingRow::new).collect(),
        groups: mappings.groups.iter().map(MappingRow::new).collect(),
        form,
        saved,
        error,
        test,
    })
}

#[derive(Deserialize, Default)]
pub struct MappingsQuery {
    #[serde(default)]
    saved: String,
    /// Edit this mapping: object type and target attribute.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    edit: String,
}

fn list_of<'a>(m: &'a mut ObjectMappings, kind: &str) -> Option<&'a mut Vec<Mapping>> {
    match kind {
        "user" => Some(&mut m.users),
        "group" => Some(&mut m.groups),
        _ => None,
    }
}

pub async fn show_mappings(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(q): Query<MappingsQuery>,
) -> AppResult<Response> {
    let c = load(&state, &id).await?;
    let mut form = MappingForm {
        kind: "user".into(),
        mapping_type: "direct".into(),
        apply: "always".into(),
        ..Default::default()
    };
    if !q.edit.is_empty() {
        let mut mappings = service::mappings_of(&c);
        let found = list_of(&mut mappings, &q.kind)
            .and_then(|list| list.iter().find(|m| m.target == q.edit).cloned());
        match found {
            Some(m) => form = MappingForm::from_mapping(&q.kind, &m),
            None => {
                return Err(AppError::not_found(format!(
                    "No {} mapping for {:?} in {}.",
                    q.kind, q.edit, c.domain
                )))
            }
        }
    }
    mappings_page(
        &user,
        &c,
        form,
        q.saved == "1",
        String::new(),
        TestResult::default(),
    )
}

/// `attribute: value` lines into sample values (an attribute given twice has two values).
fn parse_sample(text: &str) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let mut sample: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "Sample values, line {}: {line:?} is not `attribute: value` (e.g. `givenName: Ann`).",
                n + 1
            ));
        };
        sample
            .entry(name.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    Ok(sample
        .into_iter()
        .map(|(name, values)| {
            let value = if values.len() == 1 {
                serde_json::Value::String(values.into_iter().next().unwrap_or_default())
            } else {
                values.into()
            };
            (name, value)
        })
        .collect())
}

fn run_test(form: &MappingForm) -> TestResult {
    let sample = match parse_sample(&form.sample) {
        Ok(s) => s,
        Err(error) => {
            return TestResult {
                ran: true,
                error,
                ..Default::default()
            }
        }
    };
    let body = ExpressionTest {
        expression: form.test_expression.clone(),
        sample,
    };
    match sync_api::test_expression(&body) {
        Ok(out) => TestResult {
            ran: true,
            output: out.output,
            attributes: out.attributes,
            error: String::new(),
        },
        Err(e) => TestResult {
            ran: true,
            error: match e {
                AppError::Client { message, .. } => message,
                AppError::Internal(_) => "The expression could not be evaluated.".into(),
            },
            ..Default::default()
        },
    }
}

pub async fn post_mappings(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<MappingForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    let c = load(&state, &id).await?;
    if form.action == "test" {
        // Testing changes nothing: every role may.
        let test = run_test(&form);
        let status = if test.error.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let blank = MappingForm {
            kind: "user".into(),
            mapping_type: "expression".into(),
            apply: "always".into(),
            test_expression: form.test_expression.clone(),
            sample: form.sample.clone(),
            ..Default::default()
        };
        return with_status(
            status,
            mappings_page(&user, &c, blank, false, String::new(), test),
        );
    }
    user.principal
        .require_manage("changing attribute mappings")?;
    let mut mappings = service::mappings_of(&c);
    let edited = form.edit(&mut mappings);
    let result = match edited {
        Err(message) => Err(AppError::unprocessable(message)),
        Ok(()) => {
            let changes = Changes {
                mappings: Some(mappings),
                ..Default::default()
            };
            sync_api::apply_changes(&state, &user.principal.username, &id, changes)
                .await
                .map_err(|e| e.0)
        }
    };
    match result {
        Ok(_) => {
            Ok(Redirect::to(&format!("/configurations/{id}/mappings?saved=1")).into_response())
        }
        Err(e) => {
            let (status, message) = form_error(e)?;
            // A failed removal leaves the add form as it was; a failed save keeps the input.
            let shown = if form.action == "remove" {
                MappingForm {
                    kind: "user".into(),
                    mapping_type: "direct".into(),
                    apply: "always".into(),
                    ..Default::default()
                }
            } else {
                form
            };
            with_status(
                status,
                mappings_page(&user, &c, shown, false, message, TestResult::default()),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

#[derive(Deserialize, Default)]
pub struct PropertiesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    notification_email: String,
    #[serde(default)]
    prevent_accidental_deletes: Option<String>,
    #[serde(default)]
    delete_threshold: String,
    #[serde(default)]
    interval_seconds: String,
    #[serde(default)]
    password_hash_sync: Option<String>,
}

#[derive(Template)]
#[template(path = "configurations/properties.html")]
struct PropertiesPage {
    layout: Layout,
    nav: ConfigNav,
    dialect: &'static str,
    notification_email: String,
    prevent_accidental_deletes: bool,
    delete_threshold: String,
    interval_seconds: String,
    password_hash_sync: bool,
    hash_note: Option<String>,
    saved: bool,
    error: String,
}

fn hash_note(c: &store::ConfigurationRow) -> Option<String> {
    (service::dialect_of(c) == Dialect::ActiveDirectory).then(|| sync_api::AD_HASH_NOTE.to_owned())
}

pub async fn show_properties(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(q): Query<SavedQuery>,
) -> AppResult<Response> {
    let c = load(&state, &id).await?;
    render(&PropertiesPage {
        layout: Layout::new(&user, "configurations"),
        nav: ConfigNav::new(&c, "properties"),
        dialect: dialect_label(&c.dialect),
        notification_email: c.notification_email.clone().unwrap_or_default(),
        prevent_accidental_deletes: c.prevent_accidental_deletes,
        delete_threshold: c.delete_threshold.to_string(),
        interval_seconds: c.interval_seconds.to_string(),
        password_hash_sync: c.password_hash_sync,
        hash_note: hash_note(&c),
        saved: q.saved == "1",
        error: String::new(),
    })
}

fn whole_number(what: &str, text: &str) -> Result<i64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what} must be a whole number, not {:?}.", text.trim()))
}

pub async fn save_properties(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<PropertiesForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal
        .require_manage("changing a configuration's properties")?;
    let c = load(&state, &id).await?;
    let parsed = whole_number("Accidental deletion threshold", &form.delete_threshold).and_then(
        |threshold| {
            whole_number("Sync interval", &form.interval_seconds)
                .map(|interval| (threshold, interval))
        },
    );
    let result = match parsed {
        Err(message) => Err(AppError::unprocessable(message)),
        Ok((threshold, interval)) => {
            let changes = Changes {
                notification_email: Some(form.notification_email.trim().to_owned()),
                prevent_accidental_deletes: Some(form.prevent_accidental_deletes.is_some()),
                delete_threshold: Some(threshold),
                interval_seconds: Some(interval),
                password_hash_sync: Some(form.password_hash_sync.is_some()),
                ..Default::default()
            };
            sync_api::apply_changes(&state, &user.principal.username, &id, changes)
                .await
                .map_err(|e| e.0)
        }
    };
    match result {
        Ok(_) => {
            Ok(Redirect::to(&format!("/configurations/{id}/properties?saved=1")).into_response())
        }
        Err(e) => {
            let (status, message) = form_error(e)?;
            with_status(
                status,
                render(&PropertiesPage {
                    layout: Layout::new(&user, "configurations"),
                    nav: ConfigNav::new(&c, "properties"),
                    dialect: dialect_label(&c.dialect),
                    notification_email: form.notification_email,
                    prevent_accidental_deletes: form.prevent_accidental_deletes.is_some(),
                    delete_threshold: form.delete_threshold,
                    interval_seconds: form.interval_seconds,
                    password_hash_sync: form.password_hash_sync.is_some(),
                    hash_note: hash_note(&c),
                    saved: false,
                    error: message,
                }),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Provision on demand

#[derive(Template)]
#[template(path = "configurations/on_demand.html")]
struct OnDemandPage {
    layout: Layout,
    nav: ConfigNav,
    dn: String,
    error: String,
    result: Option<OnDemand>,
    /// `/provisioning-logs?q=<anchor>` for the result.
    logs_link: String,
}

impl ViewHelpers for OnDemandPage {}

pub async fn show_on_demand(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let c = load(&state, &id).await?;
    render(&OnDemandPage {
        layout: Layout::new(&user, "configurations"),
        nav: ConfigNav::new(&c, "on-demand"),
        dn: String::new(),
        error: String::new(),
        result: None,
        logs_link: String::new(),
    })
}

#[derive(Deserialize)]
pub struct OnDemandForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dn: String,
}

pub async fn provision_on_demand(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<OnDemandForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal.require_manage("provisioning on demand")?;
    let c = load(&state, &id).await?;
    let outcome = service::provision_on_demand(
        &state.db,
        &state.fleet,
        &user.principal.username,
        &id,
        &form.dn,
    )
    .await;
    let (status, result, error) = match outcome {
        Ok(r) => (StatusCode::OK, Some(r), String::new()),
        Err(e) => {
            let (status, message) = form_error(e.into())?;
            (status, None, message)
        }
    };
    let logs_link = result
        .as_ref()
        .map(|r| format!("/provisioning-logs?q={}", urlencode(&r.outcome.anchor)))
        .unwrap_or_default();
    with_status(
        status,
        render(&OnDemandPage {
            layout: Layout::new(&user, "configurations"),
            nav: ConfigNav::new(&c, "on-demand"),
            dn: form.dn,
            error,
            result,
            logs_link,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_become_values() {
        let s = parse_sample("givenName: Ann\n\nmail: a@x.test\nmail: b@x.test\n").unwrap();
        assert_eq!(s["givenName"], serde_json::json!("Ann"));
        assert_eq!(s["mail"], serde_json::json!(["a@x.test", "b@x.test"]));
        assert!(parse_sample("no colon here")
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn the_mapping_form_adds_edits_and_removes() {
        let mut m = ObjectMappings::defaults(Dialect::OpenLdap, "corp.example.test");
        let users = m.users.len();
        let mut form = MappingForm {
            action: "save".into(),
            kind: "user".into(),
            target: "employeeId".into(),
            mapping_type: "direct".into(),
            source: " employeeNumber ".into(),
            ..Default::default()
        };
        form.edit(&mut m).unwrap();
        assert_eq!(m.users.len(), users + 1);
        assert_eq!(
            m.users[users].source,
            MappingSource::Direct {
                source: "employeeNumber".into()
            }
        );
        form.original = "employeeId".into();
        form.mapping_type = "none".into();
        form.default_value = "E-0".into();
        form.apply = "on_create".into();
        form.edit(&mut m).unwrap();
        assert_eq!(m.users.len(), users + 1);
        assert_eq!(m.users[users].source, MappingSource::None);
        assert_eq!(m.users[users].default_value.as_deref(), Some("E-0"));
        assert_eq!(m.users[users].apply, Apply::OnCreate);
        form.mapping_type = "sometimes".into();
        assert!(form.edit(&mut m).unwrap_err().contains("mapping type"));
        let remove = MappingForm {
            action: "remove".into(),
            kind: "user".into(),
            target: "employeeId".into(),
            ..Default::default()
        };
        remove.edit(&mut m).unwrap();
        assert_eq!(m.users.len(), users);
        assert!(remove.edit(&mut m).unwrap_err().contains("no user mapping"));
        let other = MappingForm {
            kind: "contact".into(),
            ..remove
        };
        assert!(other.edit(&mut m).unwrap_err().contains("user or group"));
    }

    #[test]
    fn times_show_like_the_other_pages() {
        assert_eq!(
            display_time("1970-01-01T00:00:00Z"),
            "1970-01-01 00:00:00 UTC"
        );
        assert_eq!(display_time("not a time"), "not a time");
    }

    #[test]
    fn flash_only_for_known_operations() {
        assert_eq!(flash("sync-now"), Operation::SyncNow.done());
        assert!(flash("<script>").is_empty());
    }
}
