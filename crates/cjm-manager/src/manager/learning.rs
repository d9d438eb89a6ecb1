//! Learned resource profiles: what each call was seen to use, recorded however the
//! call ended, and admission by the larger of a manifest's declaration and that.
//!
//! A call's peak memory is the larger of its worker's process tree's resident memory
//! as `/stats` reports it at the call's end, and (for a worker on this machine) the
//! worker process's high-water mark (`VmHWM`), which is reset after each reading so
//! that it covers the calls since the last one. GPU memory is the driver's figure
//! for the worker's process tree at the call's end.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use cjm_metadata::ResourceRequirements;
use cjm_proxy::RemotePluginProxy;

use super::{PluginManager, Shared};
use crate::loaded::{ExecutionEnd, LoadedPlugin, OnEnd};
use crate::store::{Resident, ResourceProfile, Sample};
use crate::ManagerError;

/// How long a sample waits for the worker's `/stats`.
const STATS_LIMIT: Duration = Duration::from_secs(2);

/// A plugin's worker is asked `/stats` at most this often for samples: a plugin
/// called in a tight loop would otherwise see its every call followed by one. The
/// high-water mark covers the calls in between.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// # Learned resource profiles
///
/// What the calls of each plugin (or instance), on each configuration, were seen to
/// use: peak memory, GPU memory and duration, as running aggregates kept in
/// `CJM_HOME/host.sqlite3` (see [`ManagerOptions::learn_profiles`]). With
/// [`ManagerOptions::admit_by_learned_profiles`], a call is admitted by the larger
/// of its manifest's declaration and what its calls were seen to use beyond what its
/// running worker already holds; eviction counts a plugin seen using GPU memory as a
/// GPU plugin even where its manifest does not say so.
///
/// [`ManagerOptions::learn_profiles`]: crate::ManagerOptions::learn_profiles
/// [`ManagerOptions::admit_by_learned_profiles`]: crate::ManagerOptions::admit_by_learned_profiles
impl PluginManager {
    /// Every profile kept, this host's calls and those of other hosts on the same
    /// `CJM_HOME`, by plugin and configuration fingerprint; empty when nothing is
    /// kept.
    pub async fn resource_profiles(&self) -> Result<Vec<ResourceProfile>, ManagerError> {
        match &self.shared.store {
            Some(store) => Ok(store.all_profiles().await?),
            None => Ok(Vec::new()),
        }
    }

    /// The profile admission uses for a loaded plugin's next call: the one of its
    /// current configuration, as this host knows it.
    pub fn learned_profile(&self, name: &str) -> Result<Option<ResourceProfile>, ManagerError> {
        let plugin = self.loaded(name)?;
        Ok(self
            .shared
            .store
            .as_ref()
            .and_then(|store| store.learned(name, &plugin.config_fingerprint())))
    }
}

impl PluginManager {
    /// Raise `resources` to what `plugin`'s calls on its configuration were seen to
    /// use, less what its running worker already holds (that memory is no longer
    /// free, and the scheduler must not count it twice). Whether it set the GPU
    /// need.
    pub(super) fn raise_to_learned(
        &self,
        plugin: &LoadedPlugin,
        resources: &mut ResourceRequirements,
    ) -> bool {
        if !self.shared.options.admit_by_learned_profiles {
            return false;
        }
        let Some(store) = &self.shared.store else {
            return false;
        };
        let Some(profile) = store.learned(plugin.name(), &plugin.config_fingerprint()) else {
            return false;
        };
        let held = plugin
            .proxy()
            .filter(|proxy| proxy.is_running())
            .and_then(|proxy| proxy.pid())
            .and_then(|pid| store.resident(plugin.name()).filter(|held| held.pid == pid));
        let (rss_held, gpu_held) = held.map_or((0.0, 0.0), |held| (held.rss_mb, held.gpu_mb));
        let ram = mib(profile.peak_rss_mb.max - rss_held);
        if ram > resources.min_system_ram_mb {
            tracing::debug!(
                "plugin {}: admitted by its learned need of {ram} MiB of memory (declared {})",
                plugin.name(),
                resources.min_system_ram_mb
            );
            resources.min_system_ram_mb = ram;
        }
        let gpu = mib(profile.gpu_memory_mb.max - gpu_held);
        if gpu > resources.gpu_vram_mb() {
            tracing::debug!(
                "plugin {}: admitted by its learned need of {gpu} MiB of GPU memory (declared {})",
                plugin.name(),
                resources.gpu_vram_mb()
            );
            // GPU memory in use is a GPU in use, whatever the manifest says.
            resources.requires_gpu = true;
            resources.min_gpu_vram_mb = gpu;
            return true;
        }
        false
    }

    /// Whether `name`'s calls were seen using GPU memory.
    pub(super) fn seen_using_gpu(&self, name: &str) -> bool {
        self.shared
            .store
            .as_ref()
            .is_some_and(|store| store.used_gpu(name))
    }

    /// What records an execution of `plugin` when it ends; `None` when nothing is
    /// learned.
    pub(super) fn call_recorder(&self, plugin: &Arc<LoadedPlugin>) -> Option<OnEnd> {
        if !self.shared.options.learn_profiles || self.shared.store.is_none() {
            return None;
        }
        let shared = Arc::downgrade(&self.shared);
        let plugin = Arc::clone(plugin);
        let fingerprint = plugin.config_fingerprint();
        Some(OnEnd(Box::new(move |end: ExecutionEnd| {
            let sample = Sample::new(
                plugin.name(),
                &fingerprint,
                end.succeeded,
                end.duration.as_secs_f64(),
            );
            record_call(&shared, &plugin, sample);
        })))
    }
}

/// From an execution's `Drop`: record `sample` now, or have a task measure what the
/// worker holds first. Never blocks, never panics.
fn record_call(shared: &Weak<Shared>, plugin: &Arc<LoadedPlugin>, sample: Sample) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let Some(store) = &strong.store else {
        return;
    };
    let proxy = plugin.proxy().filter(|proxy| proxy.is_running());
    let runtime = tokio::runtime::Handle::try_current();
    match (proxy, runtime) {
        (Some(proxy), Ok(runtime)) if store.begin_sampling(plugin.name()) => {
            let sampling = Sampling {
                shared: Weak::clone(shared),
                plugin: plugin.name().to_owned(),
                sample: Some(sample),
            };
            let plugin = Arc::clone(plugin);
            runtime.spawn(measure(sampling, plugin, proxy));
        }
        _ => store.record(sample),
    }
}

/// A sample being measured. Dropped before it is done (its runtime shutting down),
/// it records the call without the measurements, and frees the plugin's turn.
struct Sampling {
    shared: Weak<Shared>,
    plugin: String,
    sample: Option<Sample>,
}

impl Sampling {
    /// Record the call with its measurements (the plugin's turn stays taken until
    /// this is dropped).
    fn finish(&mut self, peak_rss_mb: Option<f64>, gpu_memory_mb: Option<f64>) {
        let Some(mut sample) = self.sample.take() else {
            return;
        };
        sample.peak_rss_mb = peak_rss_mb;
        sample.gpu_memory_mb = gpu_memory_mb;
        if let Some(shared) = self.shared.upgrade() {
            if let Some(store) = &shared.store {
                store.record(sample);
            }
        }
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(store) = &shared.store else {
            return;
        };
        if let Some(sample) = self.sample.take() {
            store.record(sample);
        }
        store.end_sampling(&self.plugin);
    }
}

async fn measure(mut sampling: Sampling, plugin: Arc<LoadedPlugin>, proxy: Arc<RemotePluginProxy>) {
    let began = Instant::now();
    let rss_now = match tokio::time::timeout(STATS_LIMIT, proxy.stats()).await {
        Ok(Ok(stats)) => Some(stats.memory_rss_mb),
        Ok(Err(err)) => {
            tracing::debug!("plugin {}: no /stats for its profile: {err}", plugin.name());
            None
        }
        Err(_) => None,
    };
    let pid = proxy.pid();
    let monitor = sampling
        .shared
        .upgrade()
        .and_then(|shared| shared.local_monitor.clone());
    let (high_water, gpu) = match pid {
        Some(pid) => tokio::task::spawn_blocking(move || {
            (
                high_water_mb(pid),
                monitor.and_then(|monitor| monitor.gpu_memory_of_process_tree(pid)),
            )
        })
        .await
        .unwrap_or((None, None)),
        None => (None, None),
    };
    let peak = match (rss_now, high_water) {
        (Some(now), Some(high)) => Some(now.max(high)),
        (now, high) => now.or(high),
    };
    // What the worker holds between calls, read only when no other call of it runs
    // (that one's memory is not the worker's to keep).
    if let (Some(pid), Some(rss_mb), 0) = (pid, rss_now, plugin.active_executions()) {
        if let Some(shared) = sampling.shared.upgrade() {
            if let Some(store) = &shared.store {
                store.set_resident(
                    plugin.name(),
                    Resident {
                        pid,
                        rss_mb,
                        gpu_mb: gpu.unwrap_or(0.0),
                    },
                );
            }
        }
    }
    sampling.finish(peak, gpu);
    // Keep this plugin's turn a little, so that samples come at most so often; the
    // turn ends when `sampling` is dropped, here or wherever this task stops.
    if let Some(rest) = SAMPLE_EVERY.checked_sub(began.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    drop(sampling);
}

/// The process's resident high-water mark in MiB, reset for the next reading (Linux:
/// `VmHWM`, reset by writing 5 to `clear_refs`); `None` where it cannot be read.
fn high_water_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    if let Err(err) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        tracing::debug!("cannot reset the high-water mark of process {pid}: {err}");
    }
    Some(kib / 1024.0)
}

/// Whole MiB, rounded up; nothing for a negative figure.
fn mib(figure: f64) -> u64 {
    if figure.is_finite() && figure > 0.0 {
        figure.ceil() as u64
    } else {
        0
    }
}
