//! Health across servers: heartbeats from real agent processes, the console's polls, an agent killed
//! and seen unhealthy then inactive, deletion, a failing check, state kept across a restart.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn agents_are_polled_then_a_killed_one_turns_unhealthy_inactive_and_is_deleted() {
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(3);
    let mut agents: Vec<Agent> = ["app01", "app02", "app03"]
        .iter()
        .map(|n| Agent::install(&console, &token, n))
        .collect();
    for a in &mut agents {
        a.start("1s");
    }
    for a in &agents {
        let body = wait_health(&api, &a.agent_id(), "healthy").await;
        assert_eq!(body["status"], "active");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            body["api_url"]
                .as_str()
                .unwrap()
                .starts_with("https://127.0.0.1:"),
            "{body}"
        );
        assert!(
            body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "data-dir"),
            "{body}"
        );
    }
    // The scheduled poll reached each agent's health endpoint.
    let polled = wait_for("a scheduled poll", Duration::from_secs(10), || async {
        api.agent(&agents[0].agent_id())
            .await
            .filter(|a| a["last_poll_at"].is_string() && a["last_poll_error"].is_null())
    })
    .await;
    assert_eq!(polled["health"], "healthy");
    // Check now, on demand.
    let (status, check) = api
        .send(
            reqwest::Method::POST,
            &format!("/agents/{}/check", agents[1].agent_id()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["ok"], true, "{check}");

    // Kill one agent: unhealthy with a reason, then inactive.
    let victim = agents[0].agent_id();
    agents[0].kill();
    let sick = wait_health(&api, &victim, "unhealthy").await;
    let reason = sick["health_reason"].as_str().unwrap();
    assert!(
        reason.contains("connection refused") || reason.contains("no heartbeat for 3 intervals"),
        "unexpected reason: {reason}"
    );
    let sick = wait_for(
        "the no-heartbeat reason",
        Duration::from_secs(20),
        || async {
            api.agent(&victim).await.filter(|a| {
                a["health_reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("no heartbeat for 3 intervals")
            })
        },
    )
    .await;
    assert!(sick["health_since"].is_string());
    wait_for(
        "the agent to go inactive",
        Duration::from_secs(30),
        || async {
            api.agent(&victim)
                .await
                .filter(|a| a["status"] == "inactive")
        },
    )
    .await;
    // The others are unaffected.
    for a in &agents[1..] {
        assert_eq!(api.agent(&a.agent_id()).await.unwrap()["health"], "healthy");
    }
    // The filters see it.
    let (_, inactive) = api.get("/agents?status=inactive").await;
    assert_eq!(inactive["total"], 1);
    assert_eq!(inactive["items"][0]["id"], victim.as_str());
    let (_, unhealthy) = api.get("/agents?status=all&health=unhealthy").await;
    assert_eq!(unhealthy["total"], 1);

    // The timeline on the agent's page shows the transitions.
    let browser = Browser::new(&console);
    assert_eq!(browser.sign_in(READER, PASSWORD).await, 303);
    let (status, page) = browser.get(&format!("/agents/{victim}")).await;
    assert_eq!(status, 200);
    let timeline = texts(&page, "#timeline tbody tr").join("\n");
    assert!(
        timeline.contains("healthy → unhealthy") || timeline.contains("degraded → unhealthy"),
        "{timeline}"
    );
    assert!(timeline.contains("active → inactive"), "{timeline}");
    assert!(timeline.contains("enrolled"), "{timeline}");

    // A reader may not delete; an active agent needs force; an inactive one goes.
    let reader = Api::new(&console, READER);
    let (status, body) = reader
        .send(reqwest::Method::DELETE, &format!("/agents/{victim}"), None)
        .await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Global Reader"),
        "{body}"
    );
    let hia = Api::new(&console, HIA);
    let (status, body) = hia
        .send(
            reqwest::Method::DELETE,
            &format!("/agents/{}", agents[1].agent_id()),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "agent_active");
    let (status, _) = hia
        .send(reqwest::Method::DELETE, &format!("/agents/{victim}"), None)
        .await;
    assert_eq!(status, 204);
    assert!(api.agent(&victim).await.is_none());
    let (_, audit) = api.get("/audit-log").await;
    let delete = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "agent.delete")
        .expect("audited");
    assert_eq!(delete["actor"], HIA);
    assert_eq!(delete["target_id"], victim.as_str());
    assert_eq!(delete["before"]["machine_name"], "app01");
}

#[tokio::test]
async fn a_failing_check_reported_by_the_agent_makes_it_unhealthy_with_that_reason() {
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "chk01");
    agent.start("1s");
    let id = agent.agent_id();
    wait_health(&api, &id, "healthy").await;
    std::fs::write(agent.dir.path().join("fail-check"), "disk is on fire\n").unwrap();
    let sick = wait_health(&api, &id, "unhealthy").await;
    assert_eq!(
        sick["health_reason"],
        "check simulated failing: disk is on fire"
    );
    std::fs::remove_file(agent.dir.path().join("fail-check")).unwrap();
    wait_health(&api, &id, "healthy").await;
}

#[tokio::test]
async fn heartbeat_state_is_kept_across_a_graceful_restart() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "persist01");
    agent.start("1s");
    let id = agent.agent_id();
    wait_health(&api, &id, "healthy").await;
    agent.kill();
    let before = api.agent(&id).await.unwrap();
    let (status, dir) = console.stop();
    assert!(status.success(), "graceful shutdown must exit 0");

    let console = Console::start_in(dir, &[]);
    let api = Api {
        base: format!("{}/api/v1", console.url),
        ..api
    };
    let after = api
        .agent(&id)
        .await
        .expect("agent still known after restart");
    assert_eq!(
        after["last_heartbeat_at"], before["last_heartbeat_at"],
        "last heartbeat lost at shutdown"
    );
    assert_eq!(after["uptime_seconds"], before["uptime_seconds"]);
    assert_eq!(after["machine_name"], "persist01");
}

#[tokio::test]
async fn agent_endpoints_refuse_unknown_credentials_and_bad_json() {
    let console = Console::start(&[]);
    let http = reqwest::Client::new();
    let url = format!("{}/agent-api/v1/heartbeat", console.url);
    let r = http
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth("hsac_unknown")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let enroll = format!("{}/agent-api/v1/enroll", console.url);
    let r = http
        .post(&enroll)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    let huge = format!("{{\"enrollment_token\":\"{}\"}}", "x".repeat(200_000));
    let r = http
        .post(&enroll)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn an_agent_keeps_running_while_the_console_is_down_and_comes_back_by_itself() {
    let console = Console::start(&[]);
    let address = console.url.trim_start_matches("http://").to_string();
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "retry01");
    agent.start("1s");
    let id = agent.agent_id();
    wait_health(&api, &id, "healthy").await;

    // The console goes away for a few seconds; the agent process must survive it.
    let (status, dir) = console.stop();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still_running = agent.child.as_mut().unwrap().try_wait().unwrap();
    assert!(
        still_running.is_none(),
        "the agent exited while the console was down: {still_running:?}"
    );

    // Back on the same address: the agent's retries (backoff with jitter) reach it again.
    let console = Console::start_in(dir, &["--listen", &address]);
    let api = Api {
        base: format!("{}/api/v1", console.url),
        ..api
    };
    let restarted_at = time::OffsetDateTime::now_utc();
    let heartbeat_after_restart = |a: &serde_json::Value| {
        a["last_heartbeat_at"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_some_and(|t| t >= restarted_at)
    };
    wait_for(
        "a heartbeat after the restart",
        Duration::from_secs(30),
        || async { api.agent(&id).await.filter(heartbeat_after_restart) },
    )
    .await;
    wait_health(&api, &id, "healthy").await;
}

#[tokio::test]
async fn an_agents_domains_are_kept_across_a_console_restart() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let agent = Agent::install(&console, &console.enrollment_token(1), "dom01");
    let id = agent.agent_id();
    let credential: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.path().join("credential.json")).unwrap(),
    )
    .unwrap();
    let report = serde_json::json!({"domains": [{
        "domain": "corp.example.test", "dialect": "openldap", "base_dn": "dc=corp,dc=example,dc=test",
        "ldap_url": "ldap://127.0.0.1:3890", "service_account": "provAgentSvc"
    }]});
    let r = reqwest::Client::new()
        .post(format!("{}/agent-api/v1/domains", console.url))
        .bearer_auth(credential["agent_credential"].as_str().unwrap())
        .json(&report)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        api.agent(&id).await.unwrap()["domains"],
        serde_json::json!(["corp.example.test"])
    );

    let (_, dir) = console.stop();
    let console = Console::start_in(dir, &[]);
    let api = Api {
        base: format!("{}/api/v1", console.url),
        ..api
    };
    assert_eq!(
        api.agent(&id).await.unwrap()["domains"],
        serde_json::json!(["corp.example.test"]),
        "domains must survive a restart of the console"
    );
}

/// A real agent sends each heartbeat on a connection of its own and closes it after the answer, so
/// the console holds nothing for it between heartbeats (at 100,000 agents, kept connections would
/// be 100,000 file descriptors and about 1.5 GiB). The heartbeat interval is longer than the
/// console's idle timeout: a connection the agent kept would be closed by the console, and counted.
#[tokio::test]
async fn an_agent_holds_no_connection_to_the_console_between_heartbeats() {
    let console = Console::start(&["--idle-timeout", "3s"]);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "conn01");
    agent.start("4s");
    // A client that keeps no connection, so the scrapes do not count themselves as idle.
    let scraper = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let api = Api::new(&console, ADMIN);
    let scrapes = std::sync::atomic::AtomicU32::new(0);
    let scrape = || async {
        scrapes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        scraper
            .get(format!("{}/metrics", console.url))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let text = wait_for("three heartbeats", Duration::from_secs(40), || async {
        let text = scrape().await;
        (value(&text, "hybridsync_heartbeats_received_total") >= Some(3.0)).then_some(text)
    })
    .await;
    let heartbeats = value(&text, "hybridsync_heartbeats_received_total").unwrap();
    let accepted = value(&text, "hybridsync_http_connections_accepted_total").unwrap();
    let scrapes = f64::from(scrapes.into_inner());
    assert!(
        accepted >= heartbeats + scrapes,
        "{heartbeats} heartbeats and {scrapes} scrapes came on {accepted} connections"
    );
    assert_eq!(
        value(&text, "hybridsync_http_connections_closed_idle_total"),
        Some(0.0),
        "the console had to close a connection the agent left idle"
    );
}
