//! [`PluginManager`]: discovery, lifecycle and execution over many workers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use cjm_interface::wire::StatsResponse;
use cjm_interface::ConfigMap;
use cjm_metadata::PluginMeta;
use cjm_proxy::Endpoint;
use cjm_scheduling::LocalMonitor;
use cjm_validation::{ConfigValidator, InvalidConfig};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::discovery::{self, DiscoveredPlugin, Discovery, ManifestProblem};
use crate::loaded::LoadedPlugin;
use crate::{ManagerError, ManagerOptions};

mod eviction;
mod execution;
mod for_jobs;
mod idle;
mod lifecycle;
mod prefetch;
mod recovery;
mod telemetry;

pub(crate) use for_jobs::{AfterKill, Forced};
use telemetry::ManagerStats;

/// Manages plugin discovery, loading and execution, each plugin in its own worker
/// process.
///
/// Cheap to clone: clones share the same plugins. Every worker is stopped by
/// [`shutdown`](Self::shutdown), or killed when the last clone is dropped.
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
    local_monitor: Option<LocalMonitor>,
    /// A loaded plugin answering `get_system_status`, when one is registered.
    system_monitor: RwLock<Option<String>>,
    /// Whether the idle sweeper (`manager/idle.rs`) runs.
    idle_sweeper: std::sync::atomic::AtomicBool,
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
}

impl PluginManager {
    /// A manager with no plugins discovered yet.
    pub fn new(options: ManagerOptions) -> Self {
        let local_monitor = match LocalMonitor::new() {
            Ok(monitor) => Some(monitor),
            Err(err) => {
                tracing::warn!("{err}");
                None
            }
        };
        PluginManager {
            shared: Arc::new(Shared {
                options,
                discovery: RwLock::new(Discovery::default()),
                loaded: RwLock::new(HashMap::new()),
                loading: Mutex::new(HashSet::new()),
                disabled: Mutex::new(HashSet::new()),
                local_monitor,
                system_monitor: RwLock::new(None),
                idle_sweeper: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The options the manager was made with.
    pub fn options(&self) -> &ManagerOptions {
        &self.shared.options
    }

    // ---- discovery ------------------------------------------------------------

    /// Read the manifests of the search paths (again); broken ones are reported by
    /// [`discovery_problems`](Self::discovery_problems) and skipped.
    pub fn discover_manifests(&self) -> Vec<PluginMeta> {
        let found = discovery::discover(&self.shared.options.search_paths);
        let metas = found
            .plugins
            .iter()
            .map(|plugin| self.with_enabled(plugin.meta.clone()))
            .collect();
        *self.shared.discovery.write() = found;
        metas
    }

    /// The last discovery pass in full: plugins, skipped manifests, shadowed ones.
    pub fn discovery(&self) -> Discovery {
        self.shared.discovery.read().clone()
    }

    /// Manifests the last discovery pass skipped, and why.
    pub fn discovery_problems(&self) -> Vec<ManifestProblem> {
        self.shared.discovery.read().problems.clone()
    }

    /// Metadata of every plugin the last discovery pass found.
    pub fn discovered(&self) -> Vec<PluginMeta> {
        self.shared
            .discovery
            .read()
            .plugins
            .iter()
            .map(|plugin| self.with_enabled(plugin.meta.clone()))
            .collect()
    }

    /// One discovered plugin, with its manifest and compiled config schema.
    pub fn discovered_plugin(&self, name: &str) -> Option<DiscoveredPlugin> {
        self.shared
            .discovery
            .read()
            .plugins
            .iter()
            .find(|plugin| plugin.meta.name == name)
            .cloned()
    }

    /// Discovered plugins of one category.
    pub fn discovered_by_category(&self, category: &str) -> Vec<PluginMeta> {
        self.discovered()
            .into_iter()
            .filter(|meta| meta.category == category)
            .collect()
    }

    /// The categories of the discovered plugins, sorted, without the empty one.
    pub fn discovered_categories(&self) -> Vec<String> {
        categories(self.discovered())
    }

    // ---- lookups of loaded plugins ---------------------------------------------

    /// Metadata of the loaded plugins, sorted by name.
    pub fn list_plugins(&self) -> Vec<PluginMeta> {
        let mut metas: Vec<PluginMeta> = self
            .shared
            .loaded
            .read()
            .values()
            .map(|plugin| self.with_enabled(plugin.meta()))
            .collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        metas
    }

    /// The current worker of a loaded plugin: its pid, endpoint, version and log.
    /// `None` when the plugin is not loaded or has no worker now (stopped, or its
    /// last start failed).
    pub fn worker_info(&self, name: &str) -> Option<WorkerInfo> {
        let proxy = self.loaded(name).ok()?.proxy()?;
        Some(WorkerInfo {
            pid: proxy.worker_pid(),
            location: proxy.location().to_owned(),
            local: proxy.is_local(),
            endpoint: proxy.endpoint().clone(),
            version: proxy.version().to_owned(),
            log_path: proxy.log_path().to_path_buf(),
        })
    }

    /// Metadata of a loaded plugin.
    pub fn plugin_meta(&self, name: &str) -> Option<PluginMeta> {
        self.loaded(name)
            .ok()
            .map(|plugin| self.with_enabled(plugin.meta()))
    }

    /// Executions of the plugin admitted and not yet finished (streams included).
    pub fn active_executions(&self, name: &str) -> Option<usize> {
        self.loaded(name)
            .ok()
            .map(|plugin| plugin.active_executions())
    }

    /// Whether the plugin is loaded (whatever its worker's state).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.shared.loaded.read().contains_key(name)
    }

    /// Loaded plugins of one category.
    pub fn plugins_by_category(&self, category: &str) -> Vec<PluginMeta> {
        self.list_plugins()
            .into_iter()
            .filter(|meta| meta.category == category)
            .collect()
    }

    /// The categories of the loaded plugins, sorted, without the empty one.
    pub fn loaded_categories(&self) -> Vec<String> {
        categories(self.list_plugins())
    }

    // ---- enabling ----------------------------------------------------------------

    /// Allow executions again, and tell a running worker (its plugin's `on_enable`
    /// hook, where it has one). Whether the plugin is known (discovered or loaded).
    pub async fn enable_plugin(&self, name: &str) -> bool {
        let known = self.set_enabled(name, true);
        if known {
            self.tell_worker(name, true).await;
        }
        known
    }

    /// Refuse executions (and loads) without stopping the worker, and tell a running
    /// worker (its plugin's `on_disable` hook, which runs once the calls in flight
    /// have ended and may release heavy resources). Whether the plugin is known.
    pub async fn disable_plugin(&self, name: &str) -> bool {
        let known = self.set_enabled(name, false);
        if known {
            self.tell_worker(name, false).await;
        }
        known
    }

    /// A worker without the hook (the original 0.0.20) is fine; a failing hook is
    /// logged, the plugin's state is what the caller asked for either way.
    async fn tell_worker(&self, name: &str, enabled: bool) {
        let Some(proxy) = self
            .loaded(name)
            .ok()
            .and_then(|plugin| plugin.proxy())
            .filter(|proxy| proxy.is_running())
        else {
            return;
        };
        let told = if enabled {
            proxy.on_enable().await
        } else {
            proxy.on_disable().await
        };
        match told {
            Ok(cjm_proxy::HookOutcome::Failed(why)) => {
                tracing::warn!("plugin {name}: its enable/disable hook failed: {why}");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("{err}"),
        }
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let known = self.is_loaded(name) || self.discovered_plugin(name).is_some();
        if !known {
            return false;
        }
        let mut disabled = self.shared.disabled.lock();
        if enabled {
            disabled.remove(name);
        } else {
            disabled.insert(name.to_owned());
        }
        true
    }

    fn is_disabled(&self, name: &str) -> bool {
        self.shared.disabled.lock().contains(name)
    }

    fn with_enabled(&self, mut meta: PluginMeta) -> PluginMeta {
        meta.enabled = !self.is_disabled(&meta.name);
        meta
    }

    // ---- configuration, telemetry, logs ----------------------------------------------

    /// The configuration in force: the worker's own word while it runs, else (a
    /// worker stopped while idle or by eviction, or dead) the configuration the host
    /// keeps for it and will start it with. [`plugin_config_detail`] says which.
    ///
    /// [`plugin_config_detail`]: Self::plugin_config_detail
    pub async fn plugin_config(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.plugin_config_detail(name).await?.config)
    }

    /// [`plugin_config`](Self::plugin_config), and where it came from.
    pub async fn plugin_config_detail(&self, name: &str) -> Result<PluginConfig, ManagerError> {
        let plugin = self.loaded(name)?;
        match plugin.worker().await {
            crate::loaded::Worker::Running(proxy) => Ok(PluginConfig {
                config: proxy.current_config().await?,
                worker_stopped: None,
            }),
            crate::loaded::Worker::Stopped(reason) | crate::loaded::Worker::Dead(reason) => {
                Ok(PluginConfig {
                    config: Value::Object(plugin.config()),
                    worker_stopped: Some(reason),
                })
            }
        }
    }

    /// Re-configure a running plugin without restarting it. `update` is partial: its
    /// keys replace those of the configuration last given, the others stay. The
    /// result is checked against the config schema before it is sent; a refused
    /// configuration leaves the old one in force. A stopped plugin keeps the new
    /// configuration for its next start.
    pub async fn update_plugin_config(
        &self,
        name: &str,
        update: ConfigMap,
    ) -> Result<(), ManagerError> {
        let plugin = self.loaded(name)?;
        let config = plugin
            .config_validator
            .validate_update(&plugin.config(), &update)
            .map_err(|errors| invalid_config(name, errors))?;
        let _one_at_a_time = plugin.lock_lifecycle().await;
        if let Some(proxy) = plugin.proxy().filter(|proxy| proxy.is_running()) {
            let fingerprint = plugin.config_validator.fingerprint();
            // The plugin's own reconfigure where it has one (it may keep a loaded
            // model), else a fresh initialize.
            let reconfigured = proxy
                .reconfigure(plugin.config(), config.clone(), fingerprint)
                .await?;
            if reconfigured == cjm_proxy::HookOutcome::NotSupported {
                proxy
                    .initialize_checked(config.clone(), fingerprint)
                    .await?;
            }
        }
        plugin.set_config(config);
        Ok(())
    }

    /// The live domains of the plugin's configuration fields (the models present,
    /// the devices), as its worker tells them; `{}` when it has none to tell.
    pub async fn plugin_config_options(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.running_worker(name).await?.config_options().await?)
    }

    /// The config schema the plugin's worker reports.
    pub async fn plugin_config_schema(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.running_worker(name).await?.config_schema().await?)
    }

    /// The configuration of every loaded plugin with a running worker that can report
    /// it.
    pub async fn all_plugin_configs(&self) -> BTreeMap<String, Value> {
        let plugins: Vec<Arc<LoadedPlugin>> = self.shared.loaded.read().values().cloned().collect();
        let mut configs = BTreeMap::new();
        for plugin in plugins {
            let Some(proxy) = plugin.proxy().filter(|proxy| proxy.is_running()) else {
                continue;
            };
            match proxy.current_config().await {
                Ok(config) => {
                    configs.insert(plugin.name().to_owned(), config);
                }
                Err(err) => tracing::warn!("{err}"),
            }
        }
        configs
    }

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

    /// The last `lines` lines of the plugin's log (of every run, not only the current
    /// one). Works for plugins that are not loaded, too.
    pub fn plugin_logs(&self, name: &str, lines: usize) -> Result<String, ManagerError> {
        let path = self.shared.options.home.log_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(last_lines(&String::from_utf8_lossy(&bytes), lines)),
            Err(source) => Err(ManagerError::Log {
                name: name.to_owned(),
                path,
                source,
            }),
        }
    }

    // ---- helpers --------------------------------------------------------------------

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
