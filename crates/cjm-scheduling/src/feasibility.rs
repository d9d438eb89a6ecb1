//! Executions that can never be admitted: they need more than the machine has in
//! all, or more than the plugin's declared limit. No release of memory can admit
//! them, so every policy refuses them at once rather than letting them wait.

use std::fmt;

use cjm_metadata::ResourceRequirements;

use crate::{Demand, Resource, SystemStats};

/// What bounds what is available, for a never-admissible execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bound {
    /// The machine's total (of its largest GPU, for GPU memory).
    MachineTotal,
    /// The plugin's manifest (`max_gpu_vram_mb`, `max_system_ram_mb`).
    DeclaredLimit,
}

/// One resource an execution needs more of than there can ever be.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Impossible {
    /// The resource.
    pub resource: Resource,
    /// What the execution needs, in MiB.
    pub needed_mb: u64,
    /// The most there can be, in MiB.
    pub available_mb: f64,
    /// What sets that most.
    pub bound: Bound,
}

impl fmt::Display for Impossible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = match self.bound {
            Bound::MachineTotal => "the machine's total",
            Bound::DeclaredLimit => "the plugin's declared limit",
        };
        write!(
            f,
            "{} needed {} MB, available {:.0} MB ({bound})",
            self.resource, self.needed_mb, self.available_mb
        )
    }
}

/// What `resources` (the need, learned or declared, and the declared limits) asks
/// that no amount of waiting gives on the machine `stats` describes; empty when
/// it could be admitted some day. A total the source does not report bounds
/// nothing.
pub fn never_admissible(resources: &ResourceRequirements, stats: &SystemStats) -> Vec<Impossible> {
    let demand = Demand::of(resources);
    let mut found = Vec::new();
    let mut check = |resource, needed_mb: u64, limit: Option<u64>, total: Option<f64>| {
        if needed_mb == 0 {
            return;
        }
        if let Some(limit) = limit.filter(|&limit| needed_mb > limit) {
            found.push(Impossible {
                resource,
                needed_mb,
                available_mb: limit as f64,
                bound: Bound::DeclaredLimit,
            });
        } else if let Some(total) = total.filter(|&total| needed_mb as f64 > total) {
            found.push(Impossible {
                resource,
                needed_mb,
                available_mb: total,
                bound: Bound::MachineTotal,
            });
        }
    };
    if demand.requires_gpu {
        check(
            Resource::GpuMemory,
            demand.gpu_vram_mb,
            resources.max_gpu_vram_mb,
            largest_gpu_mb(stats),
        );
    }
    check(
        Resource::SystemMemory,
        demand.system_ram_mb,
        resources.max_system_ram_mb,
        stats.memory_total_mb,
    );
    found
}

/// The memory of the largest GPU: one execution runs on one device.
fn largest_gpu_mb(stats: &SystemStats) -> Option<f64> {
    stats
        .gpus
        .iter()
        .map(|gpu| gpu.total_memory_mb)
        .chain(stats.gpu_total_memory_mb)
        .max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn machine(gpu_total: Option<f64>, ram_total: Option<f64>) -> SystemStats {
        SystemStats {
            gpu_total_memory_mb: gpu_total,
            memory_total_mb: ram_total,
            // Free figures play no part: memory in use now is a wait, not a refusal.
            gpu_free_memory_mb: Some(0.0),
            memory_available_mb: Some(0.0),
            ..SystemStats::default()
        }
    }

    #[test]
    fn more_than_the_machine_or_the_limit_is_named() {
        let stats = machine(Some(24_000.0), Some(64_000.0));
        let needs = ResourceRequirements::default().with_gpu(30_000);
        let found = never_admissible(&needs, &stats);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "GPU memory needed 30000 MB, available 24000 MB (the machine's total)"
        );
        let mut limited = ResourceRequirements::default().with_system_ram_mb(9000);
        limited.max_system_ram_mb = Some(8000);
        assert_eq!(
            never_admissible(&limited, &stats)[0].to_string(),
            "system memory needed 9000 MB, available 8000 MB (the plugin's declared limit)"
        );
        // What fits the machine but not what is free now is not impossible.
        let fits = ResourceRequirements::default().with_gpu(24_000);
        assert!(never_admissible(&fits, &stats).is_empty());
        // No total reported: nothing is known to be impossible.
        assert!(never_admissible(&needs, &machine(None, None)).is_empty());
    }

    proptest! {
        #[test]
        fn refused_exactly_when_the_need_exceeds_the_total_or_the_limit(
            need in 0u64..100_000,
            total in prop::option::of(1.0f64..100_000.0),
            limit in prop::option::of(0u64..100_000),
            gpu in any::<bool>(),
        ) {
            let mut needs = if gpu {
                ResourceRequirements::default().with_gpu(need)
            } else {
                ResourceRequirements::default().with_system_ram_mb(need)
            };
            let stats = if gpu {
                needs.max_gpu_vram_mb = limit;
                machine(total, None)
            } else {
                needs.max_system_ram_mb = limit;
                machine(None, total)
            };
            let found = never_admissible(&needs, &stats);
            let over_limit = need > 0 && limit.is_some_and(|limit| need > limit);
            let over_total = need > 0 && total.is_some_and(|total| need as f64 > total);
            prop_assert_eq!(!found.is_empty(), over_limit || over_total);
            for impossible in &found {
                prop_assert_eq!(impossible.needed_mb, need);
                prop_assert!(impossible.needed_mb as f64 > impossible.available_mb);
                let text = impossible.to_string();
                prop_assert!(text.contains(&format!("needed {need} MB")), "{}", text);
            }
        }
    }
}
