//! Audit logs.

use super::error::AppResult;
use super::session::CurrentUser;
use super::view::{render, timestamp, Layout, Pager};
use crate::db;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

const PAGE_SIZE: usize = 50;

pub struct AuditView {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: String,
    pub after: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    entries: Vec<AuditView>,
    pager: Pager,
}

#[derive(Deserialize, Default)]
pub struct OffsetQuery {
    #[serde(default)]
    offset: usize,
}

pub async fn audit_logs(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<OffsetQuery>,
) -> AppResult<Response> {
    let (rows, total) = db::audit::list(&state.db, PAGE_SIZE as i64, q.offset as i64).await?;
    let entries = rows
        .into_iter()
        .map(|r| AuditView {
            at: timestamp(r.at),
            actor: r.actor,
            action: r.action,
            target: format!("{} {}", r.target_type, r.target_id),
            before: r.before_json.unwrap_or_default(),
            after: r.after_json.unwrap_or_default(),
        })
        .collect();
    render(&AuditPage {
        layout: Layout::new(&user, "audit"),
        entries,
        pager: Pager::new(
            "/audit-logs",
            "",
            usize::try_from(total).unwrap_or(0),
            PAGE_SIZE,
            q.offset,
        ),
    })
}
