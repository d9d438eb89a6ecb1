//! [`PluginManager`]: discovery, lifecycle and execution over many workers. Its
//! methods come in groups, one `impl` block each, in the file of that group's
//! concern (the table on [`PluginManager`]); the machinery under them (the restart
//! path, admission and eviction, idle stops, recovery, the jobs' host) has files of
//! its own.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use cjm_interface::ConfigMap;
use cjm_metadata::PluginMeta;
use cjm_proxy::Endpoint;
use cjm_scheduling::LocalMonitor;
use cjm_validation::{ConfigValidator, InvalidConfig};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::discovery::Discovery;
use crate::loaded::LoadedPlugin;
use crate::{ManagerError, ManagerOptions};

// The public groups, one `impl` block each, in the order of the table on
// `PluginManager` (rustdoc shows the blocks in this order).
mod configuration;
mod discovered;
mod events;
mod execution;
mod kept;
mod learning;
mod lifecycle;
mod readiness;
mod setup;
mod status;
mod tasks;
mod telemetry;
// What they stand on.
mod eviction;
mod for_jobs;
mod idle;
mod recovery;
mod residency;

pub use events::{PluginChange, PluginEvent};
pub(crate) use for_jobs::{AfterKill, Forced};
pub use kept::ConfigDrift;
pub use tasks::TaskServer;
use telemetry::ManagerStats;

/// Manages plugin discovery, loading and execution, each plugin in its own worker
/// process.
///
/// Cheap to clone: clones share the same plugins. Every worker is stopped by
/// [`shutdown`](Self::shutdown), or killed when the last clone is dropped.
///
/// Its methods, by group (one `impl` block each below, under its heading; where a
/// method takes a plugin's name, an instance's name works too):
///
/// | Group | Methods |
/// |---|---|
/// | [Making one](#making-one) | [`new`](Self::new), [`options`](Self::options) |
/// | [Discovery](#discovery) | [`discover_manifests`](Self::discover_manifests), [`discovery`](Self::discovery), [`discovery_problems`](Self::discovery_problems), [`discovered`](Self::discovered), [`discovered_plugin`](Self::discovered_plugin), [`discovered_by_category`](Self::discovered_by_category), [`discovered_categories`](Self::discovered_categories) |
/// | [Lifecycle](#lifecycle) | [`load_plugin`](Self::load_plugin), [`load_instance`](Self::load_instance), [`load_all`](Self::load_all), [`reload_plugin`](Self::reload_plugin), [`unload_plugin`](Self::unload_plugin), [`unload_all`](Self::unload_all), [`shutdown`](Self::shutdown) |
/// | [Readiness](#readiness) | [`enable_plugin`](Self::enable_plugin), [`disable_plugin`](Self::disable_plugin), [`prefetch_plugin`](Self::prefetch_plugin) |
/// | [Calls](#calls) | [`execute_plugin`](Self::execute_plugin), [`execute_plugin_output`](Self::execute_plugin_output), [`execute_plugin_with_timeout`](Self::execute_plugin_with_timeout), [`execute_plugin_stream`](Self::execute_plugin_stream) |
/// | [Task adapters](#task-adapters) | [`adapter_manifests`](Self::adapter_manifests), [`adapters_for_task`](Self::adapters_for_task), [`check_adapter_compatibility`](Self::check_adapter_compatibility), [`matched_adapters`](Self::matched_adapters), [`capabilities_for_task`](Self::capabilities_for_task), [`execute_task`](Self::execute_task), [`execute_task_output`](Self::execute_task_output) |
/// | [Configuration](#configuration) | [`plugin_config`](Self::plugin_config), [`plugin_config_detail`](Self::plugin_config_detail), [`update_plugin_config`](Self::update_plugin_config), [`plugin_config_options`](Self::plugin_config_options), [`plugin_config_schema`](Self::plugin_config_schema), [`all_plugin_configs`](Self::all_plugin_configs) |
/// | [Loaded plugins and their status](#loaded-plugins-and-their-status) | [`list_plugins`](Self::list_plugins), [`is_loaded`](Self::is_loaded), [`plugin_meta`](Self::plugin_meta), [`plugins_by_category`](Self::plugins_by_category), [`loaded_categories`](Self::loaded_categories), [`worker_info`](Self::worker_info), [`plugin_status`](Self::plugin_status), [`is_running`](Self::is_running), [`active_executions`](Self::active_executions), [`plugin_logs`](Self::plugin_logs) |
/// | [Resources and telemetry](#resources-and-telemetry) | [`plugin_stats`](Self::plugin_stats), [`plugin_gpu_memory_mb`](Self::plugin_gpu_memory_mb), [`system_stats`](Self::system_stats), [`register_system_monitor`](Self::register_system_monitor), [`unregister_system_monitor`](Self::unregister_system_monitor), [`system_monitor`](Self::system_monitor) |
/// | [Kept configuration](#kept-configuration) | [`kept_config`](Self::kept_config), [`config_drift`](Self::config_drift), [`import_original_configs`](Self::import_original_configs) |
/// | [Learned resource profiles](#learned-resource-profiles) | [`resource_profiles`](Self::resource_profiles), [`learned_profile`](Self::learned_profile) |
/// | [Plugin events](#plugin-events) | [`plugin_events`](Self::plugin_events) |
///
/// Not methods here: admission, eviction, idle stops and restarts after a crash
/// happen to every call as the [`ManagerOptions`] say; queued calls with progress and
/// cancellation are [`Jobs`](crate::jobs::Jobs) over a clone of the manager; code
/// without a runtime uses [`BlockingPluginManager`](crate::BlockingPluginManager),
/// grouped the same way.
#[derive(Debug, Clone)]
pub struct PluginManager {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    options: ManagerOptions,
    discovery: RwLock<Discovery>,
    /// Loaded plugins, from load to unload, whatever their workers do meanwhile.
    loaded: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Names being loaded right now, so that two loads of one plugin cannot both start
    /// a worker.
    loading: Mutex<HashSet<String>>,
    /// The one record of which plugins are disabled (loaded or not).
    disabled: Mutex<HashSet<String>>,
    /// This machine's figures: the default source, and always the source of a
    /// worker's GPU memory.
    local_monitor: Option<Arc<LocalMonitor>>,
    /// A loaded plugin answering `get_system_status`, when one is registered.
    system_monitor: RwLock<Option<String>>,
    /// Whether the idle sweeper (`manager/idle.rs`) runs.
    idle_sweeper: std::sync::atomic::AtomicBool,
    /// Kept configurations and learned profiles (`manager/kept.rs`,
    /// `manager/learning.rs`); `None` when both are off or the file cannot be opened.
    store: Option<crate::store::HostStore>,
    /// The fingerprint of each loaded plugin's live config schema, as its worker
    /// reported it at load: what a configuration kept for it was checked against.
    live_schemas: Mutex<HashMap<String, String>>,
    /// Kept configurations refused at load because their schema changed.
    drifts: Mutex<HashMap<String, ConfigDrift>>,
    /// The jobs' diagnostics store, once jobs run on this manager: the original's
    /// Python workers started after that write their log records into it.
    diagnostics_db: Mutex<Option<std::path::PathBuf>>,
    /// Where plugin events go (`manager/events.rs`).
    plugin_events: tokio::sync::broadcast::Sender<PluginEvent>,
}

/// A loaded plugin's current worker process, as [`PluginManager::worker_info`] reports
/// it. The manager keeps the worker itself: calls go through the manager, which
/// admits, times and restarts them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Process id of the worker where it runs (for a local worker, the leader of its
    /// process group on this machine; see `location`).
    pub pid: u32,
    /// Where the worker runs: `local`, `attached at https://host:port`,
    /// `ray job ID on NODE`.
    pub location: String,
    /// Whether the worker is a process of this machine (its `pid` is one here).
    pub local: bool,
    /// Where the worker listens.
    pub endpoint: Endpoint,
    /// The version the worker reported at start.
    pub version: String,
    /// The plugin's log, which the worker's output is appended to.
    pub log_path: PathBuf,
    /// The successor's (cjm-substrate) release the worker runs, as its `/health`
    /// said; `None` for any other worker.
    pub substrate_version: Option<String>,
    /// The worker's Python interpreter, as the successor's worker says it.
    pub python_executable: Option<String>,
}

// What the groups share.
impl PluginManager {
    fn loaded(&self, name: &str) -> Result<Arc<LoadedPlugin>, ManagerError> {
        self.shared
            .loaded
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotLoaded {
                name: name.to_owned(),
            })
    }

    /// The plugin's worker if it runs now (waiting out a restart under way).
    async fn running_worker(
        &self,
        name: &str,
    ) -> Result<Arc<cjm_proxy::RemotePluginProxy>, ManagerError> {
        let plugin = self.loaded(name)?;
        match plugin.worker().await {
            crate::loaded::Worker::Running(proxy) => Ok(proxy),
            crate::loaded::Worker::Stopped(reason) | crate::loaded::Worker::Dead(reason) => {
                Err(ManagerError::NotRunning {
                    name: name.to_owned(),
                    reason,
                    restarts: plugin.restarts(),
                    max_restarts: self
                        .shared
                        .options
                        .fault_policy_for(name)
                        .restart
                        .max_restarts,
                })
            }
        }
    }

    fn not_discovered(&self, name: &str) -> ManagerError {
        ManagerError::NotDiscovered {
            name: name.to_owned(),
            known: self
                .discovered()
                .into_iter()
                .map(|meta| meta.name)
                .collect(),
        }
    }

    fn is_disabled(&self, name: &str) -> bool {
        self.shared.disabled.lock().contains(name)
    }

    fn with_enabled(&self, mut meta: PluginMeta) -> PluginMeta {
        meta.enabled = !self.is_disabled(&meta.name);
        meta
    }
}

/// `config`, if it satisfies the plugin's config schema.
fn checked(
    name: &str,
    validator: &ConfigValidator,
    config: ConfigMap,
) -> Result<ConfigMap, ManagerError> {
    validator
        .validate_map(config)
        .map_err(|errors| invalid_config(name, errors))
}

fn invalid_config(name: &str, errors: InvalidConfig) -> ManagerError {
    ManagerError::InvalidConfig {
        name: name.to_owned(),
        errors,
    }
}

fn categories(metas: Vec<PluginMeta>) -> Vec<String> {
    metas
        .into_iter()
        .map(|meta| meta.category)
        .filter(|category| !category.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn last_lines(text: &str, count: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(count)..].join("\n")
}

/// A plugin's configuration, as [`PluginManager::plugin_config_detail`] finds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PluginConfig {
    /// The configuration.
    pub config: Value,
    /// `None`: its running worker reported it. `Some(why)`: the worker is not
    /// running (why: "was stopped after 30s idle (its keep-alive)", ..), and this is
    /// the configuration the host keeps and will start it with.
    pub worker_stopped: Option<String>,
}
