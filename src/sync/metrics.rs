//! Counters of sync cycles for `/metrics`: how many cycles of each kind ended how, how long they
//! took, and how many cloud objects they changed. A cycle is counted once, when the console
//! records its end (after that transaction commits, so a finish that rolls back counts nothing):
//! a finish reported by the agent, or a lease that finds the cycle abandoned.

use crate::db::sync::CycleRow;
use crate::fleet::metrics::{Histogram, DURATION_BUCKETS};
use crate::protocol::sync::CycleKind;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The `kind` label: every kind of cycle.
pub const KINDS: [CycleKind; 3] = [CycleKind::Full, CycleKind::Delta, CycleKind::Preview];
/// The `result` label: the states an ended cycle can have (`sync_cycles.state` minus "running").
pub const RESULTS: [&str; 3] = ["succeeded", "failed", "threshold"];
/// The `action` label: what a cycle did to cloud objects.
pub const ACTIONS: [&str; 4] = ["created", "updated", "deleted", "staged"];

pub struct SyncMetrics {
    /// Indexed by [`KINDS`], then [`RESULTS`].
    cycles: [[AtomicU64; RESULTS.len()]; KINDS.len()],
    /// Indexed by [`KINDS`].
    durations: [Histogram; KINDS.len()],
    /// Indexed by [`ACTIONS`].
    objects: [AtomicU64; ACTIONS.len()],
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            cycles: Default::default(),
            // A full cycle of a large directory takes minutes, beyond the latency buckets.
            durations: std::array::from_fn(|_| Histogram::with_bounds(DURATION_BUCKETS)),
            objects: Default::default(),
        }
    }
}

impl SyncMetrics {
    /// Counts a cycle that has just ended (state and `finished_at` set, and committed).
    pub fn cycle_ended(&self, cycle: &CycleRow) {
        let kind = KINDS.iter().position(|k| k.as_str() == cycle.kind);
        let result = RESULTS.iter().position(|r| *r == cycle.state);
        let (Some(kind), Some(result)) = (kind, result) else {
            // The table's CHECK constraints keep this from happening; never invent a label.
            tracing::warn!(kind = %cycle.kind, state = %cycle.state, "cycle of unknown kind or state not counted");
            return;
        };
        self.cycles[kind][result].fetch_add(1, Relaxed);
        if let Some(finished) = cycle.finished_at {
            let ms = finished.saturating_sub(cycle.started_at).max(0);
            self.durations[kind].observe(Duration::from_millis(ms.unsigned_abs()));
        }
        // A preview's counts are what it would have done; other cycles' batches were applied,
        // also those of a cycle that failed later.
        if KINDS[kind] != CycleKind::Preview {
            let counts = [cycle.created, cycle.updated, cycle.deleted, cycle.staged];
            for (counter, n) in self.objects.iter().zip(counts) {
                counter.fetch_add(n.max(0).unsigned_abs(), Relaxed);
            }
        }
    }

    /// Cycles of `KINDS[kind]` that ended with `RESULTS[result]`.
    pub fn cycles(&self, kind: usize, result: usize) -> u64 {
        self.cycles[kind][result].load(Relaxed)
    }

    /// Durations of the cycles of `KINDS[kind]`.
    pub fn duration(&self, kind: usize) -> &Histogram {
        &self.durations[kind]
    }

    /// Cloud objects with `ACTIONS[action]` done to them.
    pub fn objects(&self, action: usize) -> u64 {
        self.objects[action].load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(kind: &str, state: &str, ms: i64) -> CycleRow {
        CycleRow {
            cycle_id: "c".into(),
            configuration_id: "k".into(),
            agent_id: "a".into(),
            kind: kind.into(),
            state: state.into(),
            started_at: 1_000,
            finished_at: Some(1_000 + ms),
            imported: 10,
            created: 4,
            updated: 3,
            deleted: 2,
            staged: 1,
            skipped: 0,
            failed: 0,
            error: None,
            plan_json: None,
        }
    }

    #[test]
    fn counts_cycles_by_kind_and_result_and_applied_objects() {
        let m = SyncMetrics::default();
        m.cycle_ended(&cycle("full", "succeeded", 61_000));
        m.cycle_ended(&cycle("delta", "threshold", 20));
        m.cycle_ended(&cycle("delta", "failed", 20));
        m.cycle_ended(&cycle("preview", "succeeded", 20));
        m.cycle_ended(&cycle("delta", "running", 20));
        assert_eq!(m.cycles(0, 0), 1);
        assert_eq!(m.cycles(1, 2), 1);
        assert_eq!(m.cycles(1, 1), 1);
        assert_eq!(m.cycles(2, 0), 1);
        assert_eq!(m.cycles(1, 0), 0);
        // Previews apply nothing.
        assert_eq!(
            (0..ACTIONS.len()).map(|a| m.objects(a)).collect::<Vec<_>>(),
            [12, 9, 6, 3]
        );
        let mut out = String::new();
        m.duration(0).render(&mut out, "d", "");
        assert!(out.contains("d_bucket{le=\"60\"} 0\n"), "{out}");
        assert!(out.contains("d_bucket{le=\"120\"} 1\n"), "{out}");
        assert!(out.contains("d_sum 61\n"), "{out}");
    }
}
