//! Our scheduler's rules against the successor's own code, on the same inputs:
//! cjm-substrate 0.0.74's `evict_idle_gpu` (the victims, in order) and its queue's
//! `_pop_next_admissible` (never admissible; admitted now with the self-residency
//! credit), run by tests/fixtures/substrate/scheduler_rules.py through the venv's
//! Python, against `plan_eviction`, `never_admissible` and
//! `credit_held_gpu_memory`.

use std::io::Write;
use std::process::{Command, Stdio};

use cjm_metadata::ResourceRequirements;
use cjm_scheduling::{
    credit_held_gpu_memory, never_admissible, plan_eviction, Demand, EvictionCandidate, SystemStats,
};
use serde_json::{json, Value};

use crate::python_env::{python_substrate_or_skip, workspace_root};

/// A small deterministic generator (xorshift), so that a failure reruns the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Whole MiB, with the edges of the rules (the 64 MB floor) often.
    fn mb(&mut self, most: u64) -> f64 {
        const EDGES: [f64; 6] = [0.0, 10.0, 63.0, 64.0, 65.0, 4000.0];
        if self.chance(25) {
            EDGES[self.below(EDGES.len() as u64) as usize]
        } else {
            self.below(most) as f64
        }
    }
}

fn eviction_case(rng: &mut Rng) -> (f64, Vec<EvictionCandidate>) {
    let count = rng.below(9);
    let mut candidates: Vec<EvictionCandidate> = (0..count)
        .map(|i| {
            let measured = if rng.chance(20) {
                None
            } else {
                Some(rng.mb(20_000))
            };
            let mut candidate = EvictionCandidate::new(format!("p{i}"), measured);
            candidate.estimated_mb = if rng.chance(50) { 0.0 } else { rng.mb(20_000) };
            // Few distinct times: ties in size and time both happen.
            candidate.last_used = rng.below(4) as f64;
            candidate.busy = rng.chance(15);
            candidate.pending_target = rng.chance(15);
            candidate
        })
        .collect();
    // In our order among equals, as the Python side is given them.
    candidates.sort_by(|a, b| {
        a.last_used
            .total_cmp(&b.last_used)
            .then_with(|| a.name.cmp(&b.name))
    });
    (rng.below(40_000) as f64, candidates)
}

struct AdmissionCase {
    peak_mb: u64,
    own_mb: Option<u64>,
    free_mb: u64,
    total_mb: u64,
}

impl AdmissionCase {
    /// (never admissible, admitted now) by our rules.
    fn ours(&self) -> (bool, bool) {
        let mut stats = SystemStats::with_free(Some(self.free_mb as f64), None);
        stats.gpu_total_memory_mb = Some(self.total_mb as f64);
        let mut needs = ResourceRequirements::default().with_gpu(self.peak_mb);
        if !never_admissible(&needs, &stats).is_empty() {
            return (true, false);
        }
        if let Some(own) = self.own_mb {
            credit_held_gpu_memory(&mut needs, own as f64);
        }
        let short = Demand::of(&needs).shortfalls(&stats, Demand::default());
        (false, short.is_empty())
    }
}

#[test]
fn our_choices_are_the_successors_on_the_same_inputs() {
    let Some(python) = python_substrate_or_skip() else {
        return;
    };
    let mut rng = Rng(0x5eed_2026_0074);
    let evictions: Vec<(f64, Vec<EvictionCandidate>)> =
        (0..400).map(|_| eviction_case(&mut rng)).collect();
    let admissions: Vec<AdmissionCase> = (0..400)
        .map(|_| {
            let peak_mb = 1 + rng.below(40_000);
            AdmissionCase {
                peak_mb,
                own_mb: rng.chance(50).then(|| rng.below(peak_mb + 2_000)),
                free_mb: rng.below(30_000),
                total_mb: 1_000 + rng.below(40_000),
            }
        })
        .collect();
    let input = json!({
        "evictions": evictions.iter().map(|(shortfall, candidates)| json!({
            "shortfall_mb": shortfall,
            "candidates": candidates.iter().map(|c| json!({
                "name": c.name,
                "measured_mb": c.measured_mb,
                "estimated_mb": c.estimated_mb,
                "last_used": c.last_used,
                "busy": c.busy,
                "pending_target": c.pending_target,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "admissions": admissions.iter().map(|case| json!({
            "peak_mb": case.peak_mb as f64,
            "own_mb": case.own_mb.map(|mb| mb as f64),
            "free_mb": case.free_mb as f64,
            "total_mb": case.total_mb as f64,
        })).collect::<Vec<_>>(),
    });
    let script = workspace_root().join("tests/fixtures/substrate/scheduler_rules.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Value = serde_json::from_slice(&output.stdout).unwrap();

    let mut stopped_any = 0;
    for (index, (shortfall, candidates)) in evictions.iter().enumerate() {
        let plan = plan_eviction(*shortfall, candidates);
        let ours: Vec<&str> = plan
            .victims
            .iter()
            .map(|&i| candidates[i].name.as_str())
            .collect();
        let their_victims: Vec<&str> = theirs["evictions"][index]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        assert_eq!(
            ours, their_victims,
            "case {index}: {shortfall} MB short of {candidates:#?}"
        );
        stopped_any += usize::from(!ours.is_empty());
    }
    let (mut never, mut admitted) = (0, 0);
    for (index, case) in admissions.iter().enumerate() {
        let their = &theirs["admissions"][index];
        let ours = case.ours();
        assert_eq!(
            (ours.0, ours.1),
            (
                their["never"].as_bool().unwrap(),
                their["admitted"].as_bool().unwrap()
            ),
            "case {index}: peak {} own {:?} free {} total {}",
            case.peak_mb,
            case.own_mb,
            case.free_mb,
            case.total_mb
        );
        never += usize::from(ours.0);
        admitted += usize::from(ours.1);
    }
    // The cases reach every branch, not only the easy ones.
    assert!(stopped_any > 100, "{stopped_any}");
    assert!(never > 50 && admitted > 50, "{never} {admitted}");
    assert!(admissions.len() - never - admitted > 50);
}
