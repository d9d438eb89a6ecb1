//! NVIDIA GPU figures through NVML, loaded at run time: a machine without the driver
//! builds and runs the same, with GPU figures absent.

use std::collections::HashSet;
use std::sync::OnceLock;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;

use crate::{GpuProcess, GpuStats};

const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

/// One NVML session for the whole process, opened on first use. `None` when there is
/// no driver (said once, at debug level).
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(nvml) => Some(nvml),
        Err(err) => {
            tracing::debug!("no NVIDIA GPU figures (NVML unavailable: {err})");
            None
        }
    })
    .as_ref()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / BYTES_PER_MB
}

/// Every GPU NVML sees; empty without a driver. A device that cannot be read is left
/// out rather than reported with made-up figures.
pub(crate) fn devices() -> Vec<GpuStats> {
    let Some(nvml) = nvml() else {
        return Vec::new();
    };
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(err) => {
            tracing::trace!("NVML device count: {err}");
            return Vec::new();
        }
    };
    (0..count)
        .filter_map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let memory = device.memory_info().ok()?;
            Some(GpuStats {
                index,
                name: device.name().ok(),
                free_memory_mb: mb(memory.free),
                total_memory_mb: mb(memory.total),
                used_memory_mb: mb(memory.used),
                utilization_percent: device
                    .utilization_rates()
                    .ok()
                    .map(|rates| f64::from(rates.gpu)),
            })
        })
        .collect()
}

/// Every process using a GPU, once per device, with the memory the driver reports
/// for it; empty without a driver.
pub(crate) fn processes() -> Vec<GpuProcess> {
    let Some(nvml) = nvml() else {
        return Vec::new();
    };
    let Ok(count) = nvml.device_count() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        // A process with both a compute and a graphics context is listed twice with
        // the same figure: count each pid once per device.
        let mut seen = HashSet::new();
        let listed = [
            device.running_compute_processes(),
            device.running_graphics_processes(),
        ];
        for process in listed.into_iter().flatten().flatten() {
            if !seen.insert(process.pid) {
                continue;
            }
            found.push(GpuProcess {
                pid: process.pid,
                gpu_index: index,
                gpu_memory_mb: match process.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(mb(bytes)),
                    UsedGpuMemory::Unavailable => None,
                },
            });
        }
    }
    found
}

/// GPU memory used by the processes in `pids`, over all GPUs, as the driver reports
/// it. `None` without a driver, or when it reports no figure for any of them.
pub(crate) fn memory_of(pids: &HashSet<u32>) -> Option<f64> {
    nvml()?;
    processes()
        .into_iter()
        .filter(|process| pids.contains(&process.pid))
        .filter_map(|process| process.gpu_memory_mb)
        .fold(None, |total, mb| Some(total.unwrap_or(0.0) + mb))
}

/// Whether NVML could be loaded (a driver is present).
pub(crate) fn available() -> bool {
    nvml().is_some()
}
