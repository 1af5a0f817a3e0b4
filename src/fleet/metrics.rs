//! Counters and histograms the fleet keeps for `/metrics` (Prometheus text format), lock-free so the
//! heartbeat path pays one atomic add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets: heartbeats, polls, group commits.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Upper bounds (seconds) for operations that may take minutes: a full sync cycle of a large
/// directory, or a writeback that tries agent after agent for up to 90 seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A Prometheus histogram over fixed bucket bounds ([`LATENCY_BUCKETS`] by default).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    overflow: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds(LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// `bounds` ascending, in seconds; `+Inf` is implied.
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            overflow: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match self.bounds.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Appends `name_bucket`, `name_sum` and `name_count` lines with `labels` (e.g. `result="ok"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.overflow.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The fleet's counters.
#[derive(Default)]
pub struct FleetMetrics {
    pub heartbeats_received: AtomicU64,
    pub polls_ok: AtomicU64,
    pub polls_failed: AtomicU64,
    pub poll_latency_ok: Histogram,
    pub poll_latency_failed: Histogram,
    pub poll_rounds: AtomicU64,
    pub poll_round_duration: Histogram,
    /// Rounds started later than `--poll-interval` because the previous round was long.
    pub poll_rounds_held: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_duration: Histogram,
    pub flushed_agents: AtomicU64,
    /// Where the fleet came from at start (`snapshot` or `table`) and how long that took.
    pub loaded_from: &'static str,
    pub load_duration: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        let mut labelled = String::new();
        h.render(&mut labelled, "y", "result=\"ok\"");
        assert!(
            labelled.contains("y_bucket{result=\"ok\",le=\"+Inf\"} 3\n"),
            "{labelled}"
        );
        assert!(
            labelled.contains("y_count{result=\"ok\"} 3\n"),
            "{labelled}"
        );
    }

    #[test]
    fn histogram_takes_its_bounds() {
        let h = Histogram::with_bounds(DURATION_BUCKETS);
        h.observe(Duration::from_secs(60));
        h.observe(Duration::from_secs(299));
        h.observe(Duration::from_secs(400));
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert_eq!(out.matches("x_bucket{").count(), DURATION_BUCKETS.len() + 1);
        assert!(out.contains("x_bucket{le=\"30\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"60\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"300\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 759\n"), "{out}");
    }
}
