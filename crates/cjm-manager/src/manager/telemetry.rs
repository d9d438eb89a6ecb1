//! Resources and telemetry: what a plugin's worker uses, and where the scheduler's
//! figures come from (a registered system monitor plugin, the configured source, or
//! the built-in local monitor).

use cjm_interface::wire::StatsResponse;
use cjm_interface::CallArgs;
use cjm_scheduling::{BoxFuture, StatsError, StatsSource, SystemStats};
use serde_json::Value;

use super::PluginManager;
use crate::{ManagerError, ProxyError};

/// What a system monitor plugin is asked, as the original asks it.
const GET_SYSTEM_STATUS: &str = "get_system_status";

/// The manager's current source of statistics, as the scheduler sees it.
#[derive(Debug)]
pub(super) struct ManagerStats<'a> {
    pub(super) manager: &'a PluginManager,
    /// The last reading the scheduler got through this source: what it admitted by.
    seen: parking_lot::Mutex<Option<SystemStats>>,
}

impl ManagerStats<'_> {
    /// The last reading taken through this source, if any was.
    pub(super) fn seen(&self) -> Option<SystemStats> {
        self.seen.lock().clone()
    }
}

impl StatsSource for ManagerStats<'_> {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>> {
        Box::pin(async move {
            let read = self.manager.read_system_stats().await;
            if let Ok(stats) = &read {
                *self.seen.lock() = Some(stats.clone());
            }
            read
        })
    }
}

/// # Resources and telemetry
///
/// What a plugin's worker uses (memory, CPU, GPU memory), the figures the scheduler
/// admits calls by, and which plugin, if any, supplies them. Admission and eviction
/// themselves have no methods: [`ManagerOptions`](crate::ManagerOptions) sets their
/// scheduler and limits, and every call goes through them.
impl PluginManager {
    /// Memory and CPU of the plugin's worker process tree, and (as `restarts` among
    /// the extra fields) how often the restart policy has restarted it.
    pub async fn plugin_stats(&self, name: &str) -> Result<StatsResponse, ManagerError> {
        let plugin = self.loaded(name)?;
        let mut stats = self.running_worker(name).await?.stats().await?;
        stats
            .extra
            .insert(String::from("restarts"), Value::from(plugin.restarts()));
        Ok(stats)
    }

    /// Make a loaded plugin the source of the scheduler's figures: before admissions,
    /// it is asked `execute("get_system_status")` and its answer read with the
    /// telemetry keys (`gpu_free_memory_mb`, `memory_available_mb`, ...).
    pub fn register_system_monitor(&self, name: &str) -> Result<(), ManagerError> {
        self.loaded(name)?;
        *self.shared.system_monitor.write() = Some(name.to_owned());
        tracing::info!("plugin {name} is the system monitor");
        Ok(())
    }

    /// Go back to the configured source or the local monitor; the plugin that was the
    /// system monitor, if any.
    pub fn unregister_system_monitor(&self) -> Option<String> {
        self.shared.system_monitor.write().take()
    }

    /// The plugin registered as the system monitor.
    pub fn system_monitor(&self) -> Option<String> {
        self.shared.system_monitor.read().clone()
    }

    /// The figures the scheduler would see now.
    pub async fn system_stats(&self) -> Result<SystemStats, ManagerError> {
        self.read_system_stats().await.map_err(ManagerError::Stats)
    }

    /// GPU memory used by the plugin's worker and its descendants, in MB, as the
    /// NVIDIA driver reports it on this machine; `None` where it reports nothing (no
    /// GPU, no driver, no GPU memory in use, or no worker now).
    pub fn plugin_gpu_memory_mb(&self, name: &str) -> Result<Option<f64>, ManagerError> {
        let Some(pid) = self.loaded(name)?.proxy().and_then(|proxy| proxy.pid()) else {
            return Ok(None);
        };
        Ok(self
            .shared
            .local_monitor
            .as_ref()
            .and_then(|monitor| monitor.gpu_memory_of_process_tree(pid)))
    }
}

impl PluginManager {
    pub(super) fn stats_source(&self) -> ManagerStats<'_> {
        ManagerStats {
            manager: self,
            seen: parking_lot::Mutex::new(None),
        }
    }

    async fn read_system_stats(&self) -> Result<SystemStats, StatsError> {
        if let Some(monitor) = self.system_monitor() {
            return self.ask_monitor_plugin(&monitor).await;
        }
        if let Some(source) = &self.shared.options.stats_source {
            return source.system_stats().await;
        }
        match &self.shared.local_monitor {
            Some(monitor) => Ok(monitor.snapshot()),
            // The platform offers no figures: report none, so that only policies that
            // need figures refuse.
            None => Ok(SystemStats::default()),
        }
    }

    async fn ask_monitor_plugin(&self, name: &str) -> Result<SystemStats, StatsError> {
        let failed =
            |reason: String| StatsError::new(format!("system monitor plugin {name}"), reason);
        let worker = self.running_worker(name).await.map_err(|err| match err {
            ManagerError::NotLoaded { .. } => failed(String::from("it is not loaded")),
            err => failed(err.to_string()),
        })?;
        // Its own route first, as 0.0.46's host asks (a monitor that is a
        // `ToolCapability` has no `execute` at all); a worker without it, or whose
        // plugin leaves it unimplemented, is asked as 0.0.20's host asks: positionally.
        let answer = match worker.get_system_status().await {
            Err(ProxyError::Http {
                status: 404 | 405 | 501,
                ..
            }) => worker
                .execute(CallArgs::new().arg(GET_SYSTEM_STATUS))
                .await
                .map_err(|err| failed(err.to_string()))?,
            answered => answered.map_err(|err| failed(err.to_string()))?,
        };
        let answer = without_absent_gpu(answer);
        if !answer.is_object() {
            return Err(failed(format!(
                "{GET_SYSTEM_STATUS} answered {}, not an object",
                kind_of(&answer)
            )));
        }
        // A plugin that is no monitor may still answer `execute` with an object: one
        // without a single figure the scheduler reads is no reading of the machine.
        const FIGURES: [&str; 4] = [
            "memory_available_mb",
            "memory_total_mb",
            "cpu_percent",
            "gpu_free_memory_mb",
        ];
        if !FIGURES.iter().any(|key| answer.get(key).is_some()) {
            return Err(failed(format!(
                "{GET_SYSTEM_STATUS} answered no figure of the machine (none of {}): is it a \
                 system monitor?",
                FIGURES.join(", ")
            )));
        }
        serde_json::from_value(answer)
            .map_err(|err| failed(format!("{GET_SYSTEM_STATUS} answer unreadable: {err}")))
    }
}

/// A monitor's answer with its GPU figures taken out when it says there is no GPU
/// (the original's `SystemStats` reports `gpu_type: "None"` with zeros): zero free
/// GPU memory would read as a GPU that is full, not as none at all.
fn without_absent_gpu(mut answer: Value) -> Value {
    let no_gpu = answer.get("gpu_type").and_then(Value::as_str) == Some("None")
        && answer
            .get("gpu_total_memory_mb")
            .and_then(Value::as_f64)
            .is_none_or(|total| total <= 0.0);
    if let (true, Some(fields)) = (no_gpu, answer.as_object_mut()) {
        for key in [
            "gpu_free_memory_mb",
            "gpu_total_memory_mb",
            "gpu_used_memory_mb",
            "gpu_load_percent",
        ] {
            fields.remove(key);
        }
    }
    answer
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
