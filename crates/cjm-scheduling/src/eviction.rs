//! Which idle GPU workers to stop for an execution that fits the machine but not
//! the GPU memory free right now: the successor cjm-substrate's rule (its
//! `_evict_gpu_residents`), as a pure function so that both can be run on the same
//! candidates.

/// Freeing exactly the shortfall leaves a fresh worker on the boundary (it carries
/// more than its model): eviction frees this many times the shortfall.
pub const EVICTION_MARGIN: f64 = 1.25;

/// A worker measured holding less GPU memory than this (MiB) holds none worth a
/// restart (a lazy worker that has not loaded its model): never stopped for memory.
pub const HOLLOW_BELOW_MB: f64 = 64.0;

/// One loaded GPU worker, as eviction sees it.
///
/// Non-exhaustive: made with [`EvictionCandidate::new`], then fields set.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EvictionCandidate {
    /// The plugin (or instance) name.
    pub name: String,
    /// GPU memory its worker holds now, as measured (the driver, per process);
    /// `None` when it cannot be measured.
    pub measured_mb: Option<f64>,
    /// What it is thought to hold when it cannot be measured (its learned or
    /// declared need); 0: nothing known.
    pub estimated_mb: f64,
    /// When it last ran a call (seconds since the epoch): the older goes first
    /// among equals.
    pub last_used: f64,
    /// Executing, or with calls in flight or waiting for admission.
    pub busy: bool,
    /// The target of a job that waits in the queue.
    pub pending_target: bool,
}

impl EvictionCandidate {
    /// An idle candidate named `name` whose memory is `measured_mb`.
    pub fn new(name: impl Into<String>, measured_mb: Option<f64>) -> Self {
        EvictionCandidate {
            name: name.into(),
            measured_mb,
            estimated_mb: 0.0,
            last_used: 0.0,
            busy: false,
            pending_target: false,
        }
    }

    /// What stopping it would free, by the rule: nothing for a busy or pending
    /// one, or one measured under [`HOLLOW_BELOW_MB`]; else what it was measured
    /// to hold, or failing a measurement what it is thought to hold.
    pub fn freeable_mb(&self) -> Option<f64> {
        if self.busy || self.pending_target {
            return None;
        }
        let footprint = match self.measured_mb {
            Some(measured) if measured < HOLLOW_BELOW_MB => return None,
            Some(measured) => measured,
            None => self.estimated_mb,
        };
        (footprint > 0.0).then_some(footprint)
    }
}

/// Whom to stop, in order, and what that should free.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EvictionPlan {
    /// What eviction aims to free: [`EVICTION_MARGIN`] times the shortfall (at
    /// least 1 MiB).
    pub target_mb: f64,
    /// Indexes into the candidates, largest first.
    pub victims: Vec<usize>,
    /// What stopping them all should free.
    pub freed_mb: f64,
}

impl EvictionPlan {
    /// Whether the victims together are thought to free the target.
    pub fn reaches_target(&self) -> bool {
        self.freed_mb >= self.target_mb
    }
}

/// The idle workers to stop for `shortfall_mb` of GPU memory: largest first (the
/// least recently used first among equals, then by name), until
/// [`EVICTION_MARGIN`] times the shortfall is freed; when all of them together free
/// less, all of them.
pub fn plan_eviction(shortfall_mb: f64, candidates: &[EvictionCandidate]) -> EvictionPlan {
    let target_mb = (shortfall_mb * EVICTION_MARGIN).max(1.0);
    let mut order: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(index, candidate)| Some((candidate.freeable_mb()?, index)))
        .collect();
    order.sort_by(|(a_mb, a), (b_mb, b)| {
        b_mb.total_cmp(a_mb)
            .then(
                candidates[*a]
                    .last_used
                    .total_cmp(&candidates[*b].last_used),
            )
            .then_with(|| candidates[*a].name.cmp(&candidates[*b].name))
    });
    let mut plan = EvictionPlan {
        target_mb,
        victims: Vec::new(),
        freed_mb: 0.0,
    };
    for (footprint, index) in order {
        if plan.reaches_target() {
            break;
        }
        plan.victims.push(index);
        plan.freed_mb += footprint;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn idle(name: &str, measured: f64) -> EvictionCandidate {
        EvictionCandidate::new(name, Some(measured))
    }

    #[test]
    fn largest_first_until_a_quarter_more_than_the_shortfall() {
        let candidates = [idle("a", 2000.0), idle("b", 6000.0), idle("c", 3000.0)];
        // 4000 short: 5000 to free; b alone frees 6000.
        assert_eq!(plan_eviction(4000.0, &candidates).victims, [1]);
        // 5000 short: 6250 to free; b then c.
        let plan = plan_eviction(5000.0, &candidates);
        assert_eq!(plan.victims, [1, 2]);
        assert_eq!(plan.freed_mb, 9000.0);
        assert!(plan.reaches_target());
        // More than all of them hold: all of them, and the plan says it falls short.
        let plan = plan_eviction(9000.0, &candidates);
        assert_eq!(plan.victims, [1, 2, 0]);
        assert!(!plan.reaches_target());
    }

    #[test]
    fn hollow_busy_and_pending_workers_are_left_alone() {
        let mut busy = idle("busy", 9000.0);
        busy.busy = true;
        let mut pending = idle("pending", 9000.0);
        pending.pending_target = true;
        let mut unmeasured = EvictionCandidate::new("unmeasured", None);
        unmeasured.estimated_mb = 500.0;
        let candidates = [
            busy,
            pending,
            idle("hollow", 63.9),
            idle("small", 64.0),
            unmeasured,
            EvictionCandidate::new("unknown", None),
        ];
        assert_eq!(plan_eviction(10_000.0, &candidates).victims, [4, 3]);
    }

    fn candidate() -> impl Strategy<Value = EvictionCandidate> {
        (
            prop::option::of(0.0f64..20_000.0),
            0.0f64..20_000.0,
            0u8..5,
            any::<bool>(),
            any::<bool>(),
            0u32..1000,
        )
            .prop_map(|(measured, estimated, last_used, busy, pending, n)| {
                let mut candidate = EvictionCandidate::new(format!("p{n}"), measured);
                candidate.estimated_mb = estimated;
                candidate.last_used = f64::from(last_used);
                candidate.busy = busy;
                candidate.pending_target = pending;
                candidate
            })
    }

    proptest! {
        #[test]
        fn the_plan_keeps_every_rule(
            shortfall in 0.0f64..60_000.0,
            candidates in prop::collection::vec(candidate(), 0..12),
        ) {
            let plan = plan_eviction(shortfall, &candidates);
            prop_assert_eq!(plan.target_mb, (shortfall * 1.25).max(1.0));
            let mut seen = std::collections::HashSet::new();
            let mut freed = 0.0;
            let mut previous: Option<f64> = None;
            for &index in &plan.victims {
                prop_assert!(seen.insert(index), "chosen twice");
                let victim = &candidates[index];
                // Never a busy one, a pending target, or a hollow one.
                prop_assert!(!victim.busy && !victim.pending_target);
                prop_assert!(victim.measured_mb.is_none_or(|mb| mb >= HOLLOW_BELOW_MB));
                let footprint = victim.freeable_mb().unwrap_or(0.0);
                prop_assert!(footprint > 0.0);
                // Largest first.
                prop_assert!(previous.is_none_or(|before| before >= footprint));
                previous = Some(footprint);
                // Nobody is stopped once the target is reached.
                prop_assert!(freed < plan.target_mb, "stopped one past the target");
                freed += footprint;
            }
            prop_assert_eq!(freed, plan.freed_mb);
            if !plan.reaches_target() {
                // Short of the target: every freeable one was taken.
                let freeable = candidates.iter().filter(|c| c.freeable_mb().is_some()).count();
                prop_assert_eq!(plan.victims.len(), freeable);
            } else {
                // No one left out is larger than one taken.
                let smallest_taken = previous.unwrap_or(f64::INFINITY);
                for (index, c) in candidates.iter().enumerate() {
                    if let (false, Some(mb)) = (seen.contains(&index), c.freeable_mb()) {
                        prop_assert!(mb <= smallest_taken);
                    }
                }
            }
        }
    }
}
