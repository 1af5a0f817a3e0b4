//! What templates receive: the layout context, display-ready agent rows, and time formatting.

use super::session::CurrentUser;
use crate::fleet::health::human;
use crate::fleet::Agent;
use askama::Template;
use axum::response::{Html, IntoResponse, Response};

/// Renders a template into an HTML response; a render failure is a 500.
pub fn render<T: Template>(template: &T) -> Result<Response, super::error::AppError> {
    Ok(Html(template.render()?).into_response())
}

/// Context of `base.html`: who is signed in, their form token and the active navigation item.
pub struct Layout {
    pub username: String,
    pub role: &'static str,
    pub can_manage: bool,
    pub csrf: String,
    pub nav: &'static str,
}

impl Layout {
    pub fn new(user: &CurrentUser, nav: &'static str) -> Self {
        Layout {
            username: user.principal.username.clone(),
            role: user.principal.role.label(),
            can_manage: user.can_manage(),
            csrf: user.csrf.clone(),
            nav,
        }
    }
}

/// `2026-11-29 21:24:55 UTC`.
pub fn timestamp(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// RFC 3339, for JSON.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// "just now", "45 seconds ago", "2 minutes ago", "3 hours ago", "4 days ago".
pub fn ago(ms: i64, now: i64) -> String {
    let secs = (now - ms).max(0) / 1000;
    let (n, unit) = match secs {
        0..=4 => return "just now".into(),
        5..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// One agent, ready to show.
pub struct AgentView {
    pub id: String,
    pub machine_name: String,
    pub external_ip: String,
    pub status: &'static str,
    pub status_since: String,
    pub health: &'static str,
    pub health_reason: String,
    pub health_since: String,
    pub health_since_ago: String,
    pub version: String,
    pub extension: &'static str,
    pub environment: &'static str,
    pub domains: String,
    pub registered_at: String,
    pub last_heartbeat: String,
    pub last_heartbeat_ago: String,
    pub listen_addr: String,
    pub uptime: String,
    pub last_poll: String,
    pub last_poll_error: String,
    pub checks: Vec<CheckView>,
}

pub struct CheckView {
    pub name: String,
    pub status: &'static str,
    pub message: String,
}

impl AgentView {
    pub fn new(a: &Agent, now: i64) -> Self {
        AgentView {
            id: a.id.clone(),
            machine_name: a.machine_name.clone(),
            external_ip: a.external_ip.clone(),
            status: a.status.as_str(),
            status_since: timestamp(a.status_since),
            health: a.health.as_str(),
            health_reason: a.health_reason.to_string(),
            health_since: timestamp(a.health_since),
            health_since_ago: ago(a.health_since, now),
            version: a.version.clone(),
            extension: a.extension.label(),
            environment: a.environment.as_str(),
            domains: if a.domains.is_empty() {
                "—".into()
            } else {
                a.domains.join(", ")
            },
            registered_at: timestamp(a.registered_at),
            last_heartbeat: a
                .last_heartbeat_at
                .map(timestamp)
                .unwrap_or_else(|| "never".into()),
            last_heartbeat_ago: a
                .last_heartbeat_at
                .map(|t| ago(t, now))
                .unwrap_or_else(|| "never".into()),
            listen_addr: a
                .api_base_url()
                .unwrap_or_else(|| "not reported yet".into()),
            uptime: a
                .uptime_seconds
                .map(|s| human(s * 1000))
                .unwrap_or_else(|| "—".into()),
            last_poll: a
                .last_poll_at
                .map(|t| ago(t, now))
                .unwrap_or_else(|| "not polled yet".into()),
            last_poll_error: a.last_poll_error.clone().unwrap_or_default(),
            checks: a
                .checks
                .iter()
                .map(|c| CheckView {
                    name: c.name.clone(),
                    status: c.status.as_str(),
                    message: c.message.clone(),
                })
                .collect(),
        }
    }
}

/// Pagination links for list pages.
pub struct Pager {
    pub total: usize,
    pub from: usize,
    pub to: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `base_query` is the query string without `offset` (e.g. `status=all&sort=health`).
    pub fn new(path: &str, base_query: &str, total: usize, limit: usize, offset: usize) -> Self {
        let link = |off: usize| {
            if base_query.is_empty() {
                format!("{path}?offset={off}")
            } else {
                format!("{path}?{base_query}&offset={off}")
            }
        };
        Pager {
            total,
            from: if total == 0 { 0 } else { offset + 1 },
            to: (offset + limit).min(total),
            prev: (offset > 0).then(|| link(offset.saturating_sub(limit))),
            next: (offset + limit < total).then(|| link(offset + limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(ago(0, 2_000), "just now");
        assert_eq!(ago(0, 45_000), "45 seconds ago");
        assert_eq!(ago(0, 60_000), "1 minute ago");
        assert_eq!(ago(0, 150_000), "2 minutes ago");
        assert_eq!(ago(0, 3 * 86_400_000), "3 days ago");
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn pager_links() {
        let p = Pager::new("/agents", "status=all", 120, 50, 50);
        assert_eq!((p.from, p.to, p.total), (51, 100, 120));
        assert_eq!(p.prev.as_deref(), Some("/agents?status=all&offset=0"));
        assert_eq!(p.next.as_deref(), Some("/agents?status=all&offset=100"));
        let empty = Pager::new("/agents", "", 0, 50, 0);
        assert_eq!((empty.from, empty.to), (0, 0));
        assert!(empty.prev.is_none() && empty.next.is_none());
    }
}
