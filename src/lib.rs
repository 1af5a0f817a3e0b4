//! hybridsync: a self-hosted counterpart of Entra Connect cloud sync.
//!
//! One crate, two halves:
//! - the console (`hybridsync serve`): [`web`] (axum pages and APIs) over [`fleet`] (the live agent
//!   fleet), [`console`] (accounts, enrollment tokens, the process), [`auth`] (roles, passwords,
//!   tokens) and [`db`] (all SQL);
//! - the provisioning agent (`hybridsync agent …`): [`agent`].
//!
//! [`protocol`] holds the JSON both halves exchange. Dependencies point one way:
//! `web → console, fleet → auth, db`; only `web` and `agent` know HTTP servers.

pub mod agent;
pub mod auth;
pub mod cli;
pub mod console;
pub mod db;
pub mod directory;
pub mod fleet;
pub mod malloc;
pub mod protocol;
pub mod simulate;
pub mod state;
pub mod sync;
pub mod web;
pub mod writeback;

pub use state::AppState;

/// The console's router for a built state: what `serve` runs and what tests call.
pub fn app(state: AppState) -> axum::Router {
    web::router(state)
}
