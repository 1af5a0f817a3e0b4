//! Cloud sync > Agents: Home, the Agents list (with its self-refreshing table), an agent's page with
//! its timeline, Check now and Delete.

use super::auth_pages::CsrfOnly;
use super::error::{AppError, AppResult};
use super::session::{urlencode, CurrentUser};
use super::view::{render, timestamp, AgentView, Layout, Pager};
use crate::db;
use crate::fleet::health::{Health, Status};
use crate::fleet::{AgentFilter, DeleteError, SortKey, StatusFilter};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Redirect, Response};
use axum::Form;
use serde::Deserialize;

/// Rows per page of the Agents list.
const PAGE_SIZE: usize = 50;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    total: usize,
    active: usize,
    inactive: usize,
    healthy: usize,
    degraded: usize,
    unhealthy: usize,
    versions: Vec<(String, usize)>,
    attention: Vec<AgentView>,
}

pub async fn home(State(state): State<AppState>, user: CurrentUser) -> AppResult<Response> {
    let s = state.fleet.summary();
    let now = db::now_ms();
    let attention = state
        .fleet
        .needing_attention(10)
        .iter()
        .map(|a| AgentView::new(a, now))
        .collect();
    render(&HomePage {
        layout: Layout::new(&user, "home"),
        total: s.total,
        active: s.active,
        inactive: s.inactive,
        healthy: s.healthy,
        degraded: s.degraded,
        unhealthy: s.unhealthy,
        versions: s.versions,
        attention,
    })
}

/// Query of the Agents list; shared by the page and its htmx table.
#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub order: String,
    #[serde(default)]
    pub offset: usize,
    #[serde(default)]
    pub deleted: String,
}

impl ListQuery {
    /// The fleet filter; unknown values are a 400 naming the allowed ones.
    pub fn filter(&self) -> Result<AgentFilter, AppError> {
        let status = match self.status.as_str() {
            "" => None,
            "all" => Some(StatusFilter::All),
            s => Some(StatusFilter::Only(Status::parse(s).ok_or_else(|| {
                AppError::bad_request(format!(
                    "Unknown status {s:?}: use active, inactive or all."
                ))
            })?)),
        };
        let health = match self.health.as_str() {
            "" => None,
            h => Some(Health::parse(h).ok_or_else(|| {
                AppError::bad_request(format!(
                    "Unknown health {h:?}: use healthy, degraded or unhealthy."
                ))
            })?),
        };
        let sort = match self.sort.as_str() {
            "" => SortKey::default(),
            s => SortKey::parse(s).ok_or_else(|| {
                AppError::bad_request(format!(
                    "Unknown sort {s:?}: use machine_name, last_heartbeat, health, status or version."
                ))
            })?,
        };
        let descending = match self.order.as_str() {
            "" | "asc" => false,
            "desc" => true,
            o => {
                return Err(AppError::bad_request(format!(
                    "Unknown order {o:?}: use asc or desc."
                )))
            }
        };
        let search = Some(self.q.trim().to_string()).filter(|s| !s.is_empty());
        Ok(AgentFilter {
            status,
            health,
            search,
            sort,
            descending,
        })
    }

    /// The query string without the offset, for pagination and refresh links.
    fn base(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("status", &self.status),
            ("health", &self.health),
            ("q", &self.q),
            ("sort", &self.sort),
            ("order", &self.order),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", urlencode(v)));
            }
        }
        parts.join("&")
    }
}

/// The table part of the Agents page.
struct AgentsTable {
    agents: Vec<AgentView>,
    pager: Pager,
    refresh_url: String,
    sort: String,
    order: String,
    base_without_sort: String,
}

/// The table alone, for htmx refreshes (the template is included by `agents/list.html` too).
#[derive(Template)]
#[template(path = "agents/table.html")]
struct AgentsTablePartial {
    table: AgentsTable,
}

#[derive(Template)]
#[template(path = "agents/list.html")]
struct AgentsPage {
    layout: Layout,
    query: ListQuery,
    table: AgentsTable,
    deleted: bool,
    restart_grace: Option<GraceNotice>,
}

/// Why agents that have not checked in since a restart still show their last known health.
struct GraceNotice {
    started: String,
    until: String,
    waiting: usize,
}

fn agents_table(state: &AppState, query: &ListQuery) -> AppResult<AgentsTable> {
    let filter = query.filter()?;
    let (agents, total) = state.fleet.list(&filter, PAGE_SIZE, query.offset);
    let now = db::now_ms();
    let base = query.base();
    let refresh_url = if base.is_empty() {
        format!("/agents/table?offset={}", query.offset)
    } else {
        format!("/agents/table?{base}&offset={}", query.offset)
    };
    let base_without_sort = ListQuery {
        sort: String::new(),
        order: String::new(),
        ..query.clone()
    }
    .base();
    Ok(AgentsTable {
        agents: agents.iter().map(|a| AgentView::new(a, now)).collect(),
        pager: Pager::new("/agents", &base, total, PAGE_SIZE, query.offset),
        refresh_url,
        sort: filter.sort.as_str().into(),
        order: if filter.descending {
            "desc".into()
        } else {
            "asc".into()
        },
        base_without_sort,
    })
}

pub async fn list_agents(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<ListQuery>,
) -> AppResult<Response> {
    let table = agents_table(&state, &query)?;
    render(&AgentsPage {
        layout: Layout::new(&user, "agents"),
        deleted: query.deleted == "1",
        restart_grace: state.fleet.restart_grace().map(|g| GraceNotice {
            started: timestamp(g.started_at),
            until: timestamp(g.until),
            waiting: g.waiting,
        }),
        query,
        table,
    })
}

pub async fn agents_table_partial(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(query): Query<ListQuery>,
) -> AppResult<Response> {
    render(&AgentsTablePartial {
        table: agents_table(&state, &query)?,
    })
}

pub struct EventView {
    pub at: String,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "agents/show.html")]
struct AgentPage {
    layout: Layout,
    agent: AgentView,
    events: Vec<EventView>,
    checked: bool,
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    #[serde(default)]
    checked: String,
}

fn unknown_agent(id: &str) -> AppError {
    AppError::not_found(format!(
        "No agent with id {id}. It may have been deleted; see Cloud sync > Agents."
    ))
}

pub async fn show_agent(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> AppResult<Response> {
    let agent = state.fleet.get(&id).ok_or_else(|| unknown_agent(&id))?;
    // Write pending transitions first so the timeline shows everything up to now.
    state.fleet.flush().await?;
    let events = db::agents::list_events(&state.db, &id, 200)
        .await?
        .into_iter()
        .map(|e| EventView {
            at: timestamp(e.at),
            kind: e.kind,
            from: e.from_value.unwrap_or_default(),
            to: e.to_value,
            reason: e.reason,
        })
        .collect();
    render(&AgentPage {
        layout: Layout::new(&user, "agents"),
        agent: AgentView::new(&agent, db::now_ms()),
        events,
        checked: q.checked == "1",
    })
}

pub async fn check_agent(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> AppResult<Redirect> {
    user.check_csrf(&form.csrf, &state.key)?;
    state
        .fleet
        .poll_one(&id)
        .await
        .ok_or_else(|| unknown_agent(&id))?;
    Ok(Redirect::to(&format!("/agents/{id}?checked=1")))
}

#[derive(Template)]
#[template(path = "agents/delete.html")]
struct DeletePage {
    layout: Layout,
    agent: AgentView,
    active: bool,
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    user.principal.require_manage("deleting an agent")?;
    let agent = state.fleet.get(&id).ok_or_else(|| unknown_agent(&id))?;
    render(&DeletePage {
        layout: Layout::new(&user, "agents"),
        active: agent.status == Status::Active,
        agent: AgentView::new(&agent, db::now_ms()),
    })
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    force: Option<String>,
}

pub async fn delete_agent(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<DeleteForm>,
) -> AppResult<Redirect> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal.require_manage("deleting an agent")?;
    match state
        .fleet
        .delete(&id, &user.principal.username, form.force.is_some())
        .await
    {
        Ok(_) => Ok(Redirect::to("/agents?status=all&deleted=1")),
        Err(DeleteError::NotFound(_)) => Err(unknown_agent(&id)),
        Err(e @ DeleteError::Active(..)) => Err(AppError::conflict(e.to_string())),
        Err(DeleteError::Database(e)) => Err(e.into()),
    }
}
