//! The console's health polls: `GET /v1/health` on each active agent, with bounded concurrency, a
//! per-call timeout and one shared connection pool. Each poll is an [`Fleet::agent_request`]:
//! HTTPS to the certificate the agent's enrollment pinned.
//!
//! Connections kept open between rounds save a TLS handshake per agent and round (a round over
//! 10,000 agents on reused connections takes a sixth of the time), but each idle connection holds
//! about 27 KiB of buffers and TLS state in the console: kept for 100,000 agents that is 2.6 GiB,
//! forty times the whole fleet's state. So only the first `--poll-keepalive` agents of a round keep
//! their connection; the others are polled with `Connection: close`, and nothing of theirs stays
//! in memory between rounds.
//!
//! Rounds start every `--poll-interval`, or later after a long round ([`PollPace`]).

use super::call::{self, describe_error, innermost};
use super::{Change, Fleet, QueuedEvent, Status};
use crate::db;
use crate::protocol::AgentHealth;
use futures::StreamExt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// After a round that took `t`, the next one waits at least `REST_PER_ROUND × t`: polls then take at
/// most a quarter of the console's time, whatever the fleet's size and `--poll-interval`. On two
/// cores a round on new connections takes about 6 s per 10,000 agents (1.2 cores), so about a
/// minute at 100,000, the default interval: without this the console would poll without a pause,
/// and heartbeats and pages would share what is left.
const REST_PER_ROUND: u32 = 3;

/// When poll rounds start: every `--poll-interval`, unless the last round was long.
#[derive(Debug)]
pub(super) struct PollPace {
    interval: Duration,
    /// The last round pushed the next one past its interval.
    stretched: bool,
}

/// What the end of a round decides.
#[derive(Debug, PartialEq)]
pub(super) struct NextRound {
    pub at: Instant,
    /// Later than `--poll-interval` after the round's start.
    pub held: bool,
    /// For the log, once when rounds start being held back (not every round).
    pub advice: Option<String>,
}

impl PollPace {
    pub(super) fn new(interval: Duration) -> PollPace {
        PollPace {
            interval,
            stretched: false,
        }
    }

    /// The round that started at `started` ended at `ended`: when the next one starts.
    pub(super) fn round_ended(&mut self, started: Instant, ended: Instant) -> NextRound {
        let took = ended.saturating_duration_since(started);
        let rested = ended + took * REST_PER_ROUND;
        let on_schedule = started + self.interval;
        let held = rested > on_schedule;
        let was_stretched = std::mem::replace(&mut self.stretched, held);
        let advice = (held && !was_stretched).then(|| {
            let took = Duration::from_millis(took.as_millis() as u64);
            // Whole seconds, rounded up, for the flag.
            let enough = Duration::from_secs(
                (took * (REST_PER_ROUND + 1)).as_millis().div_ceil(1000) as u64,
            );
            format!(
                "a health poll round took {}, so the next one starts {} after it ends, later than \
                 --poll-interval {} after its start: polls take at most a quarter of the console's \
                 time. To poll on schedule, raise --poll-interval to {} or more",
                humantime::format_duration(took),
                humantime::format_duration(took * REST_PER_ROUND),
                humantime::format_duration(self.interval),
                humantime::format_duration(enough),
            )
        });
        NextRound {
            at: rested.max(on_schedule),
            held,
            advice,
        }
    }
}

/// The outcome of one poll, as shown by "Check now".
#[derive(Debug, Clone)]
pub struct PollOutcome {
    pub ok: bool,
    pub message: String,
}

impl Fleet {
    /// Polls every active agent that told us its address, at most `--poll-concurrency` at a time.
    /// (One task drives them: a task per poll measured slower on reused connections, the writer
    /// lock being taken from both cores.)
    pub async fn poll_all(&self) {
        let targets: Vec<uuid::Uuid> = {
            let inner = self.read();
            inner
                .slots
                .iter()
                .filter(|(_, a)| a.status == Status::Active && a.listen_addr.is_some())
                .map(|(_, a)| a.id)
                .collect()
        };
        let started = std::time::Instant::now();
        let count = targets.len();
        let keep_alive = self.config.poll_keepalive;
        futures::stream::iter(targets.into_iter().enumerate())
            .for_each_concurrent(self.config.poll_concurrency.max(1), |(n, id)| async move {
                self.poll(&id, n < keep_alive).await;
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

    /// Polls one agent now ("Check now") and applies the result. None when the agent does not
    /// exist.
    pub async fn poll_one(&self, agent_id: &str) -> Option<PollOutcome> {
        self.poll(&uuid::Uuid::parse_str(agent_id).ok()?, true)
            .await
    }

    /// Polls one agent; `keep_alive` false closes the connection after the answer.
    async fn poll(&self, agent_id: &uuid::Uuid, keep_alive: bool) -> Option<PollOutcome> {
        self.read().slots.find(agent_id)?;
        let started = std::time::Instant::now();
        let result = match self.request_to(agent_id, reqwest::Method::GET, "/health") {
            Ok(request) if keep_alive => self.fetch_health(request).await,
            Ok(request) => {
                self.fetch_health(request.header(reqwest::header::CONNECTION, "close"))
                    .await
            }
            Err(message) => Err(message),
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
        let mut guard = self.write();
        let inner = &mut *guard;
        let idx = inner.slots.find(agent_id)?;
        let agent = inner.slots.get_mut(idx)?;
        agent.last_poll_at = now.into();
        // A poll that only moves timestamps takes the cheap write path, as a heartbeat does.
        let mut changed = false;
        let outcome = match result {
            Ok(health) => {
                changed |= agent.last_poll_error.take().is_some();
                agent.last_contact_at = now;
                let checks: Vec<_> = health.checks.into_iter().take(32).collect();
                if *agent.checks != *checks {
                    agent.checks = inner.pools.checks.intern(&checks);
                    changed = true;
                }
                agent.uptime_seconds = i64::try_from(health.uptime_seconds).ok().into();
                PollOutcome {
                    ok: true,
                    message: "health endpoint answered".into(),
                }
            }
            Err(message) => {
                if message == call::PIN_MISMATCH
                    && agent.last_poll_error.as_deref() != Some(call::PIN_MISMATCH)
                {
                    // Into the timeline even when the agent was unhealthy already for another
                    // reason, so the refusal is on record where administrators look.
                    inner.queues.events.push(QueuedEvent {
                        agent_id: agent.id,
                        at: now,
                        reason: inner.pools.texts.intern(&message),
                        change: Change::CertificateRefused,
                    });
                }
                changed |= agent.last_poll_error.as_deref() != Some(message.as_str());
                agent.last_poll_error = Some(inner.pools.texts.intern(&message));
                PollOutcome {
                    ok: false,
                    message: format!("health endpoint unreachable: {message}"),
                }
            }
        };
        if changed {
            inner.queues.mark_dirty(idx, agent);
        } else {
            inner.queues.mark_beating(idx, agent);
        }
        inner.reevaluate(
            idx,
            &self.config.thresholds,
            now,
            Some("health poll answered"),
        );
        Some(outcome)
    }

    async fn fetch_health(&self, request: reqwest::RequestBuilder) -> Result<AgentHealth, String> {
        let response = request
            .send()
            .await
            .map_err(|e| describe_error(&e, self.config.poll_timeout))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn rounds_start_every_interval_unless_a_long_one_needs_its_rest() {
        let mut pace = PollPace::new(MINUTE);
        let t0 = Instant::now();
        // A short round: the next one a minute after this one's start.
        let next = pace.round_ended(t0, t0 + Duration::from_secs(2));
        assert_eq!(
            next,
            NextRound {
                at: t0 + MINUTE,
                held: false,
                advice: None
            }
        );
        // 20 s of polling: 60 s of rest after it, so 80 s after its start.
        let t1 = t0 + MINUTE;
        let next = pace.round_ended(t1, t1 + Duration::from_secs(20));
        assert_eq!(next.at, t1 + Duration::from_secs(80));
        assert!(next.held);
        let advice = next.advice.expect("the first held round explains itself");
        assert!(
            advice.contains("took 20s") && advice.contains("raise --poll-interval to 1m 20s"),
            "{advice}"
        );
        // Held again: said once, not every round.
        let t2 = next.at;
        let next = pace.round_ended(t2, t2 + Duration::from_secs(90));
        assert_eq!(next.at, t2 + Duration::from_secs(90 + 270));
        assert!(next.held);
        assert_eq!(next.advice, None);
        // Exactly a quarter of the interval is on schedule; back on it, a later long round
        // explains itself again.
        let t3 = next.at;
        let next = pace.round_ended(t3, t3 + Duration::from_secs(15));
        assert_eq!((next.at, next.held), (t3 + MINUTE, false));
        let t4 = next.at;
        let next = pace.round_ended(t4, t4 + Duration::from_millis(15_001));
        assert!(next.held);
        let advice = next.advice.expect("held again after a round on schedule");
        assert!(
            advice.contains("took 15s 1ms, so the next one starts 45s 3ms after it ends")
                && advice.contains("raise --poll-interval to 1m 1s"),
            "{advice}"
        );
    }
}
