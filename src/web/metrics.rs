//! `GET /metrics`: Prometheus text exposition of the fleet, sync cycles and password writeback.
//! Needs an API token (any role), which Prometheus sends with `authorization: { credentials_file: … }`.

use super::error::ApiResult;
use super::session::ApiUser;
use crate::fleet::health::{Health, Status};
use crate::state::{AppState, ConnectionMetrics};
use crate::sync::metrics::{self as sync, SyncMetrics};
use crate::writeback::metrics::{self as writeback, WritebackMetrics};
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
    counter(
        &mut out,
        "hybridsync_poll_rounds_held_total",
        "Health poll rounds started later than --poll-interval, so that polls take at most a quarter of the console's time.",
        m.poll_rounds_held.load(Relaxed),
    );
    out.push_str("# HELP hybridsync_state_flush_duration_seconds Time of one group commit of agent state.\n# TYPE hybridsync_state_flush_duration_seconds histogram\n");
    m.flush_duration
        .render(&mut out, "hybridsync_state_flush_duration_seconds", "");
    counter(
        &mut out,
        "hybridsync_state_flushed_agents_total",
        "Agent states written by group commits.",
        m.flushed_agents.load(Relaxed),
    );
    out.push_str("# HELP hybridsync_fleet_load_seconds Time to load the fleet at start, by source: the snapshot of the last clean shutdown, or the agent table.\n# TYPE hybridsync_fleet_load_seconds gauge\n");
    let _ = writeln!(
        out,
        "hybridsync_fleet_load_seconds{{source=\"{}\"}} {}",
        m.loaded_from,
        m.load_duration.as_secs_f64()
    );
    render_sync(&mut out, &state.sync_metrics);
    render_writeback(&mut out, &state.writeback_metrics);
    render_connections(&mut out, &state.connections);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// Sync cycles, their durations and the objects they changed. Every series of the fixed label sets
/// is written, with 0 before anything happened, so dashboards and alerts see them from the start.
fn render_sync(out: &mut String, m: &SyncMetrics) {
    out.push_str("# HELP hybridsync_sync_cycles_total Sync cycles ended, by kind and result.\n# TYPE hybridsync_sync_cycles_total counter\n");
    for (k, kind) in sync::KINDS.iter().enumerate() {
        for (r, result) in sync::RESULTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hybridsync_sync_cycles_total{{kind=\"{}\",result=\"{result}\"}} {}",
                kind.as_str(),
                m.cycles(k, r)
            );
        }
    }
    out.push_str("# HELP hybridsync_sync_cycle_duration_seconds Time from a cycle's start to its end.\n# TYPE hybridsync_sync_cycle_duration_seconds histogram\n");
    for (k, kind) in sync::KINDS.iter().enumerate() {
        m.duration(k).render(
            out,
            "hybridsync_sync_cycle_duration_seconds",
            &format!("kind=\"{}\"", kind.as_str()),
        );
    }
    out.push_str("# HELP hybridsync_sync_objects_total Cloud objects changed by sync cycles (previews excluded), by action.\n# TYPE hybridsync_sync_objects_total counter\n");
    for (a, action) in sync::ACTIONS.iter().enumerate() {
        let _ = writeln!(
            out,
            "hybridsync_sync_objects_total{{action=\"{action}\"}} {}",
            m.objects(a)
        );
    }
}

/// Password writeback and unlock results and durations, every series written (see [`render_sync`]).
fn render_writeback(out: &mut String, m: &WritebackMetrics) {
    out.push_str("# HELP hybridsync_writeback_results_total Password resets, changes and unlocks on-premises, by operation and result (success or error code).\n# TYPE hybridsync_writeback_results_total counter\n");
    for (o, operation) in writeback::OPERATIONS.iter().enumerate() {
        for (r, result) in writeback::RESULTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hybridsync_writeback_results_total{{operation=\"{operation}\",result=\"{result}\"}} {}",
                m.results(o, r)
            );
        }
    }
    out.push_str("# HELP hybridsync_writeback_duration_seconds Time of one password reset, change or unlock, every agent tried included.\n# TYPE hybridsync_writeback_duration_seconds histogram\n");
    for (o, operation) in writeback::OPERATIONS.iter().enumerate() {
        m.duration(o).render(
            out,
            "hybridsync_writeback_duration_seconds",
            &format!("operation=\"{operation}\""),
        );
    }
}

/// The console's client connections (`web::server`).
fn render_connections(out: &mut String, m: &ConnectionMetrics) {
    let series = [
        (
            "hybridsync_http_connections",
            "gauge",
            "Client connections open now.",
            &m.open,
        ),
        (
            "hybridsync_http_connections_limit",
            "gauge",
            "Client connections served at once at most (--max-connections).",
            &m.limit,
        ),
        (
            "hybridsync_http_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            &m.accepted,
        ),
        (
            "hybridsync_http_connections_closed_idle_total",
            "counter",
            "Client connections closed because no request came within --idle-timeout.",
            &m.closed_idle,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            value.load(Relaxed)
        );
    }
}

/// Escapes a label value (backslash, quote, newline) as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sync::CycleRow;
    use std::time::Duration;

    /// The exposition as Prometheus parses it: each `# TYPE` before its samples, once per name.
    fn check_exposition(out: &str) {
        let mut typed = std::collections::HashSet::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_owned()), "{name} typed twice");
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(name);
                assert!(typed.contains(family), "{line}: no # TYPE before it");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn sync_series_are_there_with_zeros_from_the_start() {
        let mut out = String::new();
        render_sync(&mut out, &SyncMetrics::default());
        check_exposition(&out);
        for kind in ["full", "delta", "preview"] {
            for result in ["succeeded", "failed", "threshold"] {
                assert!(
                    out.contains(&format!(
                        "hybridsync_sync_cycles_total{{kind=\"{kind}\",result=\"{result}\"}} 0\n"
                    )),
                    "{out}"
                );
            }
            assert!(
                out.contains(&format!(
                    "hybridsync_sync_cycle_duration_seconds_bucket{{kind=\"{kind}\",le=\"300\"}} 0\n"
                )),
                "{out}"
            );
            assert!(
                out.contains(&format!(
                    "hybridsync_sync_cycle_duration_seconds_count{{kind=\"{kind}\"}} 0\n"
                )),
                "{out}"
            );
        }
        for action in ["created", "updated", "deleted", "staged"] {
            assert!(
                out.contains(&format!(
                    "hybridsync_sync_objects_total{{action=\"{action}\"}} 0\n"
                )),
                "{out}"
            );
        }
    }

    #[test]
    fn sync_series_count_ended_cycles() {
        let m = SyncMetrics::default();
        m.cycle_ended(&CycleRow {
            cycle_id: "c".into(),
            configuration_id: "k".into(),
            agent_id: "a".into(),
            kind: "full".into(),
            state: "succeeded".into(),
            started_at: 0,
            finished_at: Some(75_000),
            imported: 7,
            created: 7,
            updated: 0,
            deleted: 0,
            staged: 0,
            skipped: 0,
            failed: 0,
            error: None,
            plan_json: None,
        });
        let mut out = String::new();
        render_sync(&mut out, &m);
        check_exposition(&out);
        for line in [
            "hybridsync_sync_cycles_total{kind=\"full\",result=\"succeeded\"} 1\n",
            "hybridsync_sync_cycle_duration_seconds_bucket{kind=\"full\",le=\"60\"} 0\n",
            "hybridsync_sync_cycle_duration_seconds_bucket{kind=\"full\",le=\"120\"} 1\n",
            "hybridsync_sync_cycle_duration_seconds_bucket{kind=\"full\",le=\"+Inf\"} 1\n",
            "hybridsync_sync_cycle_duration_seconds_sum{kind=\"full\"} 75\n",
            "hybridsync_sync_cycle_duration_seconds_count{kind=\"full\"} 1\n",
            "hybridsync_sync_cycle_duration_seconds_count{kind=\"delta\"} 0\n",
            "hybridsync_sync_objects_total{action=\"created\"} 7\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }

    #[test]
    fn writeback_series_are_there_with_zeros_and_count_results() {
        let m = WritebackMetrics::default();
        let mut out = String::new();
        render_writeback(&mut out, &m);
        check_exposition(&out);
        let zeros = out
            .lines()
            .filter(|l| l.starts_with("hybridsync_writeback_results_total{") && l.ends_with(" 0"))
            .count();
        assert_eq!(zeros, 3 * 12, "{out}");
        assert!(out.contains(
            "hybridsync_writeback_results_total{operation=\"unlock\",result=\"unlock_not_allowed\"} 0\n"
        ));
        for operation in ["reset", "change", "unlock"] {
            assert!(
                out.contains(&format!(
                    "hybridsync_writeback_duration_seconds_count{{operation=\"{operation}\"}} 0\n"
                )),
                "{out}"
            );
        }

        m.record("reset", "success", Duration::from_millis(40));
        m.record("change", "password_policy", Duration::from_millis(40));
        let mut out = String::new();
        render_writeback(&mut out, &m);
        check_exposition(&out);
        for line in [
            "hybridsync_writeback_results_total{operation=\"reset\",result=\"success\"} 1\n",
            "hybridsync_writeback_results_total{operation=\"change\",result=\"password_policy\"} 1\n",
            "hybridsync_writeback_results_total{operation=\"change\",result=\"success\"} 0\n",
            "hybridsync_writeback_duration_seconds_bucket{operation=\"reset\",le=\"0.025\"} 0\n",
            "hybridsync_writeback_duration_seconds_bucket{operation=\"reset\",le=\"0.05\"} 1\n",
            "hybridsync_writeback_duration_seconds_count{operation=\"reset\"} 1\n",
            "hybridsync_writeback_duration_seconds_count{operation=\"unlock\"} 0\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }
}
