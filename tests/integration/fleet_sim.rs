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

/// Waits until `n` agents are healthy, as their heartbeats make them.
async fn all_healthy(api: &Api, n: usize) {
    wait_for(
        &format!("{n} healthy agents"),
        Duration::from_secs(30),
        || async {
            let (_, all) = api.get("/agents?health=healthy&limit=500").await;
            (all["total"] == n).then_some(())
        },
    )
    .await;
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
    let text = scrape(&console, &api).await;
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
    assert!(
        value(&text, "hybridsync_heartbeats_received_total").is_some_and(|v| v >= 40.0),
        "{text}"
    );
    assert!(
        value(&text, "hybridsync_polls_total{result=\"ok\"}").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "hybridsync_poll_duration_seconds_count{result=\"ok\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, "hybridsync_state_flushed_agents_total").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // Rounds over 40 agents take milliseconds: none is held back past the 1 s interval.
    assert_eq!(
        value(&text, "hybridsync_poll_rounds_held_total"),
        Some(0.0),
        "{text}"
    );
}

/// The simulator's latest totals: (health polls answered, TLS handshakes completed).
fn sim_totals(line: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some((field("health-polls-answered=")?, field("tls-handshakes=")?))
}

#[tokio::test]
async fn only_the_first_poll_keepalive_agents_of_a_round_keep_their_connection() {
    // 10 agents, 4 kept: after the first round, every round opens 6 new connections.
    let console = Console::start(&[FAST, &["--poll-keepalive", "4"]].concat());
    let token = console.enrollment_token(10);
    let mut child = Command::new(bin())
        .args([
            "simulate",
            "--console",
            &console.url,
            "--enrollment-token",
            &token,
            "--agents",
            "10",
            "--heartbeat-interval",
            "1s",
            "--report-every",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn simulate");
    let out = child.stdout.take().unwrap();
    let _sim = Killed(child);
    let latest = std::sync::Arc::new(std::sync::Mutex::new(None));
    let writer = latest.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(totals) = sim_totals(&line) {
                *writer.lock().unwrap() = Some(totals);
            }
        }
    });
    let totals_after = |polls: u64| {
        let latest = latest.clone();
        async move {
            wait_for(
                &format!("{polls} polls answered"),
                Duration::from_secs(60),
                || async { latest.lock().unwrap().filter(|(p, _)| *p >= polls) },
            )
            .await
        }
    };
    // Three rounds in, every agent reports its address and the kept connections are open.
    let (polls_before, handshakes_before) = totals_after(30).await;
    let (polls_after, handshakes_after) = totals_after(polls_before + 60).await;
    let polls = polls_after - polls_before;
    let handshakes = handshakes_after - handshakes_before;
    // 6 in 10 polls need a handshake. A sample taken mid-round can be off by up to one round's
    // new connections at either end; keeping all (0) or none (one per poll) is far outside.
    let expected = polls * 6 / 10;
    assert!(
        handshakes + 12 >= expected && handshakes <= expected + 12,
        "{handshakes} TLS handshakes for {polls} polls; expected about {expected}"
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
    all_healthy(&api, 200).await;
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

/// What must survive a restart unchanged (status and health are re-evaluated against the clock).
fn lasting(list: &serde_json::Value) -> Vec<String> {
    let mut agents: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            [
                "id",
                "machine_name",
                "version",
                "external_ip",
                "listen_addr",
                "registered_at",
                "last_heartbeat_at",
                "uptime_seconds",
                "checks",
                "domains",
            ]
            .map(|k| a[k].to_string())
            .join(" ")
        })
        .collect();
    agents.sort();
    agents
}

/// Starts the console again on `dir` with `extra` flags, with `api` pointed at it.
fn reopen(dir: tempfile::TempDir, api: &Api, extra: &[&str]) -> (Console, Api) {
    let console = Console::start_in(dir, extra);
    let api = Api {
        base: format!("{}/api/v1", console.url),
        http: api.http.clone(),
        token: api.token.clone(),
    };
    (console, api)
}

/// Whether the console's last start loaded the fleet from `source` (`snapshot` or `table`).
async fn loaded_from(console: &Console, api: &Api, source: &str) -> bool {
    let series = format!("hybridsync_fleet_load_seconds{{source=\"{source}\"}}");
    value(&scrape(console, api).await, &series).is_some_and(|s| s >= 0.0)
}

/// Stops the console with SIGTERM; the clean shutdown must write a snapshot that counts.
async fn stop_cleanly(console: Console) -> tempfile::TempDir {
    let (status, dir) = console.stop();
    assert!(status.success());
    assert_eq!(
        snapshot_rows(dir.path()).await,
        1,
        "clean shutdown writes a snapshot"
    );
    dir
}

async fn snapshot_rows(dir: &std::path::Path) -> i64 {
    let pool = hybridsync::db::open(dir).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM fleet_snapshot")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn a_clean_restart_reads_the_fleet_snapshot_and_a_changed_agent_table_is_read_instead() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(30);
    let credentials = console.data_dir().join("simulated-credentials");
    let sim = Killed(simulate(
        &console,
        &token,
        30,
        &["--credentials-out", credentials.to_str().unwrap()],
    ));
    all_healthy(&api, 30).await;
    drop(sim);
    assert!(
        loaded_from(&console, &api, "table").await,
        "a first start reads the table"
    );
    let (_, before) = api.get("/agents?status=all&limit=100").await;
    let dir = stop_cleanly(console).await;

    let (console, api) = reopen(dir, &api, &[]);
    assert!(
        loaded_from(&console, &api, "snapshot").await,
        "the restart reads the snapshot"
    );
    // The 30 agents are still active and have addresses, but the first poll round waits one
    // interval (60 s here): a restart does not call the whole fleet at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = scrape(&console, &api).await;
    for result in ["ok", "failed"] {
        let series = format!("hybridsync_polls_total{{result=\"{result}\"}}");
        assert_eq!(value(&metrics, &series), Some(0.0), "{series}");
    }
    let (_, after) = api.get("/agents?status=all&limit=100").await;
    assert_eq!(after["total"], 30);
    assert_eq!(lasting(&after), lasting(&before));
    // The agents still authenticate: their credentials came back with the snapshot.
    let (credential, name) = &simulated_credentials(&credentials)[0];
    heartbeat(&api.http, &console.url, credential, name).await;
    let dir = stop_cleanly(console).await;

    // Any change to the agent table while the console is down makes the snapshot stale.
    let renamed = before["items"][0]["id"].as_str().unwrap().to_string();
    let pool = hybridsync::db::open(dir.path()).await.unwrap();
    sqlx::query("UPDATE agent SET machine_name = 'renamed-offline' WHERE agent_id = ?")
        .bind(&renamed)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(
        snapshot_rows(dir.path()).await,
        0,
        "the change dropped the snapshot"
    );
    let (console, api) = reopen(dir, &api, &[]);
    assert!(
        loaded_from(&console, &api, "table").await,
        "a stale snapshot is not read"
    );
    let agent = api.agent(&renamed).await.unwrap();
    assert_eq!(agent["machine_name"], "renamed-offline");
}

/// The simulated agents' `(credential, machine name)` pairs, as `--credentials-out` wrote them.
fn simulated_credentials(file: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(c, n)| (c.to_string(), n.to_string()))
        .collect()
}

/// One heartbeat as a real agent sends it, with a 1 s interval.
async fn heartbeat(http: &reqwest::Client, console_url: &str, credential: &str, name: &str) {
    let r = http
        .post(format!("{console_url}/agent-api/v1/heartbeat"))
        .bearer_auth(credential)
        .json(
            &serde_json::json!({"version": "0.1.0", "machine_name": name, "uptime_seconds": 7,
            "heartbeat_interval_seconds": 1, "checks": []}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "heartbeat of {name}");
}

/// The agent called `name` in a list from the API.
fn named<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["machine_name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed"))
}

#[tokio::test]
async fn after_a_downtime_an_agent_is_judged_silent_only_once_it_had_time_to_check_in() {
    // Heartbeats every second: unhealthy after 5 s of silence, inactive after 7 s.
    const THRESHOLDS: &[&str] = &["--unhealthy-after", "5s", "--inactive-after", "7s"];
    let console = Console::start(THRESHOLDS);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let credentials = console.data_dir().join("simulated-credentials");
    let sim = Killed(simulate(
        &console,
        &token,
        2,
        &["--credentials-out", credentials.to_str().unwrap()],
    ));
    all_healthy(&api, 2).await;
    let (_, before) = api.get("/agents?status=all&limit=10").await;
    // Signed in before the stop (sessions outlive it), so the page is read right after the start.
    let page = Browser::new(&console);
    assert_eq!(page.sign_in(ADMIN, PASSWORD).await, 303);
    // The console stops while both agents still heartbeat, then stays down longer than both
    // thresholds; only `alive` comes back.
    let dir = stop_cleanly(console).await;
    drop(sim);
    let agents = simulated_credentials(&credentials);
    let [(alive_credential, alive), (_, silent)] = &agents[..] else {
        panic!("two simulated agents: {agents:?}")
    };
    tokio::time::sleep(Duration::from_secs(8)).await;

    let (console, api) = reopen(dir, &api, THRESHOLDS);
    // Before any heartbeat, the Agents page says why both still show their last known health.
    let page = Browser {
        base: console.url.clone(),
        ..page
    };
    let (status, html) = page.get("/agents").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(
            "2 agents that were heartbeating when the console stopped have not checked in since"
        ),
        "{html}"
    );
    let beating = {
        let (url, http) = (console.url.clone(), api.http.clone());
        let (credential, name) = (alive_credential.clone(), alive.clone());
        tokio::spawn(async move {
            loop {
                heartbeat(&http, &url, &credential, &name).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    // Sweeps run every second from the start; the last heartbeats were 8 s before it. Neither
    // agent is judged on the console's own downtime: both keep the state they had.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, early) = api.get("/agents?status=all&limit=10").await;
    for name in [alive, silent] {
        for field in ["health", "health_since", "status", "status_since"] {
            assert_eq!(
                named(&early, name)[field],
                named(&before, name)[field],
                "{name}'s {field} 1.5 s after the restart"
            );
        }
    }

    // Once it had 5 s to check in, the silent agent is judged on its last real contact.
    let judged = wait_for(
        "the silent agent judged",
        Duration::from_secs(30),
        || async {
            let (_, all) = api.get("/agents?status=all&limit=10").await;
            let agent = named(&all, silent);
            (agent["health"] == "unhealthy" && agent["status"] == "inactive").then(|| all.clone())
        },
    )
    .await;
    let reason = named(&judged, silent)["health_reason"].as_str().unwrap();
    assert!(reason.starts_with("no heartbeat for"), "{reason}");
    for field in ["health", "health_since", "status", "status_since"] {
        assert_eq!(
            named(&judged, alive)[field],
            named(&before, alive)[field],
            "the agent that checked in keeps its {field}"
        );
    }
    beating.abort();
}

/// Every event's id and `kind:to_value`, oldest first, read from the database in `dir`.
async fn events(dir: &std::path::Path) -> Vec<(i64, String)> {
    let pool = hybridsync::db::open(dir).await.unwrap();
    let events = sqlx::query_as(
        "SELECT agent_event_id, kind || ':' || to_value FROM agent_event ORDER BY agent_event_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    events
}

#[tokio::test]
async fn events_older_than_the_retention_are_deleted_and_a_too_short_retention_is_refused() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let sim = Killed(simulate(&console, &token, 2, &[]));
    all_healthy(&api, 2).await;
    let dir = stop_cleanly(console).await;
    drop(sim);
    // The enrollments, the two oldest events, were recorded 31 days ago.
    let recorded = events(dir.path()).await;
    assert_eq!(
        recorded[..2]
            .iter()
            .map(|e| e.1.as_str())
            .collect::<Vec<_>>(),
        ["lifecycle:enrolled"; 2],
        "{recorded:?}"
    );
    let pool = hybridsync::db::open(dir.path()).await.unwrap();
    let month_ago = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    sqlx::query("UPDATE agent_event SET at = ? WHERE agent_event_id <= ?")
        .bind((month_ago.unix_timestamp_nanos() / 1_000_000) as i64)
        .bind(recorded[1].0)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let (console, _api) = reopen(dir, &api, &["--event-retention", "30d"]);
    let kept = wait_for(
        "the month-old events deleted",
        Duration::from_secs(15),
        || async {
            let now = events(console.dir.path()).await;
            (now.len() < recorded.len()).then_some(now)
        },
    )
    .await;
    assert_eq!(kept, recorded[2..], "only the two old events go");
    drop(console);

    let refused = Command::new(bin())
        .args(["serve", "--event-retention", "30m"])
        .output()
        .expect("run serve");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("\"30m\" is too short: keep events at least 1h"),
        "{stderr}"
    );
}
