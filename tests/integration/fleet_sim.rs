//! The fleet simulator, batch enrollment, `/metrics`, and the group-commit path under kill -9.

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn simulate(console: &Console, token: &str, agents: usize, extra: &[&str]) -> std::process::Child {
    let agents = agents.to_string();
    let mut args = vec![
        "simulate",
        "--console",
        &console.url,
        "--enrollment-token",
        token,
        "--agents",
        &agents,
        "--heartbeat-interval",
        "1s",
        "--report-every",
        "1s",
        "--concurrency",
        "16",
    ];
    args.extend_from_slice(extra);
    Command::new(bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn simulate")
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn simulated_fleet_shows_up_in_the_api_and_metrics() {
    let console = Console::start(FAST);
    let api = Api::new(&console, READER);
    let token = console.enrollment_token(40);
    let _sim = Killed(simulate(&console, &token, 40, &["--failing", "3"]));

    let list = wait_for(
        "40 simulated agents with 37 healthy",
        Duration::from_secs(30),
        || async {
            let (_, healthy) = api.get("/agents?health=healthy&limit=100").await;
            let (_, all) = api.get("/agents?status=all&limit=100").await;
            (all["total"] == 40 && healthy["total"] == 37).then_some(all)
        },
    )
    .await;
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["machine_name"].as_str().unwrap().starts_with("sim-")));
    let (_, sick) = api.get("/agents?health=unhealthy").await;
    assert_eq!(sick["total"], 3);
    assert_eq!(
        sick["items"][0]["health_reason"],
        "check simulated failing: simulated failure"
    );

    // The console's polls reach the simulator's shared health endpoint, per agent.
    let polled = wait_for(
        "a poll of a simulated agent",
        Duration::from_secs(15),
        || async {
            let (_, all) = api.get("/agents?limit=100").await;
            all["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["last_poll_at"].is_string() && a["last_poll_error"].is_null())
                .cloned()
        },
    )
    .await;
    assert!(polled["api_url"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));

    // /metrics needs an API token.
    let r = reqwest::get(format!("{}/metrics", console.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let metrics = api
        .http
        .get(format!("{}/metrics", console.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("hybridsync_agents{status=\"active\",health=\"healthy\"} 37\n"),
        "{text}"
    );
    assert!(
        text.contains("hybridsync_agents{status=\"active\",health=\"unhealthy\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hybridsync_agents_by_version{{version=\"{}\"}} 40\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(
        value("hybridsync_heartbeats_received_total ") >= 40.0,
        "{text}"
    );
    assert!(
        value("hybridsync_polls_total{result=\"ok\"} ") >= 1.0,
        "{text}"
    );
    assert!(
        value("hybridsync_poll_duration_seconds_count{result=\"ok\"} ") >= 1.0,
        "{text}"
    );
    assert!(
        value("hybridsync_state_flushed_agents_total ") >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn batch_enrollment_is_all_or_nothing() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(5);
    let http = reqwest::Client::new();
    let body = |n: usize| {
        serde_json::json!({
            "enrollment_token": token,
            "machine_names": (0..n).map(|i| format!("b{i}")).collect::<Vec<_>>(),
            "version": "0.1.0",
        })
    };
    let url = format!("{}/agent-api/v1/enroll-batch", console.url);
    let r = http.post(&url).json(&body(6)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5 uses left; the batch needs 6"),
        "{err}"
    );
    assert_eq!(
        api.get("/agents?status=all").await.1["total"],
        0,
        "nothing enrolled by a refused batch"
    );

    let mut bad = body(2);
    bad["machine_names"][1] = serde_json::json!("bad\u{0007}name");
    let r = http.post(&url).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(api.get("/agents?status=all").await.1["total"], 0);

    // A certificate pin that is not a SHA-256 in hex is refused too.
    let mut bad = body(2);
    bad["tls_cert_sha256"] = serde_json::json!("not-a-fingerprint");
    let r = http.post(&url).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_tls_cert_sha256", "{err}");
    assert_eq!(api.get("/agents?status=all").await.1["total"], 0);

    let r = http.post(&url).json(&body(5)).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let ok: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ok["agents"].as_array().unwrap().len(), 5);
    assert_eq!(api.get("/agents?status=all").await.1["total"], 5);
    let (_, tokens) = api.get("/enrollment-tokens").await;
    assert_eq!(tokens["items"][0]["uses_left"], 0);
}

#[tokio::test]
async fn after_kill_minus_9_at_most_the_last_batch_interval_of_heartbeat_state_is_lost() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(200);
    let _sim = Killed(simulate(&console, &token, 200, &[]));
    wait_for(
        "200 heartbeating agents",
        Duration::from_secs(30),
        || async {
            let (_, all) = api.get("/agents?health=healthy&limit=500").await;
            (all["total"] == 200).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, before) = api.get("/agents?limit=500").await;
    let mut console = console;
    signal(&console.child, "KILL");
    let _ = console.child.wait();
    let dir = std::mem::replace(&mut console.dir, tempfile::tempdir().unwrap());
    drop(console);

    let console = Console::start_in(dir, &[]);
    let api = Api {
        base: format!("{}/api/v1", console.url),
        ..api
    };
    let (_, after) = api.get("/agents?status=all&limit=500").await;
    assert_eq!(after["total"], 200);
    let persisted: std::collections::HashMap<String, i64> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                millis(&a["last_heartbeat_at"]),
            )
        })
        .collect();
    for agent in before["items"].as_array().unwrap() {
        let seen = millis(&agent["last_heartbeat_at"]);
        let kept = persisted[agent["id"].as_str().unwrap()];
        // Group commit runs every 250 ms, so only a heartbeat received in the last batch interval
        // before the kill may be lost: the one kept is then the previous one, one heartbeat interval
        // (1 s) older. Allow 250 ms of scheduling slack on a loaded 2-core machine.
        assert!(
            seen - kept <= 1500,
            "agent {} lost {} ms of heartbeat state",
            agent["id"],
            seen - kept
        );
    }
}

fn millis(v: &serde_json::Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("no timestamp: {v}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
