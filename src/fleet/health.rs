//! The agent health state machine, as a pure function of what the console knows about an agent.
//!
//! Status (the admin center's): `active` while the agent has been in contact (heartbeat or a successful
//! health poll) within `inactive_after`, else `inactive`.
//!
//! Health, evaluated in this order, first match wins:
//! 1. no heartbeat yet: `degraded` "enrolled; waiting for the first heartbeat", `unhealthy` once
//!    `unhealthy_after` has passed since enrollment;
//! 2. no heartbeat for `unhealthy_after`: `unhealthy` "no heartbeat for N intervals (…)";
//! 3. the console's last health poll failed: `unhealthy` "health endpoint unreachable: <cause>";
//! 4. no heartbeat for two intervals: `degraded` "heartbeat overdue: …";
//! 5. a check the agent reported fails: `unhealthy` "check NAME failing: MESSAGE";
//!    a check warns: `degraded` "check NAME: MESSAGE";
//! 6. otherwise `healthy` "heartbeats on time; all checks pass".

use crate::protocol::{CheckStatus, HealthCheck};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Status::Active),
            "inactive" => Some(Status::Inactive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "healthy" => Some(Health::Healthy),
            "degraded" => Some(Health::Degraded),
            "unhealthy" => Some(Health::Unhealthy),
            _ => None,
        }
    }
}

/// The thresholds the evaluation uses (the `serve` flags).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub unhealthy_after: Duration,
    pub inactive_after: Duration,
}

/// What the evaluation reads about one agent. Times are Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub registered_at: i64,
    pub last_heartbeat_at: Option<i64>,
    pub last_contact_at: i64,
    pub heartbeat_interval_seconds: i64,
    pub last_poll_error: Option<&'a str>,
    pub checks: &'a [HealthCheck],
}

pub fn evaluate_status(o: &Observed<'_>, t: &Thresholds, now: i64) -> Status {
    if now - o.last_contact_at > millis(t.inactive_after) {
        Status::Inactive
    } else {
        Status::Active
    }
}

/// Why an agent has its health, as the evaluation found it. Nothing is formatted until asked:
/// the sweeper evaluates every agent every second and only needs the text when it differs from
/// the stored one ([`Reason::is`]), so an unchanged unhealthy agent costs no allocation either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    Fixed(&'static str),
    NoHeartbeatSinceEnrollment { unhealthy_ms: i64 },
    NoHeartbeat { intervals: i64, unhealthy_ms: i64 },
    Unreachable(&'a str),
    Overdue { interval_ms: i64 },
    CheckFailing(&'a HealthCheck),
    CheckWarning(&'a HealthCheck),
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // No elapsed time in any reason: it would change every sweep; `health_since` tells when.
            Reason::Fixed(text) => f.write_str(text),
            Reason::NoHeartbeatSinceEnrollment { unhealthy_ms } => write!(
                f,
                "no heartbeat within {} of enrollment",
                Human(unhealthy_ms)
            ),
            Reason::NoHeartbeat {
                intervals,
                unhealthy_ms,
            } => {
                let plural = if intervals == 1 { "" } else { "s" };
                write!(
                    f,
                    "no heartbeat for {intervals} interval{plural} ({} without a heartbeat)",
                    Human(unhealthy_ms)
                )
            }
            Reason::Unreachable(error) => write!(f, "health endpoint unreachable: {error}"),
            Reason::Overdue { interval_ms } => write!(
                f,
                "heartbeat overdue: none for 2 intervals ({})",
                Human(2 * interval_ms)
            ),
            Reason::CheckFailing(check) => {
                write!(f, "check {} failing: {}", check.name, check.message)
            }
            Reason::CheckWarning(check) => write!(f, "check {}: {}", check.name, check.message),
        }
    }
}

impl Reason<'_> {
    /// Whether this reason reads exactly `text`, compared as it is formatted (no allocation).
    pub fn is(&self, text: &str) -> bool {
        /// Consumes `rest` as the formatter writes; fails at the first difference.
        struct Expect<'t> {
            rest: &'t str,
        }
        impl fmt::Write for Expect<'_> {
            fn write_str(&mut self, part: &str) -> fmt::Result {
                match self.rest.strip_prefix(part) {
                    Some(rest) => {
                        self.rest = rest;
                        Ok(())
                    }
                    None => Err(fmt::Error),
                }
            }
        }
        let mut expect = Expect { rest: text };
        fmt::write(&mut expect, format_args!("{self}")).is_ok() && expect.rest.is_empty()
    }
}

pub fn evaluate_health<'a>(o: &Observed<'a>, t: &Thresholds, now: i64) -> (Health, Reason<'a>) {
    let unhealthy_ms = millis(t.unhealthy_after);
    let interval_ms = o.heartbeat_interval_seconds.max(1) * 1000;
    let Some(last) = o.last_heartbeat_at else {
        if now - o.registered_at > unhealthy_ms {
            return (
                Health::Unhealthy,
                Reason::NoHeartbeatSinceEnrollment { unhealthy_ms },
            );
        }
        return (Health::Degraded, Reason::Fixed(ENROLLED));
    };
    let silent = now - last;
    if silent > unhealthy_ms {
        return (
            Health::Unhealthy,
            Reason::NoHeartbeat {
                intervals: (unhealthy_ms / interval_ms).max(1),
                unhealthy_ms,
            },
        );
    }
    if let Some(error) = o.last_poll_error {
        return (Health::Unhealthy, Reason::Unreachable(error));
    }
    if silent > 2 * interval_ms {
        return (Health::Degraded, Reason::Overdue { interval_ms });
    }
    if let Some(check) = o.checks.iter().find(|c| c.status == CheckStatus::Fail) {
        return (Health::Unhealthy, Reason::CheckFailing(check));
    }
    if let Some(check) = o.checks.iter().find(|c| c.status == CheckStatus::Warn) {
        return (Health::Degraded, Reason::CheckWarning(check));
    }
    (Health::Healthy, Reason::Fixed(HEALTHY))
}

/// The reason of a freshly enrolled agent.
pub const ENROLLED: &str = "enrolled; waiting for the first heartbeat";
/// The reason of a healthy agent.
pub const HEALTHY: &str = "heartbeats on time; all checks pass";

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A short human duration: `45s`, `3m`, `2h`, `10d`.
pub fn human(ms: i64) -> String {
    Human(ms).to_string()
}

/// [`human`] without the allocation, for use inside other formatting.
struct Human(i64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.max(0) / 1000;
        match s {
            0..=119 => write!(f, "{s}s"),
            120..=7199 => write!(f, "{}m", s / 60),
            7200..=172_799 => write!(f, "{}h", s / 3600),
            _ => write!(f, "{}d", s / 86_400),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        unhealthy_after: Duration::from_secs(90),
        inactive_after: Duration::from_secs(3600),
    };

    fn observed(last_hb: Option<i64>) -> Observed<'static> {
        Observed {
            registered_at: 0,
            last_heartbeat_at: last_hb,
            last_contact_at: last_hb.unwrap_or(0),
            heartbeat_interval_seconds: 30,
            last_poll_error: None,
            checks: &[],
        }
    }

    #[test]
    fn walks_the_state_machine_as_heartbeats_stop() {
        let o = observed(Some(1_000_000));
        let at = |secs: i64| 1_000_000 + secs * 1000;
        assert_eq!(evaluate_health(&o, &T, at(10)).0, Health::Healthy);
        assert_eq!(evaluate_health(&o, &T, at(61)).0, Health::Degraded);
        let (h, reason) = evaluate_health(&o, &T, at(91));
        assert_eq!(h, Health::Unhealthy);
        let text = "no heartbeat for 3 intervals (90s without a heartbeat)";
        assert_eq!(reason.to_string(), text);
        assert!(reason.is(text));
        assert!(
            !reason.is("no heartbeat for 3 intervals"),
            "a prefix is not the reason"
        );
        assert!(!reason.is(&format!("{text}!")), "nor is a longer text");
        assert!(!reason.is("no heartbeat for 2 intervals (90s without a heartbeat)"));
        assert_eq!(evaluate_status(&o, &T, at(3599)), Status::Active);
        assert_eq!(evaluate_status(&o, &T, at(3601)), Status::Inactive);
    }

    #[test]
    fn new_agents_wait_then_turn_unhealthy() {
        let o = observed(None);
        assert_eq!(evaluate_health(&o, &T, 5_000).0, Health::Degraded);
        assert_eq!(evaluate_health(&o, &T, 91_000).0, Health::Unhealthy);
    }

    #[test]
    fn poll_failures_and_checks_give_their_reason() {
        let checks = [
            HealthCheck {
                name: "disk".into(),
                status: CheckStatus::Warn,
                message: "90% full".into(),
            },
            HealthCheck {
                name: "ldap".into(),
                status: CheckStatus::Fail,
                message: "bind refused".into(),
            },
        ];
        let mut o = observed(Some(0));
        o.checks = &checks;
        let text = |o: &Observed<'_>| {
            let (health, reason) = evaluate_health(o, &T, 1000);
            assert!(reason.is(&reason.to_string()));
            (health, reason.to_string())
        };
        assert_eq!(
            text(&o),
            (Health::Unhealthy, "check ldap failing: bind refused".into())
        );
        o.checks = &checks[..1];
        assert_eq!(text(&o), (Health::Degraded, "check disk: 90% full".into()));
        o.last_poll_error = Some("connection refused");
        assert_eq!(
            text(&o),
            (
                Health::Unhealthy,
                "health endpoint unreachable: connection refused".into()
            )
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(45_000), "45s");
        assert_eq!(human(180_000), "3m");
        assert_eq!(human(3 * 3_600_000), "3h");
        assert_eq!(human(10 * 86_400_000), "10d");
    }
}
