//! `/stats`: memory of the worker's whole process tree and its own CPU load, read
//! from `/proc` (with procfs-core's parsers: cheaper than a general process library
//! for a worker meant to idle in a few MiB).

use std::collections::HashMap;
use std::time::Instant;

use cjm_interface::wire::StatsResponse;
use cjm_interface::ConfigMap;
use procfs_core::process::{Stat, StatM};
use procfs_core::FromRead;
use serde_json::Value;

const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

pub(crate) fn worker_stats(cpu_percent: f64) -> StatsResponse {
    let pid = std::process::id();
    let tree = process_tree(pid);
    let rss_bytes: u64 = tree.iter().filter_map(|&pid| rss_bytes(pid)).sum();
    let mut extra = ConfigMap::new();
    extra.insert(String::from("process_count"), Value::from(tree.len()));
    StatsResponse {
        pid,
        cpu_percent,
        memory_rss_mb: rss_bytes as f64 / BYTES_PER_MB,
        subtree_pids: Some(tree),
        usage: None,
        extra,
    }
}

/// `root` and every descendant of it alive now.
pub(crate) fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, stat) in all_processes() {
        if let Ok(parent) = u32::try_from(stat.ppid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids);
        }
        next += 1;
    }
    tree
}

/// Every process visible in `/proc` now, with its `stat`.
fn all_processes() -> impl Iterator<Item = (u32, Stat)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
}

/// `/proc/<pid>/stat`, `None` once the process is gone.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    Stat::from_file(format!("/proc/{pid}/stat")).ok()
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = StatM::from_file(format!("/proc/{pid}/statm")).ok()?;
    Some(statm.resident * rustix::param::page_size() as u64)
}

fn clock_ticks_per_second() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        ticks => ticks as f64,
    }
}

/// CPU load of this process since the previous sample, in percent of one core (as
/// psutil's `cpu_percent()` reports it); the first sample reports 0.
pub(crate) struct CpuSampler {
    previous: Option<(Instant, f64)>,
}

impl CpuSampler {
    pub(crate) fn new() -> Self {
        CpuSampler { previous: None }
    }

    pub(crate) fn sample(&mut self) -> f64 {
        let now = Instant::now();
        let Some(cpu_seconds) = own_cpu_seconds() else {
            return 0.0;
        };
        let percent = match self.previous {
            Some((then, previous_seconds)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    ((cpu_seconds - previous_seconds) / wall * 100.0).max(0.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.previous = Some((now, cpu_seconds));
        percent
    }
}

fn own_cpu_seconds() -> Option<f64> {
    let stat = stat(std::process::id())?;
    Some((stat.utime + stat.stime) as f64 / clock_ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_includes_children_and_their_memory() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(std::process::id());
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()), "{tree:?} lacks {}", child.id());
        let own = rss_bytes(std::process::id()).unwrap();
        let stats = worker_stats(0.0);
        assert!(stats.memory_rss_mb * BYTES_PER_MB >= own as f64);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn cpu_sampler_sees_work() {
        let mut sampler = CpuSampler::new();
        assert_eq!(sampler.sample(), 0.0);
        // Work until the kernel has counted 50 ms of this process's CPU time, however
        // long a busy machine takes to give it that (wall time says nothing here).
        let before = own_cpu_seconds().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let mut x = 0u64;
        while own_cpu_seconds().unwrap() - before < 0.05 {
            assert!(Instant::now() < deadline, "no CPU time counted in 60 s");
            for _ in 0..10_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
        }
        std::hint::black_box(x);
        let percent = sampler.sample();
        assert!(percent > 0.0, "{percent}");
    }
}
