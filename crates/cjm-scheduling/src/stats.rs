use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BoxFuture;

/// The machine's state as a scheduler sees it. Key names are the original's telemetry
/// keys (`gpu_free_memory_mb`, `memory_available_mb`); a figure the source cannot
/// measure is absent, never zero. Memory figures are in MiB (the original's "MB").
///
/// Non-exhaustive, as sources report more figures over time: made with
/// [`Default`] (nothing measured) or [`SystemStats::with_free`], then fields set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SystemStats {
    /// System memory available to new work (free plus reclaimable caches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_mb: Option<f64>,
    /// System memory in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_mb: Option<f64>,
    /// CPU load over all cores since the previous reading, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Free memory of the GPU with the most of it: one execution runs on one device,
    /// so free memory summed over several GPUs would admit what fits on none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_free_memory_mb: Option<f64>,
    /// Total memory of that same GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_total_memory_mb: Option<f64>,
    /// Every GPU the source sees, in device order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuStats>,
    /// Whatever else the source reported, kept as it came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A process using a GPU, as the driver reports it (the original's `ProcessStats`
/// fields a host reads: `pid`, `gpu_index`, `gpu_memory_mb`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// The process.
    pub pid: u32,
    /// The device it uses.
    pub gpu_index: u32,
    /// Its memory on that device, in MB; `None` where the driver does not say.
    pub gpu_memory_mb: Option<f64>,
}

/// One GPU's figures; memory in MiB.
///
/// Non-exhaustive: made with [`Default`], then fields set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GpuStats {
    /// The device's index, as the driver numbers them.
    pub index: u32,
    /// The device's name, such as `NVIDIA H200`, when the driver says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Memory free on the device.
    pub free_memory_mb: f64,
    /// The device's memory in all.
    pub total_memory_mb: f64,
    /// Memory in use on the device, by any process.
    pub used_memory_mb: f64,
    /// Percent of the last sample period in which a kernel ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
}

impl SystemStats {
    /// Figures of free GPU memory (of the roomiest GPU) and available system memory
    /// alone, in MiB; `None` for a figure not measured.
    pub fn with_free(gpu_free_memory_mb: Option<f64>, memory_available_mb: Option<f64>) -> Self {
        SystemStats {
            gpu_free_memory_mb,
            memory_available_mb,
            ..SystemStats::default()
        }
    }

    /// Set the aggregate GPU keys from `gpus`: the device with the most free memory.
    pub fn aggregate_gpus(&mut self) {
        let roomiest = self
            .gpus
            .iter()
            .max_by(|a, b| a.free_memory_mb.total_cmp(&b.free_memory_mb));
        self.gpu_free_memory_mb = roomiest.map(|gpu| gpu.free_memory_mb);
        self.gpu_total_memory_mb = roomiest.map(|gpu| gpu.total_memory_mb);
    }
}

/// Why fresh statistics could not be had.
///
/// The reason is text (a source's failure often crossed a process boundary as
/// text), said in the message; there is no [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("system statistics from {source_name} unavailable: {reason}")]
#[non_exhaustive]
pub struct StatsError {
    /// The source that failed, such as `local monitor` or `system monitor plugin
    /// sysmon`.
    pub source_name: String,
    /// What went wrong.
    pub reason: String,
}

impl StatsError {
    /// Statistics from `source_name` could not be had, because of `reason`.
    pub fn new(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        StatsError {
            source_name: source_name.into(),
            reason: reason.into(),
        }
    }
}

/// Where fresh statistics come from: the local monitor, or a plugin registered as the
/// system monitor.
pub trait StatsSource: Send + Sync + fmt::Debug {
    /// A fresh reading of the machine, or why none could be had. Schedulers call
    /// it on every admission that has needs to check, so it should be quick.
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>>;

    /// GPU memory held by process `pid` and its descendants, in MiB, where the
    /// source can tell (0 for a process it sees holding none); `None` where it
    /// cannot. Eviction sizes its victims by it.
    fn process_gpu_memory_mb(&self, _pid: u32) -> Option<f64> {
        None
    }
}

/// Statistics set by hand: for tests, benchmarks, and hosts that measure the machine
/// some other way. Clones share the same figures.
#[derive(Debug, Clone)]
pub struct ManualStats {
    current: Arc<Mutex<Result<SystemStats, String>>>,
    /// GPU memory per process, once any is set: a process not listed holds none.
    processes: Arc<Mutex<Option<std::collections::HashMap<u32, f64>>>>,
}

impl Default for ManualStats {
    fn default() -> Self {
        ManualStats::new(SystemStats::default())
    }
}

impl ManualStats {
    /// A source that reports `stats` until told otherwise.
    pub fn new(stats: SystemStats) -> Self {
        ManualStats {
            current: Arc::new(Mutex::new(Ok(stats))),
            processes: Arc::new(Mutex::new(None)),
        }
    }

    /// A source that reports only GPU and system memory free, in MiB (see
    /// [`SystemStats::with_free`]).
    pub fn with_free(gpu_free_memory_mb: Option<f64>, memory_available_mb: Option<f64>) -> Self {
        Self::new(SystemStats::with_free(
            gpu_free_memory_mb,
            memory_available_mb,
        ))
    }

    /// Report `stats` from now on (ending a [`fail`](Self::fail)).
    pub fn set(&self, stats: SystemStats) {
        *self.lock() = Ok(stats);
    }

    /// Change the figures in place.
    pub fn update(&self, change: impl FnOnce(&mut SystemStats)) {
        let mut current = self.lock();
        match &mut *current {
            Ok(stats) => change(stats),
            Err(_) => {
                let mut stats = SystemStats::default();
                change(&mut stats);
                *current = Ok(stats);
            }
        }
    }

    /// Report that process `pid` holds `mb` MiB of GPU memory (from now on, a
    /// process not set holds none).
    pub fn set_process_gpu_memory(&self, pid: u32, mb: f64) {
        self.processes
            .lock()
            .get_or_insert_default()
            .insert(pid, mb);
    }

    /// Make every following read fail with `reason`, until the next `set`.
    pub fn fail(&self, reason: impl Into<String>) {
        *self.lock() = Err(reason.into());
    }

    fn lock(&self) -> MutexGuard<'_, Result<SystemStats, String>> {
        self.current.lock()
    }
}

impl StatsSource for ManualStats {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>> {
        let current = self
            .lock()
            .clone()
            .map_err(|reason| StatsError::new("manual statistics", reason));
        Box::pin(std::future::ready(current))
    }

    fn process_gpu_memory_mb(&self, pid: u32) -> Option<f64> {
        self.processes
            .lock()
            .as_ref()
            .map(|held| held.get(&pid).copied().unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn original_keys_parse_and_unknown_ones_are_kept() {
        let stats: SystemStats = serde_json::from_value(json!({
            "gpu_free_memory_mb": 2048.5,
            "memory_available_mb": 1000,
            "gpu_temperature_c": 61
        }))
        .unwrap();
        assert_eq!(stats.gpu_free_memory_mb, Some(2048.5));
        assert_eq!(stats.memory_available_mb, Some(1000.0));
        assert_eq!(stats.extra["gpu_temperature_c"], 61);
        assert!(stats.gpus.is_empty());
        let back = serde_json::to_value(&stats).unwrap();
        assert_eq!(back["gpu_free_memory_mb"], 2048.5);
        assert!(back.get("gpus").is_none() && back.get("cpu_percent").is_none());
    }

    #[test]
    fn aggregate_keys_come_from_the_roomiest_gpu() {
        let gpu = |index, free, total| GpuStats {
            index,
            free_memory_mb: free,
            total_memory_mb: total,
            used_memory_mb: total - free,
            ..GpuStats::default()
        };
        let mut stats = SystemStats {
            gpus: vec![gpu(0, 1000.0, 8000.0), gpu(1, 5000.0, 24000.0)],
            ..SystemStats::default()
        };
        stats.aggregate_gpus();
        assert_eq!(stats.gpu_free_memory_mb, Some(5000.0));
        assert_eq!(stats.gpu_total_memory_mb, Some(24000.0));
        stats.gpus.clear();
        stats.aggregate_gpus();
        assert_eq!(stats.gpu_free_memory_mb, None);
    }

    #[tokio::test]
    async fn a_panic_inside_update_leaves_the_figures_readable() {
        let manual = ManualStats::with_free(Some(100.0), None);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            manual.update(|stats| {
                stats.gpu_free_memory_mb = Some(50.0);
                panic!("a caller's bug while the lock is held");
            })
        }));
        assert!(outcome.is_err());
        // Later readers and writers are not locked out (no poisoning): they see the
        // figures as the panicking change left them.
        let stats = manual.system_stats().await.unwrap();
        assert_eq!(stats.gpu_free_memory_mb, Some(50.0));
        manual.set(SystemStats::default());
        let stats = manual.system_stats().await.unwrap();
        assert_eq!(stats.gpu_free_memory_mb, None);
    }
}
