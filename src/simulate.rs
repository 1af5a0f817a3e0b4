//! `hybridsync simulate`: many agents from one process, for benchmarks, demos and tests.
//!
//! It enrolls N agents through the batch enrollment endpoint, then sends each agent's heartbeat once
//! per interval, spread evenly over the interval, from a bounded number of workers sharing one
//! connection pool. One HTTPS listener answers the console's health polls for every simulated agent
//! (the console token tells which agent is asked); all agents share one self-signed certificate,
//! pinned for each at enrollment, as a real agent's is. Some agents can fail a check (`--failing`) or
//! flap (`--flapping`: silent and unreachable for 4 intervals, then back for 4).
//!
//! `hybridsync bench-baseline` is the reference it is measured against: a minimal axum JSON handler.

use crate::auth::tokens;
use crate::protocol::{
    AgentHealth, BatchEnrollRequest, BatchEnrollResponse, CheckStatus, Environment, Extension,
    HealthCheck, Heartbeat, AGENT_API, CONSOLE_AGENT_API, VERSION,
};
use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The console's URL.
    #[arg(long)]
    pub console: String,
    /// An enrollment token with at least --agents uses (not needed with --no-enroll).
    #[arg(long, env = "HYBRIDSYNC_ENROLLMENT_TOKEN", default_value = "")]
    pub enrollment_token: String,
    /// How many agents to simulate.
    #[arg(long)]
    pub agents: usize,
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Where the simulated agents' health endpoint listens (HTTPS).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Agents (the first ones) that report a failing check.
    #[arg(long, default_value_t = 0)]
    pub failing: usize,
    /// Agents (after the failing ones) that go silent for 4 intervals, then come back for 4.
    #[arg(long, default_value_t = 0)]
    pub flapping: usize,
    /// Heartbeats in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = crate::cli::parse_duration)]
    pub duration: Option<Duration>,
    /// Seconds between progress lines.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub report_every: Duration,
    /// Machine name prefix.
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// Send heartbeats with made-up credentials, without enrolling (to measure bench-baseline).
    #[arg(long)]
    pub no_enroll: bool,
    /// Write `credential<TAB>machine name` per agent to this file (mode 0600), for an external load
    /// generator such as wrk (tests/bench/heartbeat.lua).
    #[arg(long)]
    pub credentials_out: Option<std::path::PathBuf>,
    /// Enroll (and write --credentials-out), then exit without sending heartbeats.
    #[arg(long)]
    pub enroll_only: bool,
}

struct SimAgent {
    id: String,
    credential: String,
    machine_name: String,
}

/// What the health listener knows: console token digest → agent index.
struct Shared {
    by_console_token: HashMap<Vec<u8>, usize>,
    agent_ids: Vec<String>,
    failing: usize,
    flapping: usize,
    started: Instant,
    interval: Duration,
    polls_answered: AtomicU64,
}

impl Shared {
    fn is_down(&self, index: usize) -> bool {
        is_flapping_down(
            index,
            self.failing,
            self.flapping,
            self.started.elapsed(),
            self.interval,
        )
    }
}

/// Flapping agents are up for 4 intervals, then down for 4.
fn is_flapping_down(
    index: usize,
    failing: usize,
    flapping: usize,
    elapsed: Duration,
    interval: Duration,
) -> bool {
    if index < failing || index >= failing + flapping {
        return false;
    }
    let period = (elapsed.as_secs_f64() / interval.as_secs_f64().max(0.001)) as u64;
    (period / 4) % 2 == 1
}

fn checks_for(index: usize, failing: usize) -> Vec<HealthCheck> {
    let mut checks = vec![HealthCheck {
        name: "console".into(),
        status: CheckStatus::Pass,
        message: "heartbeats accepted".into(),
    }];
    if index < failing {
        checks.push(HealthCheck {
            name: "simulated".into(),
            status: CheckStatus::Fail,
            message: "simulated failure".into(),
        });
    }
    checks
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.failing + args.flapping > args.agents {
        bail!("--failing plus --flapping cannot exceed --agents");
    }
    let console = args.console.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        // Shorter than the console's --idle-timeout, as the real agent's: the simulator closes an
        // idle connection before the console does, so no heartbeat goes out on one being closed.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()?;
    let names: Vec<String> = (0..args.agents)
        .map(|i| format!("{}-{i:06}", args.name_prefix))
        .collect();

    // Listener first: the console may poll as soon as the first heartbeat names the address.
    let tls = crate::console::tls::SelfSigned::generate("simulated-agent.hybridsync.invalid")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen_addr = listener.local_addr()?;

    let started_enroll = Instant::now();
    let (agents, shared) = if args.no_enroll {
        let agents = names
            .into_iter()
            .enumerate()
            .map(|(i, machine_name)| SimAgent {
                id: format!("unenrolled-{i}"),
                credential: tokens::generate("hsac_"),
                machine_name,
            })
            .collect::<Vec<_>>();
        (agents, HashMap::new())
    } else {
        enroll_all(
            &http,
            &console,
            &args.enrollment_token,
            &tls.sha256_hex(),
            names,
        )
        .await?
    };
    println!(
        "enrolled {} agents in {:.1?}; health endpoint on {listen_addr}",
        agents.len(),
        started_enroll.elapsed()
    );
    if let Some(path) = &args.credentials_out {
        write_credentials(path, &agents)?;
    }
    if args.enroll_only {
        return Ok(());
    }
    let shared = Arc::new(Shared {
        agent_ids: agents.iter().map(|a| a.id.clone()).collect(),
        by_console_token: shared,
        failing: args.failing,
        flapping: args.flapping,
        started: Instant::now(),
        interval: args.heartbeat_interval,
        polls_answered: AtomicU64::new(0),
    });
    let app = Router::new()
        .route(&format!("{AGENT_API}/health"), get(health))
        .with_state(shared.clone());
    let listener = crate::console::tls::TlsListener::new(listener, tls.server_config()?)?;
    let handshakes = listener.handshakes();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let agents = Arc::new(agents);
    let stats = Arc::new(Stats::default());
    let url = format!("{console}{CONSOLE_AGENT_API}/heartbeat");
    let workers = args.concurrency.clamp(1, args.agents);
    let spacing = args.heartbeat_interval.as_secs_f64() / args.agents as f64;
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (agents, stats, http, url, shared) = (
            agents.clone(),
            stats.clone(),
            http.clone(),
            url.clone(),
            shared.clone(),
        );
        let interval = args.heartbeat_interval;
        let listen = listen_addr.to_string();
        handles.push(tokio::spawn(async move {
            let mut cycle: u32 = 0;
            loop {
                for index in (worker..agents.len()).step_by(workers) {
                    let due =
                        start + interval * cycle + Duration::from_secs_f64(spacing * index as f64);
                    tokio::time::sleep_until(due).await;
                    if shared.is_down(index) {
                        continue;
                    }
                    let agent = &agents[index];
                    let beat = Heartbeat {
                        version: VERSION.into(),
                        machine_name: agent.machine_name.clone(),
                        uptime_seconds: shared.started.elapsed().as_secs(),
                        heartbeat_interval_seconds: interval.as_secs().max(1),
                        listen_addr: Some(listen.clone()),
                        checks: checks_for(index, shared.failing),
                        domains: Vec::new(),
                    };
                    let sent = Instant::now();
                    let ok = matches!(
                        http.post(&url).bearer_auth(&agent.credential).json(&beat).send().await,
                        Ok(r) if r.status().is_success()
                    );
                    stats.record(ok, sent.elapsed());
                }
                cycle += 1;
            }
        }));
    }

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut report = tokio::time::interval(args.report_every);
    report.tick().await;
    let mut total = Summary::default();
    loop {
        tokio::select! {
            _ = report.tick() => {
                let window = stats.take();
                window.print(args.report_every, &shared.polls_answered, &handshakes);
                total.merge(window);
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for h in handles {
        h.abort();
    }
    server.abort();
    total.merge(stats.take());
    println!("total:");
    total.print(start.elapsed(), &shared.polls_answered, &handshakes);
    Ok(())
}

fn write_credentials(path: &std::path::Path, agents: &[SimAgent]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for agent in agents {
        writeln!(out, "{}\t{}", agent.credential, agent.machine_name)?;
    }
    out.flush()?;
    Ok(())
}

async fn enroll_all(
    http: &reqwest::Client,
    console: &str,
    token: &str,
    tls_cert_sha256: &str,
    names: Vec<String>,
) -> anyhow::Result<(Vec<SimAgent>, HashMap<Vec<u8>, usize>)> {
    if token.is_empty() {
        bail!("--enrollment-token is required (create one with --max-uses at least --agents)");
    }
    let mut agents = Vec::with_capacity(names.len());
    let mut by_token = HashMap::with_capacity(names.len());
    for chunk in names.chunks(crate::fleet::batch::MAX_BATCH) {
        let request = BatchEnrollRequest {
            enrollment_token: token.to_string(),
            machine_names: chunk.to_vec(),
            extension: Extension::CloudSync,
            environment: Environment::Public,
            version: VERSION.into(),
            tls_cert_sha256: Some(tls_cert_sha256.to_string()),
        };
        let response = http
            .post(format!("{console}{CONSOLE_AGENT_API}/enroll-batch"))
            .json(&request)
            .send()
            .await
            .with_context(|| format!("cannot reach the console at {console}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("batch enrollment refused ({status}): {body}");
        }
        let body: BatchEnrollResponse = response.json().await?;
        for (enrolled, name) in body.agents.into_iter().zip(chunk) {
            by_token.insert(tokens::digest(&enrolled.console_token), agents.len());
            agents.push(SimAgent {
                id: enrolled.agent_id,
                credential: enrolled.agent_credential,
                machine_name: name.clone(),
            });
        }
    }
    Ok((agents, by_token))
}

async fn health(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> axum::response::Response {
    let index = crate::web::session::bearer(&headers)
        .and_then(|t| shared.by_console_token.get(&tokens::digest(t)).copied());
    let Some(index) = index else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if shared.is_down(index) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    shared.polls_answered.fetch_add(1, Relaxed);
    Json(AgentHealth {
        agent_id: shared.agent_ids.get(index).cloned().unwrap_or_default(),
        version: VERSION.into(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        checks: checks_for(index, shared.failing),
    })
    .into_response()
}

#[derive(Default)]
struct Stats {
    window: Mutex<Summary>,
}

impl Stats {
    fn record(&self, ok: bool, latency: Duration) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            w.ok += 1;
        } else {
            w.failed += 1;
        }
        w.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }
    fn take(&self) -> Summary {
        std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Default)]
struct Summary {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latencies_us.extend(other.latencies_us);
    }

    /// One report line; the health endpoint's counters are totals since the start.
    fn print(&self, over: Duration, polls: &AtomicU64, handshakes: &AtomicU64) {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
            f64::from(sorted[i]) / 1000.0
        };
        println!(
            "heartbeats ok={} failed={} rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms health-polls-answered={} tls-handshakes={}",
            self.ok,
            self.failed,
            (self.ok + self.failed) as f64 / over.as_secs_f64().max(0.001),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            polls.load(Relaxed),
            handshakes.load(Relaxed),
        );
    }
}

/// `hybridsync bench-baseline`: the reference handler BENCHMARKS.md compares against. It parses the
/// same heartbeat JSON and answers a small JSON body, with no authentication and no state.
pub async fn baseline(listen: SocketAddr) -> anyhow::Result<()> {
    async fn beat(Json(hb): Json<Heartbeat>) -> impl IntoResponse {
        Json(
            serde_json::json!({ "agent_id": hb.machine_name, "status": "active", "health": "healthy" }),
        )
    }
    let app = Router::new().route(&format!("{CONSOLE_AGENT_API}/heartbeat"), post(beat));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::console::shutdown_signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flapping_agents_go_down_and_they_alternate_every_four_intervals() {
        let i = Duration::from_secs(1);
        assert!(
            !is_flapping_down(0, 1, 2, Duration::from_secs(5), i),
            "failing agents do not flap"
        );
        assert!(
            !is_flapping_down(3, 1, 2, Duration::from_secs(5), i),
            "steady agents do not flap"
        );
        assert!(!is_flapping_down(1, 1, 2, Duration::from_secs(2), i));
        assert!(is_flapping_down(1, 1, 2, Duration::from_secs(5), i));
        assert!(!is_flapping_down(2, 1, 2, Duration::from_secs(9), i));
        assert_eq!(checks_for(0, 1).len(), 2);
        assert_eq!(checks_for(1, 1).len(), 1);
    }
}
