//! `/metrics` counts what sync and writeback did: a full and a delta cycle and one administrator's
//! password reset, run by a real console and agent against a throw-away slapd, show up as exact
//! counter values, and the histograms' counts agree with them.

use crate::directory_support::*;
use crate::support::*;
use crate::sync::{add_person, configuration, create_configuration, cycle_after, objects};
use hybridsync::directory::conn::Connection;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn metrics_count_sync_cycles_objects_and_writeback() {
    let slapd = Slapd::start(true);
    let base = slapd.base_dn().to_string();
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);

    // Before anything happened every series of a fixed label set is there, at 0.
    let before = scrape(&console, &api).await;
    for series in [
        "hybridsync_sync_cycles_total{kind=\"full\",result=\"succeeded\"}",
        "hybridsync_sync_cycles_total{kind=\"delta\",result=\"threshold\"}",
        "hybridsync_sync_cycle_duration_seconds_count{kind=\"preview\"}",
        "hybridsync_sync_objects_total{action=\"staged\"}",
        "hybridsync_writeback_results_total{operation=\"reset\",result=\"success\"}",
        "hybridsync_writeback_results_total{operation=\"unlock\",result=\"no_healthy_agent\"}",
        "hybridsync_writeback_duration_seconds_count{operation=\"change\"}",
    ] {
        assert_eq!(value(&before, series), Some(0.0), "{series}\n{before}");
    }

    let mut agent = Agent::install(&console, &console.enrollment_token(1), "metrics-agent");
    connect_created(
        &agent,
        "example.test",
        slapd.ldaps_url(),
        slapd.ca_cert(),
        slapd.admin_dn(),
        slapd.admin_password(),
    );
    agent.start("1s");
    let id = create_configuration(&api, "example.test", false).await;
    // No scheduled cycle may slip in between the ones this test starts.
    let (status, body) = api
        .send(
            Method::PATCH,
            &format!("/configurations/{id}"),
            Some(json!({"interval_seconds": 86_400})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let full = cycle_after(&api, &id, "enable").await;
    assert_eq!(full["state"], "succeeded", "{full}");
    assert_eq!(full["kind"], "full", "{full}");

    // A new user for the delta to create.
    let mut admin = Connection::bind_new(
        &target(slapd.ldaps_url(), slapd.ca_cert()),
        slapd.admin_dn(),
        slapd.admin_password(),
    )
    .await
    .unwrap();
    add_person(
        &mut admin,
        &format!("uid=gina,ou=people,{base}"),
        "gina",
        "Gina Garcia",
        &[],
    )
    .await;
    let delta = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(delta["state"], "succeeded", "{delta}");
    assert_eq!(delta["kind"], "delta", "{delta}");
    assert_eq!(delta["created"], 1, "Gina: {delta}");
    assert_eq!(configuration(&api, &id).await["status"]["code"], "Active");
    let synced = objects(&api, "users").await.len() + objects(&api, "groups").await.len();

    // One administrator's password reset, with writeback turned on.
    let (status, body) = api
        .send(
            Method::PUT,
            "/password-reset/on-premises-integration",
            Some(json!({"enable_writeback": true, "use_cloud_sync": true, "allow_unlock_without_reset": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, users) = api.get("/users?q=alice@example.test").await;
    let alice = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_principal_name"] == "alice@example.test")
        .unwrap_or_else(|| panic!("alice not synced: {users}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/users/{alice}/reset-password"),
            Some(json!({"new_password": "Fresh-Passw0rd-1", "must_change_at_next_sign_in": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The console counts a cycle right after committing its end, which the API may show a moment
    // earlier: wait for the counters, then check everything exactly.
    let text = wait_for(
        "the cycles in /metrics",
        Duration::from_secs(10),
        || async {
            let text = scrape(&console, &api).await;
            (value(
                &text,
                "hybridsync_sync_cycles_total{kind=\"delta\",result=\"succeeded\"}",
            ) == Some(1.0))
            .then_some(text)
        },
    )
    .await;
    let n = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    let as_f64 = |v: &Value| v.as_f64().unwrap();

    for (kind, succeeded) in [("full", 1.0), ("delta", 1.0), ("preview", 0.0)] {
        assert_eq!(
            n(&format!(
                "hybridsync_sync_cycles_total{{kind=\"{kind}\",result=\"succeeded\"}}"
            )),
            succeeded,
            "{text}"
        );
        for result in ["failed", "threshold"] {
            assert_eq!(
                n(&format!(
                    "hybridsync_sync_cycles_total{{kind=\"{kind}\",result=\"{result}\"}}"
                )),
                0.0,
                "{text}"
            );
        }
        assert_eq!(
            n(&format!(
                "hybridsync_sync_cycle_duration_seconds_count{{kind=\"{kind}\"}}"
            )),
            succeeded,
            "{text}"
        );
        assert_eq!(
            n(&format!(
                "hybridsync_sync_cycle_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}}"
            )),
            succeeded,
            "{text}"
        );
    }
    // The histograms observed the cycles' own durations.
    for cycle in [&full, &delta] {
        let kind = cycle["kind"].as_str().unwrap();
        let sum = n(&format!(
            "hybridsync_sync_cycle_duration_seconds_sum{{kind=\"{kind}\"}}"
        ));
        let recorded = as_f64(&cycle["duration_ms"]) / 1000.0;
        assert!((sum - recorded).abs() < 1e-6, "{kind}: {sum} vs {cycle}");
    }

    // Every object synced was created once: by the full cycle, or Gina by the delta.
    assert!(synced > 3, "users and groups: {synced}");
    let created = n("hybridsync_sync_objects_total{action=\"created\"}");
    assert_eq!(created, synced as f64, "{text}");
    assert_eq!(
        created,
        as_f64(&full["created"]) + as_f64(&delta["created"]),
        "{text}"
    );
    assert_eq!(
        n("hybridsync_sync_objects_total{action=\"updated\"}"),
        as_f64(&full["updated"]) + as_f64(&delta["updated"]),
        "{text}"
    );
    assert_eq!(
        n("hybridsync_sync_objects_total{action=\"deleted\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        n("hybridsync_sync_objects_total{action=\"staged\"}"),
        0.0,
        "{text}"
    );

    // One reset, successful; nothing else written back.
    assert_eq!(
        n("hybridsync_writeback_results_total{operation=\"reset\",result=\"success\"}"),
        1.0,
        "{text}"
    );
    let writebacks: f64 = text
        .lines()
        .filter(|l| l.starts_with("hybridsync_writeback_results_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(writebacks, 1.0, "{text}");
    for (operation, count) in [("reset", 1.0), ("change", 0.0), ("unlock", 0.0)] {
        assert_eq!(
            n(&format!(
                "hybridsync_writeback_duration_seconds_count{{operation=\"{operation}\"}}"
            )),
            count,
            "{text}"
        );
    }
}
