use std::collections::{HashMap, HashSet};
use std::fmt;

use parking_lot::{Mutex, MutexGuard};
use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

use crate::{gpu, BoxFuture, StatsError, StatsSource, SystemStats};

const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

/// Telemetry of this machine, read directly: memory and CPU through `sysinfo`, NVIDIA
/// GPUs through NVML (loaded on first use; absent figures without a driver).
pub struct LocalMonitor {
    system: Mutex<System>,
}

impl fmt::Debug for LocalMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMonitor").finish_non_exhaustive()
    }
}

impl LocalMonitor {
    /// Fails only where the platform offers no way to read memory figures.
    pub fn new() -> Result<Self, StatsError> {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .map_err(|err| StatsError::new("local monitor", err.to_string()))?;
        Ok(LocalMonitor {
            system: Mutex::new(system),
        })
    }

    fn system(&self) -> MutexGuard<'_, System> {
        self.system.lock()
    }

    /// A fresh reading. CPU load is measured since the previous reading, so the first
    /// one reports none.
    pub fn snapshot(&self) -> SystemStats {
        let mut stats = {
            let mut system = self.system();
            system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            let had_cpu_reading = !system.cpus().is_empty();
            system.refresh_cpu_usage();
            SystemStats {
                memory_available_mb: Some(system.available_memory() as f64 / BYTES_PER_MB),
                memory_total_mb: Some(system.total_memory() as f64 / BYTES_PER_MB),
                cpu_percent: had_cpu_reading.then(|| f64::from(system.global_cpu_usage())),
                ..SystemStats::default()
            }
        };
        stats.gpus = gpu::devices();
        stats.aggregate_gpus();
        stats
    }

    /// Whether NVIDIA GPU figures can be read on this machine.
    pub fn has_gpu_driver(&self) -> bool {
        gpu::available()
    }

    /// GPU memory used by the process `root` and all its descendants, summed over
    /// every GPU, in MB. `None` without a driver or where the driver reports no figure
    /// for any process of the tree.
    pub fn gpu_memory_of_process_tree(&self, root: u32) -> Option<f64> {
        if !gpu::available() {
            return None;
        }
        gpu::memory_of(&self.process_tree(root))
    }

    /// [`gpu_memory_of_process_tree`](Self::gpu_memory_of_process_tree), with a
    /// tree the driver lists nowhere holding none (0) rather than unknown; `None`
    /// only without a driver.
    pub fn gpu_memory_held_by_process_tree(&self, root: u32) -> Option<f64> {
        if !gpu::available() {
            return None;
        }
        Some(gpu::memory_of(&self.process_tree(root)).unwrap_or(0.0))
    }

    /// Every process using a GPU, with its device and the memory the driver reports
    /// for it (what a monitor plugin's `list_processes` answers); empty without a
    /// driver.
    pub fn gpu_processes(&self) -> Vec<crate::GpuProcess> {
        gpu::processes()
    }

    /// `root` and every process descending from it.
    pub fn process_tree(&self, root: u32) -> HashSet<u32> {
        let mut system = self.system();
        system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing(),
        );
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, process) in system.processes() {
            if let Some(parent) = process.parent() {
                children
                    .entry(parent.as_u32())
                    .or_default()
                    .push(pid.as_u32());
            }
        }
        let mut tree = HashSet::new();
        let mut pending = vec![root];
        while let Some(pid) = pending.pop() {
            if tree.insert(pid) {
                pending.extend(children.get(&pid).into_iter().flatten().copied());
            }
        }
        // Keep the process table from growing with processes we never look at again.
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[Pid::from_u32(root)]),
            true,
            ProcessRefreshKind::nothing(),
        );
        tree
    }
}

impl StatsSource for LocalMonitor {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>> {
        Box::pin(std::future::ready(Ok(self.snapshot())))
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn reports_real_memory_figures() {
        let monitor = LocalMonitor::new().unwrap();
        let first = monitor.snapshot();
        let total = first.memory_total_mb.unwrap();
        let available = first.memory_available_mb.unwrap();
        assert!(total > 100.0, "total {total}");
        assert!(
            available > 0.0 && available <= total,
            "{available} of {total}"
        );
        assert!(monitor.snapshot().cpu_percent.is_some());
    }

    #[test]
    fn gpu_figures_are_present_exactly_when_a_driver_is() {
        let monitor = LocalMonitor::new().unwrap();
        let stats = monitor.snapshot();
        if monitor.has_gpu_driver() {
            assert!(!stats.gpus.is_empty());
            let free = stats.gpu_free_memory_mb.unwrap();
            let total = stats.gpu_total_memory_mb.unwrap();
            assert!(free >= 0.0 && free <= total, "{free} of {total}");
            for gpu in &stats.gpus {
                let sum = gpu.free_memory_mb + gpu.used_memory_mb;
                assert!(sum <= gpu.total_memory_mb + 1.0, "{gpu:?}");
            }
        } else {
            assert!(stats.gpus.is_empty());
            assert_eq!(stats.gpu_free_memory_mb, None);
            assert_eq!(stats.gpu_total_memory_mb, None);
            assert_eq!(monitor.gpu_memory_of_process_tree(std::process::id()), None);
        }
        let json = serde_json::to_value(&stats).unwrap();
        assert!(json.get("memory_available_mb").is_some());
        assert_eq!(
            json.get("gpu_free_memory_mb").is_some(),
            monitor.has_gpu_driver()
        );
    }

    #[test]
    fn process_tree_holds_the_root_and_its_children() {
        let monitor = LocalMonitor::new().unwrap();
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let tree = monitor.process_tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(tree.contains(&std::process::id()));
        assert!(tree.contains(&child.id()), "{tree:?}");
    }
}
