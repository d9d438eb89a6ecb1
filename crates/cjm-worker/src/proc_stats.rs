//! `/stats`: memory of the worker's whole process tree and its own CPU load, read
//! from `/proc` (cheaper than a general process library for a worker meant to idle in
//! a few MiB).

use std::collections::HashMap;
use std::time::Instant;

use cjm_interface::wire::StatsResponse;
use cjm_interface::ConfigMap;
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
        extra,
    }
}

/// `root` and every descendant of it alive now.
pub(crate) fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(parent) =
                stat_fields(pid).and_then(|fields| fields.get(1).and_then(|f| f.parse().ok()))
            {
                children.entry(parent).or_default().push(pid);
            }
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

/// The fields of `/proc/<pid>/stat` after the command name, starting with the state
/// (field 3). The name is skipped by its closing parenthesis, since it may hold spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
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
    let fields = stat_fields(std::process::id())?;
    // utime and stime are fields 14 and 15 of stat; the slice starts at field 3.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / clock_ticks_per_second())
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
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(sampler.sample() > 10.0);
    }
}
