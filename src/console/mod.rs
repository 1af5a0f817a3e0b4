//! The console process: `hybridsync serve` and the `hybridsync admin …` commands.

pub mod accounts;
pub mod enrollment;
pub mod identity;
pub mod tls;

use crate::auth::tokens::{self, ConsoleKey};
use crate::auth::Role;
use crate::cli::{AdminCommand, ServeArgs};
use crate::fleet::health::Thresholds;
use crate::fleet::{Fleet, FleetConfig};
use crate::state::{AppParts, AppState, ConnectionMetrics, ConsoleSettings};
use crate::{db, web};
use anyhow::Context;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Builds the application state's parts from the data dir: database (migrated), console key, fleet.
/// `listening` is the bound address (the flag may say port 0).
pub async fn build_state(args: &ServeArgs, listening: SocketAddr) -> anyhow::Result<AppParts> {
    let started = std::time::Instant::now();
    let db = db::open(&args.data_dir).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database open"
    );
    let key = ConsoleKey::load_or_create(&args.data_dir)?;
    let config = FleetConfig {
        environment: args.environment,
        thresholds: Thresholds {
            unhealthy_after: args.unhealthy_after,
            inactive_after: args.inactive_after,
        },
        hide_inactive_after: args.hide_inactive_after,
        event_retention: args.event_retention,
        poll_interval: args.poll_interval,
        poll_timeout: args.poll_timeout,
        poll_concurrency: args.poll_concurrency,
        poll_keepalive: args.poll_keepalive,
        snapshot_file: Some(args.data_dir.join(crate::fleet::SNAPSHOT_FILE)),
    };
    let fleet = Arc::new(Fleet::load(db.clone(), key.clone(), config).await?);
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| {
            let scheme = if args.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listening}")
        })
        .trim_end_matches('/')
        .to_string();
    let setup_token = if db::accounts::count(&db).await? == 0 {
        Some(tokens::generate("setup_"))
    } else {
        None
    };
    Ok(AppParts {
        db,
        fleet,
        key,
        identity: Arc::new(identity::build(&args.identity, &public_url).await?),
        settings: Arc::new(ConsoleSettings {
            public_url,
            session_lifetime: args.identity.session_lifetime,
        }),
        setup_token: Arc::new(Mutex::new(setup_token)),
        sync_metrics: Default::default(),
        writeback_metrics: Default::default(),
        connections: Default::default(),
    })
}

/// `hybridsync serve`: runs until SIGINT or SIGTERM, then writes pending agent state and exits.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Read before binding, so a bad certificate stops `serve` before it announces anything.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    // `/healthz` answers from the first moment; the rest answers 503 until the fleet is loaded,
    // so liveness does not depend on the fleet's size.
    let gate = web::StartupGate::default();
    let app = web::gated_app(gate.clone());
    let (stop_server, server_stopped) = tokio::sync::watch::channel(false);
    let limits = connection_limits(&args);
    tracing::info!(
        max_connections = limits.max_connections,
        idle_timeout = %humantime::format_duration(limits.idle_timeout),
        "serving client connections"
    );
    let connections = Arc::new(ConnectionMetrics::default());
    let stopped = wait_true(server_stopped);
    let server = match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)?;
            tokio::spawn(web::server::serve(
                listener,
                app,
                limits,
                connections.clone(),
                stopped,
            ))
        }
        None => {
            // No Nagle delay on responses (see TlsListener).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(web::server::serve(
                listener,
                app,
                limits,
                connections.clone(),
                stopped,
            ))
        }
    };

    let state = match build_state(&args, local).await {
        Ok(parts) => AppState::new(AppParts {
            connections,
            ..parts
        }),
        Err(e) => {
            let _ = stop_server.send(true);
            let _ = server.await;
            return Err(e);
        }
    };
    gate.open(web::router(state.clone()));
    tracing::info!(address = %local, data_dir = %args.data_dir.display(), environment = %args.environment, "console listening");
    if let Some(token) = state
        .setup_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
    {
        // Printed, not logged: the link is meant for the person who started the console.
        println!(
            "No administrator yet. Open {}/setup?token={token} to create the first Global Administrator.",
            state.settings.public_url
        );
    }
    println!("hybridsync console listening on {scheme}://{local}");

    let (stop_fleet, fleet_stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(state.fleet.clone().run_background(fleet_stopped));
    let sessions = tokio::spawn(expire_sessions(state.db.clone()));

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_server.send(true);
    server.await.context("the HTTP server task failed")?;
    // After the server: heartbeats accepted until the last moment are in the final flush.
    let _ = stop_fleet.send(true);
    sessions.abort();
    background
        .await
        .context("the fleet background task failed")?;
    Ok(())
}

/// The idle timeout and the connection limit. Raises the open-file limit to its hard limit first
/// (each client connection is a file descriptor, and the usual soft limit of 1,024 would cap the
/// console far below a fleet's size).
fn connection_limits(args: &ServeArgs) -> web::server::ConnectionLimits {
    let open_file_limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    // Outbound: kept poll connections, polls in flight, and TLS handshakes in progress.
    let outbound = args.poll_keepalive + args.poll_concurrency + tls::MAX_HANDSHAKES;
    web::server::ConnectionLimits {
        idle_timeout: args.idle_timeout,
        max_connections: args
            .max_connections
            .unwrap_or_else(|| web::server::default_max_connections(open_file_limit, outbound)),
    }
}

/// Resolves once the watched value becomes true.
async fn wait_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn expire_sessions(db: sqlx::SqlitePool) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        if let Err(e) = db::sessions::delete_expired(&db, db::now_ms()).await {
            tracing::warn!(error = %e, "cannot remove expired sessions");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// `hybridsync admin …`: works on the data dir directly, also while the console runs (SQLite WAL).
pub async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateUser(args) => {
            let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            let db = db::open(&args.data_dir).await?;
            accounts::create(&db, "cli", &args.username, password, role).await?;
            println!("Created {} with role {}.", args.username, role.label());
        }
        AdminCommand::CreateApiToken(args) => {
            let db = db::open(&args.data_dir).await?;
            let token = accounts::create_api_token(&db, "cli", &args.username, &args.name).await?;
            println!("{token}");
        }
        AdminCommand::CreateEnrollmentToken(args) => {
            enrollment::validate(args.expires, args.max_uses).map_err(anyhow::Error::msg)?;
            let db = db::open(&args.data_dir).await?;
            let created = enrollment::create(&db, "cli", args.expires, args.max_uses).await?;
            println!("{}", created.token);
        }
    }
    Ok(())
}
