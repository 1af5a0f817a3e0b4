//! The one application state every handler receives, with its typed parts.

use crate::auth::tokens::ConsoleKey;
use crate::fleet::Fleet;
use sqlx::SqlitePool;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Console-wide settings that pages and handlers read.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The URL agents and administrators use to reach the console (shown in install commands).
    pub public_url: String,
    /// Lifetime of a browser session.
    pub session_lifetime: Duration,
}

/// What every handler receives. axum clones it for each request and again for each `State`
/// extractor, so it is one pointer: one reference count moves per clone, not one per part (each
/// part's count is its own cache line, passed between the runtime's workers on every request).
/// The parts are read through it as fields (`state.fleet`).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The typed parts of the application state.
pub struct AppParts {
    pub db: SqlitePool,
    pub fleet: Arc<Fleet>,
    pub key: ConsoleKey,
    pub settings: Arc<ConsoleSettings>,
    /// The one-time first-run setup token; `None` once an administrator exists.
    pub setup_token: Arc<Mutex<Option<String>>>,
    /// Sign-in throttle, OpenID Connect provider, local sign-in switch.
    pub identity: Arc<crate::auth::identity::Identity>,
    /// Sync cycle counters for `/metrics` (the fleet's own are in `fleet.metrics`).
    pub sync_metrics: Arc<crate::sync::metrics::SyncMetrics>,
    /// Password writeback and unlock counters for `/metrics`.
    pub writeback_metrics: Arc<crate::writeback::metrics::WritebackMetrics>,
    /// The connection loop's counters for `/metrics` (`web::server`).
    pub connections: Arc<ConnectionMetrics>,
}

/// Client connections of the console, kept by `web::server` and shown at `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted since the start.
    pub accepted: AtomicU64,
    /// Connections the console closed because no request came within `--idle-timeout`.
    pub closed_idle: AtomicU64,
    /// Times every slot was in use and the open connections were asked to close.
    pub drains: AtomicU64,
    /// `--max-connections` (0 before the loop starts).
    pub limit: AtomicU64,
}
