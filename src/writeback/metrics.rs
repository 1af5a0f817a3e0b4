//! Counters of password writeback and unlock for `/metrics`: results by operation and error code,
//! and how long each took. Labels come only from fixed lists (never from user input), so the set of
//! series is bounded and can be shown with zeros before anything happened.

use crate::fleet::metrics::{Histogram, DURATION_BUCKETS};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The `operation` label. A password check (self-service sign-in) changes nothing on-premises
/// and is not a writeback: it is not counted.
pub const OPERATIONS: [&str; 3] = ["reset", "change", "unlock"];

/// The `result` label: "success" or one of the codes of [`super::Failure::code`].
pub const RESULTS: [&str; 12] = [
    "success",
    "writeback_off",
    "unlock_not_allowed",
    "password_policy",
    "insufficient_access",
    "user_not_found",
    "wrong_password",
    "directory_error",
    "no_healthy_agent",
    "agent_timeout",
    "agents_failed",
    "internal",
];

pub struct WritebackMetrics {
    /// Indexed by [`OPERATIONS`], then [`RESULTS`].
    results: [[AtomicU64; RESULTS.len()]; OPERATIONS.len()],
    /// Indexed by [`OPERATIONS`].
    durations: [Histogram; OPERATIONS.len()],
}

impl Default for WritebackMetrics {
    fn default() -> Self {
        WritebackMetrics {
            results: Default::default(),
            // Trying agent after agent may take up to the 90-second deadline.
            durations: std::array::from_fn(|_| Histogram::with_bounds(DURATION_BUCKETS)),
        }
    }
}

impl WritebackMetrics {
    /// Counts one writeback of `operation` (one of [`OPERATIONS`]) that ended with `result`.
    pub fn record(&self, operation: &str, result: &str, took: Duration) {
        let Some(op) = OPERATIONS.iter().position(|o| *o == operation) else {
            return;
        };
        let Some(r) = RESULTS.iter().position(|r| *r == result) else {
            // The test below keeps every code listed; never invent a label.
            tracing::warn!(result, "writeback result with an unlisted code not counted");
            return;
        };
        self.results[op][r].fetch_add(1, Relaxed);
        // Counted with its result, so the histogram's count is the sum of the results.
        self.durations[op].observe(took);
    }

    /// Writebacks of `OPERATIONS[operation]` that ended with `RESULTS[result]`.
    pub fn results(&self, operation: usize, result: usize) -> u64 {
        self.results[operation][result].load(Relaxed)
    }

    /// Durations of the writebacks of `OPERATIONS[operation]`.
    pub fn duration(&self, operation: usize) -> &Histogram {
        &self.durations[operation]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Failure;
    use super::*;
    use crate::directory::password::WritebackError;

    /// Every failure there is: the matches have no wildcard, so a new variant fails to compile
    /// here until it is added (and its code listed in [`RESULTS`]).
    fn every_failure() -> Vec<Failure> {
        let directory = [
            WritebackError::PasswordPolicy(String::new()),
            WritebackError::InsufficientAccess(String::new()),
            WritebackError::UserNotFound(String::new()),
            WritebackError::WrongPassword,
            WritebackError::Directory(String::new()),
        ];
        for e in &directory {
            match e {
                WritebackError::PasswordPolicy(_)
                | WritebackError::InsufficientAccess(_)
                | WritebackError::UserNotFound(_)
                | WritebackError::WrongPassword
                | WritebackError::Directory(_) => {}
            }
        }
        let mut all = vec![
            Failure::Off,
            Failure::UnlockNotAllowed,
            Failure::NoHealthyAgent {
                domain: String::new(),
                detail: String::new(),
            },
            Failure::Timeout {
                domain: String::new(),
                seconds: 0,
                tried: String::new(),
            },
            Failure::AllFailed {
                domain: String::new(),
                failures: String::new(),
            },
            Failure::Database(sqlx::Error::RowNotFound),
        ];
        all.extend(directory.into_iter().map(Failure::Directory));
        for f in &all {
            match f {
                Failure::Off
                | Failure::UnlockNotAllowed
                | Failure::Directory(_)
                | Failure::NoHealthyAgent { .. }
                | Failure::Timeout { .. }
                | Failure::AllFailed { .. }
                | Failure::Database(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_failure_code_is_a_listed_result() {
        let codes: Vec<&str> = every_failure().iter().map(Failure::code).collect();
        for code in &codes {
            assert!(RESULTS.contains(code), "{code} is not in RESULTS");
        }
        // And nothing listed that no failure produces.
        for result in &RESULTS[1..] {
            assert!(codes.contains(result), "{result} is never produced");
        }
    }

    #[test]
    fn records_by_operation_and_result() {
        let m = WritebackMetrics::default();
        m.record("reset", "success", Duration::from_millis(30));
        m.record("unlock", "no_healthy_agent", Duration::from_millis(1));
        m.record("verify", "success", Duration::from_millis(1));
        m.record("change", "made_up", Duration::from_secs(1));
        m.record("change", "agent_timeout", Duration::from_secs(95));
        assert_eq!(m.results(0, 0), 1);
        assert_eq!(m.results(2, 8), 1);
        let total: u64 = (0..OPERATIONS.len())
            .flat_map(|o| (0..RESULTS.len()).map(move |r| (o, r)))
            .map(|(o, r)| m.results(o, r))
            .sum();
        assert_eq!(total, 3);
        let mut out = String::new();
        m.duration(1).render(&mut out, "d", "");
        assert!(out.contains("d_bucket{le=\"60\"} 0\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"120\"} 1\n"), "{out}");
        assert!(out.contains("d_count 1\n"), "{out}");
    }
}
