//! What a plugin's worker holds on the GPU now, measured, and the credit it gets
//! for it at its own next admission (the successor cjm-substrate's fix for a
//! head-of-line deadlock: a worker waiting for memory that it holds itself, which
//! no eviction may take from it, waits forever).

use cjm_metadata::ResourceRequirements;
use cjm_scheduling::credit_held_gpu_memory;

use super::PluginManager;
use crate::loaded::{LoadedPlugin, Worker};

impl PluginManager {
    /// GPU memory `plugin`'s running worker (and its descendants) holds now, in MiB:
    /// as the host's stats source tells per process where it can, else as the
    /// NVIDIA driver reports it (0 for a worker it lists nowhere). `None` when it
    /// cannot be told, or no worker runs.
    pub(super) fn worker_gpu_memory_mb(&self, plugin: &LoadedPlugin) -> Option<f64> {
        let Some(Worker::Running(proxy)) = plugin.worker_now() else {
            return None;
        };
        let pid = proxy.pid()?;
        self.shared
            .options
            .stats_source
            .as_ref()
            .and_then(|source| source.process_gpu_memory_mb(pid))
            .or_else(|| {
                self.shared
                    .local_monitor
                    .as_ref()
                    .and_then(|monitor| monitor.gpu_memory_held_by_process_tree(pid))
            })
    }

    /// Take off `resources`' GPU need what `plugin`'s own running worker holds
    /// already: that memory is its own next call's to reuse, not to find free
    /// again. Only for a need the learned profile did not set (that one is
    /// credited with the worker's recorded residency already).
    pub(super) fn credit_own_gpu_memory(
        &self,
        plugin: &LoadedPlugin,
        resources: &mut ResourceRequirements,
    ) {
        if resources.gpu_vram_mb() == 0 {
            return;
        }
        let Some(held) = self.worker_gpu_memory_mb(plugin).filter(|held| *held > 0.0) else {
            return;
        };
        let declared = resources.min_gpu_vram_mb;
        let credited = credit_held_gpu_memory(resources, held);
        tracing::debug!(
            "plugin {}: its worker holds {held:.0} MiB of GPU memory already; admitted \
             by {credited} MiB of its {declared} MiB need",
            plugin.name(),
        );
    }
}
