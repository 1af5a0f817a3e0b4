//! The console's calls to a domain's agents for synchronization: read one object now (Provision on
//! demand, checking scoping DNs) and wake the leader (Sync now). Agents are tried in order: the
//! domain's leader first, then healthy ones, then the rest; the first answer wins.

use crate::fleet::health::{Health, Status};
use crate::fleet::{call::describe_error, Agent, Fleet};
use crate::protocol::sync::{ReadRequest, ReadResponse, WakeRequest};
use std::time::Duration;

/// One attempt's deadline: a directory read is quick; a hung agent must not hold the page.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const WAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Active agents that report `domain`, the leader first, then by health.
pub fn agents_serving(fleet: &Fleet, domain: &str, leader: Option<&str>) -> Vec<Agent> {
    let mut serving = fleet.serving(domain, Some(Status::Active));
    serving.sort_by_key(|a| {
        (
            Some(a.id.as_str()) != leader,
            match a.health {
                Health::Healthy => 0,
                Health::Degraded => 1,
                Health::Unhealthy => 2,
            },
        )
    });
    serving
}

/// Reads one object through an agent of the domain. Err: why no agent could, per agent tried.
pub async fn read_object(
    fleet: &Fleet,
    leader: Option<&str>,
    request: &ReadRequest,
) -> Result<(ReadResponse, Agent), String> {
    let agents = agents_serving(fleet, &request.domain, leader);
    if agents.is_empty() {
        return Err(format!(
            "No active agent serves {}: start an agent that has this directory connected (`hybridsync agent add-directory`).",
            request.domain
        ));
    }
    let mut failures = Vec::new();
    for agent in agents {
        let builder = match fleet.agent_request(&agent.id, reqwest::Method::POST, "/sync/read") {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e}", agent.machine_name));
                continue;
            }
        };
        match builder.timeout(READ_TIMEOUT).json(request).send().await {
            Ok(resp) if resp.status().is_success() => match resp.json::<ReadResponse>().await {
                Ok(body) => return Ok((body, agent)),
                Err(e) => failures.push(format!(
                    "{}: the answer was not understood ({e})",
                    agent.machine_name
                )),
            },
            Ok(resp) => {
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                let message = body["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {status}"));
                // The directory itself answered (bad DN, no access): another agent would say the same.
                if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
                    return Err(format!(
                        "{} (through agent {})",
                        message, agent.machine_name
                    ));
                }
                failures.push(format!("{}: {message}", agent.machine_name));
            }
            Err(e) => failures.push(format!(
                "{}: {}",
                agent.machine_name,
                describe_error(&e, READ_TIMEOUT)
            )),
        }
    }
    Err(format!(
        "No agent of {} could read the directory: {}",
        request.domain,
        failures.join("; ")
    ))
}

/// Tells the leader to ask for its lease now (Sync now, Preview). Best effort: an agent that does
/// not answer still picks the cycle up at its next poll.
pub async fn wake(fleet: &Fleet, leader: Option<&str>, domain: &str) {
    let Some(agent) = agents_serving(fleet, domain, leader).into_iter().next() else {
        return;
    };
    let Ok(builder) = fleet.agent_request(&agent.id, reqwest::Method::POST, "/sync/wake") else {
        return;
    };
    let body = WakeRequest {
        domain: domain.to_owned(),
    };
    if let Err(e) = builder.timeout(WAKE_TIMEOUT).json(&body).send().await {
        tracing::debug!(agent = %agent.machine_name, "wake failed: {}", describe_error(&e, WAKE_TIMEOUT));
    }
}
