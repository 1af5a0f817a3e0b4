//! The provisioning agent: `hybridsync agent install`, `run` and `status`.
//!
//! An agent enrolls once with a console ([`install()`]), then runs as a service ([`run()`]) that
//! sends heartbeats to the console and serves a small HTTP API the console polls for health.
//! [`status()`] is the operator's check that the local agent is intact and known to its console.
//!
//! All of an agent's state lives in its data dir: `agent.json` (plain config) and
//! `credential.json` (secrets, mode 0600), see `config`; and one set of files per connected
//! directory under `directories/` ([`add_directory()`], [`remove_directory()`], see `directory`).

mod api;
mod backoff;
mod checks;
mod config;
mod console;
mod directory;
mod install;
mod run;
mod status;
mod sync;
mod writeback;

pub(crate) use console::read_ca as read_console_ca;
pub use directory::{add_directory, remove_directory};
pub use install::install;
pub use run::run;
pub use status::status;
