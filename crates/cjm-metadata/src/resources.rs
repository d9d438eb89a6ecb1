use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What one execution of a plugin needs from the machine (the manifest's `resources`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    /// GPU memory is only checked for plugins that need a GPU.
    #[serde(default)]
    pub requires_gpu: bool,
    #[serde(default)]
    pub min_gpu_vram_mb: u64,
    #[serde(default)]
    pub min_system_ram_mb: u64,
    /// Keys this version does not know, kept so that a manifest round-trips unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResourceRequirements {
    /// GPU memory that counts for scheduling: none unless the plugin needs a GPU.
    pub fn gpu_vram_mb(&self) -> u64 {
        if self.requires_gpu {
            self.min_gpu_vram_mb
        } else {
            0
        }
    }
}
