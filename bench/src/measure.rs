//! Turning samples into the figures the report shows.

use std::time::Duration;

use procfs_core::process::{SmapsRollup, Stat, StatM};
use procfs_core::FromRead;

/// Median and 99th percentile of `samples`, in microseconds.
pub fn percentiles_us(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort();
    let at = |fraction: f64| {
        let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
        samples[index].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

pub fn median_ms(samples: Vec<Duration>) -> f64 {
    percentiles_us(samples).0 / 1000.0
}

/// Resident memory of a process, from /proc.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let statm = StatM::from_file(format!("/proc/{pid}/statm")).ok()?;
    let page = rustix::param::page_size() as f64;
    Some(statm.resident as f64 * page / (1024.0 * 1024.0))
}

/// Memory of `pid` that is its own: anonymous pages (heap, stacks, relocated data),
/// not the code and read-only data it shares with the page cache and with every other
/// process running the same binary. What one more worker really costs.
pub fn anonymous_mib(pid: u32) -> Option<f64> {
    let rollup = SmapsRollup::from_file(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let bytes = rollup
        .memory_map_rollup
        .iter()
        .filter_map(|map| map.extension.map.get("Anonymous"))
        .sum::<u64>();
    Some(bytes as f64 / (1024.0 * 1024.0))
}

/// Whether `pid` is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    Stat::from_file(format!("/proc/{pid}/stat")).is_ok_and(|stat| !matches!(stat.state, 'Z' | 'X'))
}
