//! Identity > Users and Groups (the cloud directory that configurations fill) and Cloud sync >
//! Provisioning logs, with their detail pages. Rows are the JSON API's (`ObjectJson`, `LogJson`),
//! so a page and the API always show the same thing.

use super::configurations::ViewHelpers;
use super::error::{AppError, AppResult};
use super::session::{urlencode, CurrentUser};
use super::sync_api::{
    self, LogJson, LogQuery, ObjectDetail, ObjectJson, LOG_ACTIONS, LOG_STATUSES,
};
use super::view::{render, Layout, Pager};
use crate::db::sync as store;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::collections::HashMap;

const PAGE_SIZE: usize = 50;

/// What differs between the Users and the Groups pages.
pub struct Kind {
    pub kind: &'static str,
    pub title: &'static str,
    pub path: &'static str,
    pub nav: &'static str,
}

const USERS: Kind = Kind {
    kind: "user",
    title: "Users",
    path: "/users",
    nav: "users",
};
const GROUPS: Kind = Kind {
    kind: "group",
    title: "Groups",
    path: "/groups",
    nav: "groups",
};

#[derive(Deserialize, Default)]
pub struct ObjectsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
}

#[derive(Template)]
#[template(path = "directory/objects.html")]
struct ObjectsPage {
    layout: Layout,
    k: Kind,
    q: String,
    items: Vec<ObjectJson>,
    pager: Pager,
}

impl ViewHelpers for ObjectsPage {}

async fn list_objects(
    state: &AppState,
    user: &CurrentUser,
    k: Kind,
    q: ObjectsQuery,
) -> AppResult<Response> {
    let search = q.q.trim().to_owned();
    let (rows, total) = store::list_provisioned(
        &state.db,
        k.kind,
        &search,
        PAGE_SIZE as i64,
        i64::try_from(q.offset).unwrap_or(i64::MAX),
    )
    .await?;
    let base = if search.is_empty() {
        String::new()
    } else {
        format!("q={}", urlencode(&search))
    };
    render(&ObjectsPage {
        layout: Layout::new(user, k.nav),
        pager: Pager::new(
            k.path,
            &base,
            usize::try_from(total).unwrap_or(0),
            PAGE_SIZE,
            q.offset,
        ),
        k,
        q: search,
        items: rows.iter().map(ObjectJson::from).collect(),
    })
}

pub async fn list_users(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<ObjectsQuery>,
) -> AppResult<Response> {
    list_objects(&state, &user, USERS, q).await
}

pub async fn list_groups(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<ObjectsQuery>,
) -> AppResult<Response> {
    list_objects(&state, &user, GROUPS, q).await
}

#[derive(Template)]
#[template(path = "directory/object.html")]
struct ObjectPage {
    layout: Layout,
    k: Kind,
    d: ObjectDetail,
    logs_link: String,
    /// The outcome of a reset or unlock just asked for on this page.
    flash: Option<Flash>,
}

/// What a user's page says after Reset password or Unlock: done (by which agent) or why not.
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

impl ViewHelpers for ObjectPage {}

impl ObjectPage {
    /// The page of a related object (a group of a user, a member of a group).
    fn link_of(&self, o: &ObjectJson) -> String {
        match o.kind.as_str() {
            "group" => format!("/groups/{}", o.id),
            _ => format!("/users/{}", o.id),
        }
    }
}

async fn show_object(
    state: &AppState,
    user: &CurrentUser,
    k: Kind,
    id: &str,
    flash: Option<Flash>,
) -> AppResult<Response> {
    let d = sync_api::object_detail(state, k.kind, id)
        .await
        .map_err(|e| e.0)?;
    render(&ObjectPage {
        layout: Layout::new(user, k.nav),
        logs_link: format!("/provisioning-logs?q={}", urlencode(&d.object.anchor)),
        k,
        d,
        flash,
    })
}

/// A user's page with the outcome of an action on it (see `writeback_pages`).
pub async fn user_page_with(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    flash: Flash,
) -> AppResult<Response> {
    show_object(state, user, USERS, id, Some(flash)).await
}

pub async fn show_user(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    show_object(&state, &user, USERS, &id, None).await
}

pub async fn show_group(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    show_object(&state, &user, GROUPS, &id, None).await
}

// ---------------------------------------------------------------------------------------------
// Provisioning logs

/// A configuration in the filter's select.
pub struct ConfigurationOption {
    pub id: String,
    pub domain: String,
}

#[derive(Template)]
#[template(path = "directory/logs.html")]
struct LogsPage {
    layout: Layout,
    query: LogQuery,
    statuses: &'static [&'static str],
    actions: &'static [&'static str],
    configurations: Vec<ConfigurationOption>,
    filtered: bool,
    entries: Vec<LogJson>,
    pager: Pager,
}

impl ViewHelpers for LogsPage {}

impl LogsPage {
    fn duration_of(&self, ms: &i64) -> String {
        self.duration(&Some(*ms))
    }
    fn short(&self, id: &str) -> String {
        id.chars().take(8).collect()
    }
}

/// The filters as a query string without the offset, for paging links.
fn log_base(q: &LogQuery) -> String {
    [
        ("since", &q.since),
        ("until", &q.until),
        ("status", &q.status),
        ("action", &q.action),
        ("configuration", &q.configuration),
        ("cycle", &q.cycle),
        ("q", &q.q),
    ]
    .iter()
    .filter(|(_, v)| !v.trim().is_empty())
    .map(|(k, v)| format!("{k}={}", urlencode(v.trim())))
    .collect::<Vec<_>>()
    .join("&")
}

pub async fn list_logs(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<LogQuery>,
) -> AppResult<Response> {
    let filter = q.filter()?;
    let (rows, total) = store::logs(
        &state.db,
        &filter,
        PAGE_SIZE as i64,
        i64::try_from(q.offset).unwrap_or(i64::MAX),
    )
    .await?;
    let configurations = store::configurations(&state.db)
        .await?
        .into_iter()
        .map(|c| ConfigurationOption {
            id: c.configuration_id,
            domain: c.domain,
        })
        .collect();
    let base = log_base(&q);
    render(&LogsPage {
        layout: Layout::new(&user, "provisioning-logs"),
        statuses: &LOG_STATUSES,
        actions: &LOG_ACTIONS,
        configurations,
        filtered: !base.is_empty(),
        entries: rows.iter().map(LogJson::from).collect(),
        pager: Pager::new(
            "/provisioning-logs",
            &base,
            usize::try_from(total).unwrap_or(0),
            PAGE_SIZE,
            q.offset,
        ),
        query: q,
    })
}

#[derive(Template)]
#[template(path = "directory/log.html")]
struct LogPage {
    layout: Layout,
    e: LogJson,
    /// The cloud object's page, when the entry has a target.
    target_link: Option<String>,
    /// The configuration's page, when it still exists.
    configuration_link: Option<String>,
}

impl ViewHelpers for LogPage {}

impl LogPage {
    fn duration_of(&self, ms: &i64) -> String {
        self.duration(&Some(*ms))
    }
}

pub async fn show_log(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let missing = || AppError::not_found(format!("No provisioning log entry {id}."));
    let log_id: i64 = id.parse().map_err(|_| missing())?;
    let row = store::log(&state.db, log_id).await?.ok_or_else(missing)?;
    let e = LogJson::from(&row);
    let existing: HashMap<String, String> = store::configurations(&state.db)
        .await?
        .into_iter()
        .map(|c| (c.configuration_id, c.domain))
        .collect();
    let configuration_link = e
        .configuration_id
        .as_ref()
        .filter(|c| existing.contains_key(*c))
        .map(|c| format!("/configurations/{c}"));
    let target_link = e.target.id.as_ref().map(|t| match e.object_kind.as_str() {
        "group" => format!("/groups/{t}"),
        _ => format!("/users/{t}"),
    });
    render(&LogPage {
        layout: Layout::new(&user, "provisioning-logs"),
        e,
        target_link,
        configuration_link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_links_keep_the_filters() {
        let q = LogQuery {
            status: "failure".into(),
            q: "ann lee".into(),
            ..Default::default()
        };
        assert_eq!(log_base(&q), "status=failure&q=ann%20lee");
        assert_eq!(log_base(&LogQuery::default()), "");
    }
}
