//! The agent's self-checks, reported in every heartbeat and by the health endpoint.
//!
//! Both callers run [`SelfChecks::run`], so the console sees the same checks either way; only the
//! `console` check is remembered between runs, as the outcome of the last heartbeat.

use crate::protocol::{CheckStatus, HealthCheck};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use uuid::Uuid;

/// Test and diagnostic hook: while `DATA_DIR/fail-check` exists, a `simulated` check fails with the
/// file's content as its message, so the console's handling of a failing agent can be exercised
/// without breaking anything real.
const FAIL_CHECK_FILE: &str = "fail-check";

pub(crate) struct SelfChecks {
    data_dir: PathBuf,
    listen_addr: SocketAddr,
    console: Mutex<HealthCheck>,
}

impl SelfChecks {
    pub fn new(data_dir: PathBuf, listen_addr: SocketAddr) -> Self {
        // Pass until the first answer: the heartbeat carrying this check reaches the console only
        // if the console is reachable, so a warn here would only ever be false.
        let console = check("console", CheckStatus::Pass, "no heartbeat answered yet");
        Self {
            data_dir,
            listen_addr,
            console: Mutex::new(console),
        }
    }

    /// Records the outcome of a heartbeat; returns true when it heals a previous failure.
    pub fn record_heartbeat(&self, outcome: Result<(), String>) -> bool {
        let healed = outcome.is_ok();
        let check = match outcome {
            Ok(()) => check("console", CheckStatus::Pass, "last heartbeat accepted"),
            Err(error) => check("console", CheckStatus::Warn, error),
        };
        let mut console = self.console.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = std::mem::replace(&mut *console, check);
        healed && previous.status != CheckStatus::Pass
    }

    pub async fn run(&self) -> Vec<HealthCheck> {
        let mut checks = vec![
            self.data_dir_check().await,
            check(
                "api-listener",
                CheckStatus::Pass,
                format!("serving on {}", self.listen_addr),
            ),
            self.console
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        ];
        checks.extend(self.simulated_check().await);
        // One `directory:<domain>` check per connected directory, read afresh from the data dir
        // so a directory added while the agent runs is checked without a restart.
        checks.extend(super::directory::checks(&self.data_dir).await);
        checks
    }

    async fn data_dir_check(&self) -> HealthCheck {
        // A unique name, so the health endpoint and the heartbeat can probe at the same time.
        let probe = self
            .data_dir
            .join(format!(".probe-{}", Uuid::new_v4().simple()));
        let written = match tokio::fs::write(&probe, b"probe").await {
            Ok(()) => tokio::fs::remove_file(&probe).await,
            Err(e) => Err(e),
        };
        let dir = self.data_dir.display();
        match written {
            Ok(()) => check("data-dir", CheckStatus::Pass, format!("{dir} is writable")),
            Err(e) => check(
                "data-dir",
                CheckStatus::Fail,
                format!("cannot write to {dir}: {e}"),
            ),
        }
    }

    async fn simulated_check(&self) -> Option<HealthCheck> {
        let path = self.data_dir.join(FAIL_CHECK_FILE);
        let message = match tokio::fs::read(&path).await {
            Ok(content) => String::from_utf8_lossy(&content).trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => format!("cannot read {}: {e}", path.display()),
        };
        Some(check("simulated", CheckStatus::Fail, message))
    }
}

fn check(name: &str, status: CheckStatus, message: impl Into<String>) -> HealthCheck {
    HealthCheck {
        name: name.to_owned(),
        status,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(checks: &[HealthCheck], name: &str) -> Option<CheckStatus> {
        checks.iter().find(|c| c.name == name).map(|c| c.status)
    }

    #[tokio::test]
    async fn reports_data_dir_listener_console_and_simulated_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checks = SelfChecks::new(
            dir.path().to_path_buf(),
            "127.0.0.1:4000".parse().expect("addr"),
        );

        let report = checks.run().await;
        assert_eq!(status_of(&report, "data-dir"), Some(CheckStatus::Pass));
        assert_eq!(status_of(&report, "api-listener"), Some(CheckStatus::Pass));
        assert_eq!(status_of(&report, "console"), Some(CheckStatus::Pass));
        assert_eq!(status_of(&report, "simulated"), None);

        std::fs::write(dir.path().join(FAIL_CHECK_FILE), "disk on fire\n").expect("write");
        let report = checks.run().await;
        let simulated = report
            .iter()
            .find(|c| c.name == "simulated")
            .expect("simulated");
        assert_eq!(simulated.status, CheckStatus::Fail);
        assert_eq!(simulated.message, "disk on fire");
        // The probe files are gone again.
        assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 1);
    }

    #[tokio::test]
    async fn console_check_follows_heartbeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checks = SelfChecks::new(
            dir.path().to_path_buf(),
            "127.0.0.1:4000".parse().expect("addr"),
        );

        assert!(!checks.record_heartbeat(Ok(())));
        assert!(!checks.record_heartbeat(Err("connection refused".into())));
        let report = checks.run().await;
        let console = report
            .iter()
            .find(|c| c.name == "console")
            .expect("console");
        assert_eq!(console.status, CheckStatus::Warn);
        assert_eq!(console.message, "connection refused");
        assert!(checks.record_heartbeat(Ok(())));
        assert_eq!(
            status_of(&checks.run().await, "console"),
            Some(CheckStatus::Pass)
        );
    }
}
