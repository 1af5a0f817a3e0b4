//! `GET /metrics`: Prometheus text exposition of the fleet. Needs an API token (any role), which
//! Prometheus sends with `authorization: { credentials_file: … }`.

use super::error::ApiResult;
use super::session::ApiUser;
use crate::fleet::health::{Health, Status};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

pub async fn metrics(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<impl IntoResponse> {
    let fleet = &state.fleet;
    let m = &fleet.metrics;
    let counts = fleet.counts_by_status_health_version();
    let mut out = String::with_capacity(4096);
    out.push_str(
        "# HELP hybridsync_agents Agents by status and health.\n# TYPE hybridsync_agents gauge\n",
    );
    for status in [Status::Active, Status::Inactive] {
        for health in [Health::Healthy, Health::Degraded, Health::Unhealthy] {
            let n = counts
                .by_status_health
                .get(&(status, health))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "hybridsync_agents{{status=\"{}\",health=\"{}\"}} {n}",
                status.as_str(),
                health.as_str()
            );
        }
    }
    out.push_str("# HELP hybridsync_agents_by_version Agents by reported version.\n# TYPE hybridsync_agents_by_version gauge\n");
    for (version, n) in &counts.by_version {
        let _ = writeln!(
            out,
            "hybridsync_agents_by_version{{version=\"{}\"}} {n}",
            label(version)
        );
    }
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        &mut out,
        "hybridsync_heartbeats_received_total",
        "Heartbeats accepted from agents.",
        m.heartbeats_received.load(Relaxed),
    );
    out.push_str("# HELP hybridsync_polls_total Health polls of agents by result.\n# TYPE hybridsync_polls_total counter\n");
    let _ = writeln!(
        out,
        "hybridsync_polls_total{{result=\"ok\"}} {}",
        m.polls_ok.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "hybridsync_polls_total{{result=\"failed\"}} {}",
        m.polls_failed.load(Relaxed)
    );
    out.push_str("# HELP hybridsync_poll_duration_seconds Latency of one health poll.\n# TYPE hybridsync_poll_duration_seconds histogram\n");
    m.poll_latency_ok.render(
        &mut out,
        "hybridsync_poll_duration_seconds",
        "result=\"ok\"",
    );
    m.poll_latency_failed.render(
        &mut out,
        "hybridsync_poll_duration_seconds",
        "result=\"failed\"",
    );
    out.push_str("# HELP hybridsync_poll_round_duration_seconds Time to poll every active agent once.\n# TYPE hybridsync_poll_round_duration_seconds histogram\n");
    m.poll_round_duration
        .render(&mut out, "hybridsync_poll_round_duration_seconds", "");
    out.push_str("# HELP hybridsync_state_flush_duration_seconds Time of one group commit of agent state.\n# TYPE hybridsync_state_flush_duration_seconds histogram\n");
    m.flush_duration
        .render(&mut out, "hybridsync_state_flush_duration_seconds", "");
    counter(
        &mut out,
        "hybridsync_state_flushed_agents_total",
        "Agent states written by group commits.",
        m.flushed_agents.load(Relaxed),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// Escapes a label value (backslash, quote, newline) as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
