//! The console's health polls: `GET /v1/health` on each active agent, with bounded concurrency, a
//! per-call timeout and one shared connection pool (so scheduled rounds reuse connections).

use super::{Fleet, Status};
use crate::db;
use crate::protocol::{AgentHealth, AGENT_API};
use futures::StreamExt;
use std::sync::atomic::Ordering::Relaxed;

/// The outcome of one poll, as shown by "Check now".
#[derive(Debug, Clone)]
pub struct PollOutcome {
    pub ok: bool,
    pub message: String,
}

impl Fleet {
    /// Polls every active agent that told us its address.
    pub async fn poll_all(&self) {
        let targets: Vec<String> = {
            let inner = self.read();
            inner
                .agents
                .values()
                .filter(|a| a.status == Status::Active && a.listen_addr.is_some())
                .map(|a| a.id.clone())
                .collect()
        };
        let started = std::time::Instant::now();
        let count = targets.len();
        futures::stream::iter(targets)
            .for_each_concurrent(self.config.poll_concurrency.max(1), |id| async move {
                self.poll_one(&id).await;
            })
            .await;
        self.metrics.poll_rounds.fetch_add(1, Relaxed);
        self.metrics.poll_round_duration.observe(started.elapsed());
        tracing::debug!(
            agents = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "health poll round done"
        );
    }

    /// Polls one agent now and applies the result. None when the agent does not exist.
    pub async fn poll_one(&self, agent_id: &str) -> Option<PollOutcome> {
        let (url, token) = {
            let inner = self.read();
            let agent = inner.agents.get(agent_id)?;
            (agent.api_base_url(), self.console_token_for(agent))
        };
        let started = std::time::Instant::now();
        let result = match url {
            None => {
                Err("the agent has not reported its API address yet (no heartbeat)".to_string())
            }
            Some(base) => {
                self.fetch_health(&format!("{base}{AGENT_API}/health"), &token)
                    .await
            }
        };
        let (count, latency) = if result.is_ok() {
            (&self.metrics.polls_ok, &self.metrics.poll_latency_ok)
        } else {
            (
                &self.metrics.polls_failed,
                &self.metrics.poll_latency_failed,
            )
        };
        count.fetch_add(1, Relaxed);
        latency.observe(started.elapsed());
        let now = db::now_ms();
        let mut inner = self.write();
        let agent = inner.agents.get_mut(agent_id)?;
        agent.last_poll_at = Some(now);
        let outcome = match result {
            Ok(health) => {
                agent.last_poll_error = None;
                agent.last_contact_at = now;
                agent.checks = health.checks.into_iter().take(32).collect();
                agent.uptime_seconds = i64::try_from(health.uptime_seconds).ok();
                PollOutcome {
                    ok: true,
                    message: "health endpoint answered".into(),
                }
            }
            Err(message) => {
                agent.last_poll_error = Some(message.clone());
                PollOutcome {
                    ok: false,
                    message: format!("health endpoint unreachable: {message}"),
                }
            }
        };
        inner.dirty.insert(agent_id.to_string());
        inner.reevaluate(
            agent_id,
            &self.config.thresholds,
            now,
            Some("health poll answered"),
        );
        Some(outcome)
    }

    async fn fetch_health(&self, url: &str, token: &str) -> Result<AgentHealth, String> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| describe(&e, self.config.poll_timeout))?;
        match response.status().as_u16() {
            200 => response
                .json::<AgentHealth>()
                .await
                .map_err(|e| format!("invalid health response: {}", innermost(&e))),
            401 => {
                Err("the agent refused the console's credential (401); re-install the agent".into())
            }
            code => Err(format!("the agent answered HTTP {code}")),
        }
    }
}

/// A short cause for a failed request: "connection refused", "timed out after 5s", …
fn describe(err: &reqwest::Error, timeout: std::time::Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        source = e.source();
    }
    innermost(err)
}

fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
