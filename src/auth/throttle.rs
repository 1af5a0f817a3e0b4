//! Sign-in throttling: failed password sign-ins are counted per account and per client address in a
//! sliding window; past a limit, further attempts for that account or from that address are refused
//! until the oldest failure leaves the window.
//!
//! Per account stops guessing one administrator's password from many addresses; per address stops
//! one client spraying many usernames. The state is in memory: a restart forgets it, which only
//! gives an attacker one more window, and keeps the database free of attacker-controlled rows.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures counted over this window.
    pub window: Duration,
    /// Failures for one account within the window before that account is refused.
    pub per_account: usize,
    /// Failures from one address within the window before that address is refused.
    pub per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window: Duration::from_secs(15 * 60),
            per_account: 5,
            per_address: 20,
        }
    }
}

/// Why an attempt is refused, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttled {
    Account { retry_after: Duration },
    Address { retry_after: Duration },
}

impl Throttled {
    pub fn retry_after(&self) -> Duration {
        match self {
            Throttled::Account { retry_after } | Throttled::Address { retry_after } => *retry_after,
        }
    }

    /// A message for the person signing in; it does not say whether the account exists.
    pub fn message(&self) -> String {
        let minutes = self.retry_after().as_secs().div_ceil(60).max(1);
        let plural = if minutes == 1 { "" } else { "s" };
        match self {
            Throttled::Account { .. } => format!(
                "Too many failed sign-ins for this username. Try again in {minutes} minute{plural}."
            ),
            Throttled::Address { .. } => format!(
                "Too many failed sign-ins from your address. Try again in {minutes} minute{plural}."
            ),
        }
    }
}

/// Above this many tracked keys, stale entries are swept on the next failure, so an attacker
/// cycling through usernames cannot grow the map without bound.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
struct Failures {
    by_account: HashMap<String, VecDeque<Instant>>,
    by_address: HashMap<String, VecDeque<Instant>>,
}

/// The throttle shared by every sign-in request.
#[derive(Debug)]
pub struct SignInThrottle {
    limits: Limits,
    failures: Mutex<Failures>,
}

/// Usernames are case-insensitive in the database (COLLATE NOCASE), so they are here too.
fn account_key(username: &str) -> String {
    username.trim().to_lowercase()
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// How long until `times` drops below `limit` failures, if it is at the limit.
fn blocked_for(
    times: Option<&mut VecDeque<Instant>>,
    limit: usize,
    now: Instant,
    window: Duration,
) -> Option<Duration> {
    let times = times?;
    prune(times, now, window);
    if times.len() < limit {
        return None;
    }
    // The attempt is allowed again once enough of the oldest failures have left the window.
    let oldest_that_must_expire = times[times.len() - limit];
    Some(window.saturating_sub(now.duration_since(oldest_that_must_expire)))
}

impl SignInThrottle {
    pub fn new(limits: Limits) -> Self {
        SignInThrottle {
            limits,
            failures: Mutex::new(Failures::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checked before the password is verified, so a throttled attempt costs no argon2 work.
    pub fn check(&self, username: &str, address: &str) -> Result<(), Throttled> {
        let now = Instant::now();
        let Limits {
            window,
            per_account,
            per_address,
        } = self.limits;
        let mut f = self.lock();
        if let Some(retry_after) =
            blocked_for(f.by_address.get_mut(address), per_address, now, window)
        {
            return Err(Throttled::Address { retry_after });
        }
        if let Some(retry_after) = blocked_for(
            f.by_account.get_mut(&account_key(username)),
            per_account,
            now,
            window,
        ) {
            return Err(Throttled::Account { retry_after });
        }
        Ok(())
    }

    /// Records a failed sign-in (wrong password or unknown username alike).
    pub fn record_failure(&self, username: &str, address: &str) {
        let now = Instant::now();
        let window = self.limits.window;
        let mut guard = self.lock();
        // Through a plain reference, so the two maps can be borrowed apart.
        let f = &mut *guard;
        if f.by_account.len() + f.by_address.len() > SWEEP_ABOVE {
            for map in [&mut f.by_account, &mut f.by_address] {
                map.retain(|_, times| {
                    prune(times, now, window);
                    !times.is_empty()
                });
            }
        }
        for (map, key) in [
            (&mut f.by_account, account_key(username)),
            (&mut f.by_address, address.to_string()),
        ] {
            let times = map.entry(key).or_default();
            prune(times, now, window);
            times.push_back(now);
        }
    }

    /// A successful sign-in clears the account's failures (not the address's: one right password
    /// must not reset a spray of guesses against other accounts).
    pub fn record_success(&self, username: &str) {
        self.lock().by_account.remove(&account_key(username));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_account: usize, per_address: usize) -> SignInThrottle {
        SignInThrottle::new(Limits {
            window: Duration::from_secs(600),
            per_account,
            per_address,
        })
    }

    #[test]
    fn account_is_refused_after_its_limit_whatever_the_case_or_address() {
        let t = throttle(3, 100);
        for i in 0..3 {
            assert!(t.check("Alice", &format!("10.0.0.{i}")).is_ok());
            t.record_failure("Alice", &format!("10.0.0.{i}"));
        }
        let refused = t.check("alice", "10.9.9.9").unwrap_err();
        assert!(matches!(refused, Throttled::Account { .. }), "{refused:?}");
        assert!(refused.retry_after() <= Duration::from_secs(600));
        assert!(refused.message().contains("Try again in 10 minutes"));
        // Another account is unaffected.
        assert!(t.check("bob", "10.9.9.9").is_ok());
    }

    #[test]
    fn address_is_refused_after_its_limit_across_usernames() {
        let t = throttle(100, 4);
        for i in 0..4 {
            t.record_failure(&format!("user{i}"), "192.0.2.7");
        }
        assert!(matches!(
            t.check("someone-new", "192.0.2.7"),
            Err(Throttled::Address { .. })
        ));
        assert!(t.check("someone-new", "192.0.2.8").is_ok());
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let t = throttle(2, 3);
        t.record_failure("alice", "a");
        t.record_failure("alice", "a");
        assert!(t.check("alice", "b").is_err());
        t.record_success("alice");
        assert!(t.check("alice", "b").is_ok());
        t.record_failure("carol", "a");
        assert!(matches!(
            t.check("dave", "a"),
            Err(Throttled::Address { .. })
        ));
    }

    #[test]
    fn failures_leave_the_window() {
        let t = SignInThrottle::new(Limits {
            window: Duration::ZERO,
            per_account: 1,
            per_address: 1,
        });
        t.record_failure("alice", "a");
        // With a zero window every failure has already expired.
        assert!(t.check("alice", "a").is_ok());
    }
}
