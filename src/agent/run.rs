//! `hybridsync agent run`: the agent service. Serves the agent API for the console and sends
//! heartbeats to the console until SIGINT or SIGTERM.

use super::api::{self, ApiState};
use super::backoff::Backoff;
use super::checks::SelfChecks;
use super::config::Agent;
use super::console::Console;
use super::directory;
use super::sync::{SyncShared, Syncer};
use crate::cli::AgentRunArgs;
use crate::protocol::{Heartbeat, VERSION};
use anyhow::{bail, Context, Result};
use futures::FutureExt;
use reqwest::StatusCode;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

/// How often the running agent looks for directories added or removed.
const DIRECTORY_RESCAN: Duration = Duration::from_secs(1);
/// How long in-flight requests may take to finish once a stop is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: AgentRunArgs) -> Result<()> {
    if args.heartbeat_interval.is_zero() {
        bail!("--heartbeat-interval must be greater than zero");
    }
    // Installed first, so a signal that arrives during start-up still means a clean stop.
    let shutdown = shutdown_signal()?.shared();
    let Agent { config, credential } = Agent::load(&args.data_dir)?;
    let console = Console::for_data_dir(&config.console_url, &args.data_dir)?;
    // Read before binding: a missing or damaged key pair stops the agent with a way out.
    let tls = super::config::tls_server_config(&args.data_dir)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen_addr = listener
        .local_addr()
        .context("cannot read the agent API's bound address")?;
    // HTTPS only, with the certificate the console pinned at enrollment.
    let listener = crate::console::tls::TlsListener::new(listener, tls)
        .context("cannot serve the agent API over TLS")?;
    info!(
        "agent {} serving its API over TLS on {listen_addr}",
        config.agent_id
    );

    let started = Instant::now();
    let checks = Arc::new(SelfChecks::new(args.data_dir.clone(), listen_addr));
    let sync = Arc::new(SyncShared::new(
        args.data_dir.clone(),
        args.enforce_fips_policy,
    ));
    let api = api::router(ApiState {
        agent_id: config.agent_id.clone(),
        console_token_sha256: credential.console_token_sha256,
        started,
        checks: Arc::clone(&checks),
        sync: Arc::clone(&sync),
    });
    let syncer = Syncer {
        console: console.clone(),
        agent_credential: credential.agent_credential.clone(),
        poll: args.heartbeat_interval,
        shared: sync,
    };
    let heartbeats = Heartbeats {
        console,
        agent_credential: credential.agent_credential,
        agent_id: config.agent_id,
        machine_name: config.machine_name,
        interval: args.heartbeat_interval,
        started,
        listen_addr,
        checks,
        data_dir: args.data_dir,
    };

    tokio::select! {
        served = axum::serve(listener, api).with_graceful_shutdown(shutdown.clone()) => {
            served.context("the agent API server failed")
        }
        // Never ends: the loop stops when the server has shut down.
        () = heartbeats.run() => Ok(()),
        // Never ends either: leases and cycles of the connected directories.
        () = syncer.run() => Ok(()),
        // A client stalled halfway through a request would hold the graceful shutdown forever,
        // and a service manager expects a stop to be prompt.
        () = async { shutdown.await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!("connections still open after {SHUTDOWN_GRACE:?}, stopping anyway");
            Ok(())
        }
    }
}

fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!("{name} received, shutting down");
    })
}

struct Heartbeats {
    console: Console,
    agent_credential: String,
    agent_id: String,
    machine_name: String,
    interval: Duration,
    started: Instant,
    listen_addr: SocketAddr,
    checks: Arc<SelfChecks>,
    data_dir: PathBuf,
}

impl Heartbeats {
    /// The first heartbeat goes out at once, so the console sees a new agent without waiting an
    /// interval.
    async fn run(self) {
        let mut backoff = Backoff::new(self.interval);
        loop {
            let seen = directory::fingerprint(&self.data_dir);
            let delay = self.beat(&mut backoff).await;
            let next = tokio::time::sleep(delay);
            tokio::pin!(next);
            // Between beats, look at `directories/` every second: a directory added or removed
            // (by `agent add-directory` while this agent runs) is reported at once, no restart.
            loop {
                tokio::select! {
                    () = &mut next => break,
                    () = tokio::time::sleep(DIRECTORY_RESCAN) => {
                        if directory::fingerprint(&self.data_dir) != seen {
                            info!("connected directories changed; reporting them now");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Sends one heartbeat and returns how long to wait before the next.
    async fn beat(&self, backoff: &mut Backoff) -> Duration {
        let heartbeat = Heartbeat {
            version: VERSION.to_owned(),
            machine_name: self.machine_name.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            heartbeat_interval_seconds: whole_seconds(self.interval),
            listen_addr: Some(self.listen_addr.to_string()),
            checks: self.checks.run().await,
            domains: super::directory::reported(&self.data_dir),
        };
        let result = self
            .console
            .heartbeat(&self.agent_credential, &heartbeat)
            .await;
        let healed = self
            .checks
            .record_heartbeat(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        match result {
            Ok(answer) => {
                backoff.reset();
                debug!(status = %answer.status, health = %answer.health, "heartbeat accepted");
                // This heartbeat still carried the failed `console` check: send the healed one now
                // rather than leave the console with stale news for a whole interval.
                if healed {
                    Duration::ZERO
                } else {
                    self.interval
                }
            }
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                error!(
                    "agent {} is not known to the console (deleted, or its credential was revoked): \
                     re-install it with `hybridsync agent install`; the console said: {e}",
                    self.agent_id
                );
                self.interval
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay(&mut rand::thread_rng());
                warn!("heartbeat failed, retrying in {delay:.1?}: {e}");
                delay
            }
            Err(e) => {
                warn!("heartbeat refused: {e}");
                self.interval
            }
        }
    }
}

/// Rounded up, so a sub-second test interval is not reported as 0, which would read as "never".
fn whole_seconds(interval: Duration) -> u64 {
    interval.as_secs() + u64::from(interval.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(200)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1_500)), 2);
    }
}
