use std::fmt;
use std::sync::Mutex;

use sysinfo::{MemoryRefreshKind, RefreshKind, System};

use crate::{BoxFuture, StatsError, StatsSource, SystemStats};

const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

/// Telemetry of this machine, read directly: memory and CPU through `sysinfo`.
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
        .map_err(|err| StatsError {
            source_name: String::from("local monitor"),
            reason: err.to_string(),
        })?;
        Ok(LocalMonitor {
            system: Mutex::new(system),
        })
    }

    /// A fresh reading. CPU load is measured since the previous reading, so the first
    /// one reports none.
    pub fn snapshot(&self) -> SystemStats {
        let mut system = match self.system.lock() {
            Ok(system) => system,
            Err(poisoned) => poisoned.into_inner(),
        };
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let had_cpu_reading = !system.cpus().is_empty();
        system.refresh_cpu_usage();
        SystemStats {
            memory_available_mb: Some(system.available_memory() as f64 / BYTES_PER_MB),
            memory_total_mb: Some(system.total_memory() as f64 / BYTES_PER_MB),
            cpu_percent: had_cpu_reading.then(|| f64::from(system.global_cpu_usage())),
            ..SystemStats::default()
        }
    }
}

impl StatsSource for LocalMonitor {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>> {
        Box::pin(std::future::ready(Ok(self.snapshot())))
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(first.gpu_free_memory_mb, None);
        assert!(monitor.snapshot().cpu_percent.is_some());
    }
}
