use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What one execution of a plugin needs from the machine (the manifest's `resources`).
///
/// Non-exhaustive, as manifests may declare more needs later: build one with
/// [`Default`] (no needs) and the `with_*` methods, or set its public fields.
///
/// ```
/// use cjm_metadata::ResourceRequirements;
///
/// let needs = ResourceRequirements::default()
///     .with_gpu(4096)
///     .with_system_ram_mb(2048);
/// assert_eq!(needs.gpu_vram_mb(), 4096);
/// assert!(needs.requires_gpu);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceRequirements {
    /// Whether the plugin runs only with a GPU. GPU memory is only checked for
    /// plugins that need a GPU.
    #[serde(default)]
    pub requires_gpu: bool,
    /// GPU memory one execution needs free, in MiB (the original's "MB"); counted
    /// only when `requires_gpu`.
    #[serde(default)]
    pub min_gpu_vram_mb: u64,
    /// System memory one execution needs available, in MiB.
    #[serde(default)]
    pub min_system_ram_mb: u64,
    /// The most GPU memory one execution may be admitted with, in MiB: an
    /// execution found to need more (its learned need) is refused at once, never
    /// queued. Counted only when `requires_gpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpu_vram_mb: Option<u64>,
    /// The most system memory one execution may be admitted with, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_system_ram_mb: Option<u64>,
    /// Keys this version does not know, kept so that a manifest round-trips unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResourceRequirements {
    /// These requirements with a GPU required, and `min_gpu_vram_mb` MiB of its
    /// memory free.
    #[must_use]
    pub fn with_gpu(mut self, min_gpu_vram_mb: u64) -> Self {
        self.requires_gpu = true;
        self.min_gpu_vram_mb = min_gpu_vram_mb;
        self
    }

    /// These requirements with `min_system_ram_mb` MiB of system memory available.
    #[must_use]
    pub fn with_system_ram_mb(mut self, min_system_ram_mb: u64) -> Self {
        self.min_system_ram_mb = min_system_ram_mb;
        self
    }

    /// GPU memory that counts for scheduling, in MiB: none unless the plugin needs a
    /// GPU.
    pub fn gpu_vram_mb(&self) -> u64 {
        if self.requires_gpu {
            self.min_gpu_vram_mb
        } else {
            0
        }
    }
}
