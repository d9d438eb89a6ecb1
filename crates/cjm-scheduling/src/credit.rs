//! A worker's own GPU memory, credited at its next admission (the successor
//! cjm-substrate's fix for a head-of-line deadlock: a worker that keeps its model
//! loaded waits for free memory that it holds itself, which no eviction may take
//! from it, for ever).

use cjm_metadata::ResourceRequirements;

/// Take `held_mb`, the GPU memory the plugin's own worker holds now, off the GPU
/// need in `resources`: its next call reuses that memory rather than finding it
/// free again. The need that is left, in MiB.
pub fn credit_held_gpu_memory(resources: &mut ResourceRequirements, held_mb: f64) -> u64 {
    if held_mb > 0.0 && resources.requires_gpu {
        // Whole MiB held, so that the credit never exceeds what is held.
        resources.min_gpu_vram_mb = resources.min_gpu_vram_mb.saturating_sub(held_mb as u64);
    }
    resources.gpu_vram_mb()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_held_is_credited_and_never_below_nothing() {
        let mut needs = ResourceRequirements::default().with_gpu(5000);
        assert_eq!(credit_held_gpu_memory(&mut needs, 4000.7), 1000);
        assert_eq!(credit_held_gpu_memory(&mut needs, 9000.0), 0);
        assert!(needs.requires_gpu, "a GPU is still needed");
        let mut cpu = ResourceRequirements::default();
        cpu.min_gpu_vram_mb = 800;
        assert_eq!(credit_held_gpu_memory(&mut cpu, 500.0), 0);
        assert_eq!(
            cpu.min_gpu_vram_mb, 800,
            "GPU memory counts only with a GPU"
        );
    }
}
