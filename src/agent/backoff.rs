//! Retry delays for heartbeats that did not reach the console: exponential backoff with full
//! jitter.
//!
//! Full jitter (a uniform delay in `[0, ceiling]`) spreads a fleet's retries after a console
//! outage, so the agents do not all come back in the same second.

use rand::Rng;
use std::time::Duration;

const FIRST_CEILING: Duration = Duration::from_secs(1);
/// Short heartbeat intervals must not turn an outage into a retry storm.
const MIN_CAP: Duration = Duration::from_secs(60);

pub(crate) struct Backoff {
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// The ceiling grows up to the heartbeat interval, but to at least [`MIN_CAP`].
    pub fn new(heartbeat_interval: Duration) -> Self {
        Self {
            cap: heartbeat_interval.max(MIN_CAP),
            failures: 0,
        }
    }

    /// The delay before the next retry; each call counts one more consecutive failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        rng.gen_range(Duration::ZERO..=ceiling)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// 1 s, doubling with each consecutive failure, up to the cap.
    fn ceiling(&self) -> Duration {
        FIRST_CEILING
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(backoff.ceiling());
            backoff.next_delay(&mut rng);
        }
        let expected: Vec<_> = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
            .into_iter()
            .map(secs)
            .collect();
        assert_eq!(ceilings, expected);

        // Thousands of failures neither overflow nor pass the cap.
        for _ in 0..5_000 {
            assert!(backoff.next_delay(&mut rng) <= secs(60));
        }
        assert_eq!(backoff.ceiling(), secs(60));
    }

    #[test]
    fn cap_follows_a_long_heartbeat_interval() {
        let mut backoff = Backoff::new(secs(300));
        backoff.failures = 20;
        assert_eq!(backoff.ceiling(), secs(300));
    }

    #[test]
    fn jitter_stays_within_zero_and_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut backoff = Backoff::new(secs(30));
        backoff.failures = 4;
        let ceiling = backoff.ceiling();
        let delays: Vec<_> = (0..1_000)
            .map(|_| {
                backoff.failures = 4;
                backoff.next_delay(&mut rng)
            })
            .collect();
        assert!(delays.iter().all(|d| *d <= ceiling));
        // Full jitter uses the whole range, not just values near the ceiling.
        assert!(delays.iter().any(|d| *d < ceiling / 4));
        assert!(delays.iter().any(|d| *d > ceiling * 3 / 4));
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::new(secs(30));
        for _ in 0..8 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), secs(1));
        assert!(backoff.next_delay(&mut rng) <= secs(1));
    }
}
