//! [`PluginManager`]: discovery, lifecycle and execution over many workers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use cjm_interface::wire::StatsResponse;
use cjm_interface::{CallArgs, ConfigMap};
use cjm_metadata::PluginMeta;
use cjm_proxy::RemotePluginProxy;
use cjm_scheduling::{LocalMonitor, Resource};
use cjm_validation::{ConfigValidator, InvalidConfig};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::discovery::{self, DiscoveredPlugin, Discovery, ManifestProblem};
use crate::launch::launch_spec;
use crate::loaded::{ExecutionClaim, ExecutionGuard, LoadedPlugin};
use crate::{ManagerError, ManagerOptions, PluginStream};

mod eviction;
mod recovery;
mod telemetry;

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
    loaded: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Names being started or stopped right now, so that two loads of one plugin
    /// cannot both start a worker.
    busy: Mutex<HashSet<String>>,
    disabled: Mutex<HashSet<String>>,
    /// This machine's figures: the default source, and always the source of a
    /// worker's GPU memory.
    local_monitor: Option<LocalMonitor>,
    /// A loaded plugin answering `get_system_status`, when one is registered.
    system_monitor: RwLock<Option<String>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Holds a plugin name in `busy` for the duration of a lifecycle operation.
struct BusyName<'a> {
    shared: &'a Shared,
    name: String,
}

impl Drop for BusyName<'_> {
    fn drop(&mut self) {
        lock(&self.shared.busy).remove(&self.name);
    }
}

impl PluginManager {
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
                busy: Mutex::new(HashSet::new()),
                disabled: Mutex::new(HashSet::new()),
                local_monitor,
                system_monitor: RwLock::new(None),
            }),
        }
    }

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
        *write(&self.shared.discovery) = found;
        metas
    }

    /// The last discovery pass in full: plugins, skipped manifests, shadowed ones.
    pub fn discovery(&self) -> Discovery {
        read(&self.shared.discovery).clone()
    }

    pub fn discovery_problems(&self) -> Vec<ManifestProblem> {
        read(&self.shared.discovery).problems.clone()
    }

    pub fn discovered(&self) -> Vec<PluginMeta> {
        read(&self.shared.discovery)
            .plugins
            .iter()
            .map(|plugin| self.with_enabled(plugin.meta.clone()))
            .collect()
    }

    pub fn discovered_plugin(&self, name: &str) -> Option<DiscoveredPlugin> {
        read(&self.shared.discovery)
            .plugins
            .iter()
            .find(|plugin| plugin.meta.name == name)
            .cloned()
    }

    pub fn discovered_by_category(&self, category: &str) -> Vec<PluginMeta> {
        self.discovered()
            .into_iter()
            .filter(|meta| meta.category == category)
            .collect()
    }

    pub fn discovered_categories(&self) -> Vec<String> {
        categories(self.discovered())
    }

    // ---- lookups of loaded plugins ---------------------------------------------

    /// Metadata of the loaded plugins, sorted by name.
    pub fn list_plugins(&self) -> Vec<PluginMeta> {
        let mut metas: Vec<PluginMeta> = read(&self.shared.loaded)
            .values()
            .map(|plugin| self.with_enabled(plugin.meta()))
            .collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        metas
    }

    /// The proxy of a loaded plugin, for direct calls.
    pub fn get_plugin(&self, name: &str) -> Option<Arc<RemotePluginProxy>> {
        read(&self.shared.loaded)
            .get(name)
            .map(|plugin| Arc::clone(&plugin.proxy))
    }

    pub fn plugin_meta(&self, name: &str) -> Option<PluginMeta> {
        read(&self.shared.loaded)
            .get(name)
            .map(|plugin| self.with_enabled(plugin.meta()))
    }

    /// Executions of the plugin admitted and not yet finished (streams included).
    pub fn active_executions(&self, name: &str) -> Option<usize> {
        read(&self.shared.loaded)
            .get(name)
            .map(|plugin| plugin.active_executions())
    }

    pub fn is_loaded(&self, name: &str) -> bool {
        read(&self.shared.loaded).contains_key(name)
    }

    pub fn plugins_by_category(&self, category: &str) -> Vec<PluginMeta> {
        self.list_plugins()
            .into_iter()
            .filter(|meta| meta.category == category)
            .collect()
    }

    pub fn loaded_categories(&self) -> Vec<String> {
        categories(self.list_plugins())
    }

    // ---- lifecycle --------------------------------------------------------------

    /// Start the worker of a discovered plugin and initialize it with `config`, or
    /// with the defaults of its config schema when none is given. The configuration is
    /// checked against the manifest's `config_schema` first: an invalid one starts no
    /// process. On failure no worker is left running.
    pub async fn load_plugin(
        &self,
        name: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        let _busy = self.claim(name)?;
        if self.is_loaded(name) {
            return Err(ManagerError::AlreadyLoaded {
                name: name.to_owned(),
            });
        }
        if lock(&self.shared.disabled).contains(name) {
            return Err(ManagerError::Disabled {
                name: name.to_owned(),
            });
        }
        let discovered = self
            .discovered_plugin(name)
            .ok_or_else(|| self.not_discovered(name))?;
        let config = config.unwrap_or_else(|| discovered.config_validator.defaults().clone());
        let config = checked(name, &discovered.config_validator, config)?;
        let loaded = self.start(discovered, config).await?;
        write(&self.shared.loaded).insert(name.to_owned(), Arc::new(loaded));
        tracing::info!("loaded plugin {name}");
        Ok(())
    }

    async fn start(
        &self,
        discovered: DiscoveredPlugin,
        config: ConfigMap,
    ) -> Result<LoadedPlugin, ManagerError> {
        let spec = launch_spec(&discovered.manifest, &discovered.path, &self.shared.options);
        let proxy = RemotePluginProxy::start(spec).await?;
        let checked_against = discovered.config_validator.fingerprint();
        if let Err(err) = proxy
            .initialize_checked(config.clone(), checked_against)
            .await
        {
            proxy.shutdown().await;
            return Err(err.into());
        }
        Ok(LoadedPlugin::new(
            proxy,
            discovered.manifest,
            discovered.path,
            discovered.config_validator,
            discovered.meta,
            config,
        ))
    }

    /// Discover, then load every enabled plugin that is not loaded yet, all workers
    /// starting at once. `configs` gives initial configurations by name.
    pub async fn load_all(
        &self,
        configs: HashMap<String, ConfigMap>,
    ) -> BTreeMap<String, Result<(), ManagerError>> {
        let mut configs = configs;
        let mut loads = JoinSet::new();
        for meta in self.discover_manifests() {
            if !meta.enabled || self.is_loaded(&meta.name) {
                continue;
            }
            let manager = self.clone();
            let config = configs.remove(&meta.name);
            loads.spawn(async move {
                let result = manager.load_plugin(&meta.name, config).await;
                (meta.name, result)
            });
        }
        let mut results = BTreeMap::new();
        while let Some(joined) = loads.join_next().await {
            match joined {
                Ok((name, result)) => {
                    if let Err(err) = &result {
                        tracing::warn!("{err}");
                    }
                    results.insert(name, result);
                }
                Err(err) => tracing::error!("a plugin load task failed: {err}"),
            }
        }
        results
    }

    /// Stop a plugin's worker (cleanup first) and forget it.
    pub async fn unload_plugin(&self, name: &str) -> Result<(), ManagerError> {
        let _busy = self.claim(name)?;
        let plugin =
            write(&self.shared.loaded)
                .remove(name)
                .ok_or_else(|| ManagerError::NotLoaded {
                    name: name.to_owned(),
                })?;
        plugin.proxy.shutdown().await;
        tracing::info!("unloaded plugin {name}");
        Ok(())
    }

    /// Stop every worker, all at once.
    pub async fn unload_all(&self) {
        let plugins: Vec<Arc<LoadedPlugin>> = write(&self.shared.loaded)
            .drain()
            .map(|(_, plugin)| plugin)
            .collect();
        let mut stops = JoinSet::new();
        for plugin in plugins {
            stops.spawn(async move { plugin.proxy.shutdown().await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Stop every worker; the same as [`unload_all`](Self::unload_all).
    pub async fn shutdown(&self) {
        self.unload_all().await;
    }

    /// Restart a plugin's worker, with `config` or else the configuration it had.
    /// The old worker is stopped first, so that its memory (GPU memory above all) is
    /// free for the new one; a given `config` is checked before anything is stopped.
    pub async fn reload_plugin(
        &self,
        name: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        let _busy = self.claim(name)?;
        let old = read(&self.shared.loaded)
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotLoaded {
                name: name.to_owned(),
            })?;
        let config = match config {
            Some(config) => checked(name, &old.config_validator, config)?,
            None => self.config_to_keep(&old).await,
        };
        write(&self.shared.loaded).remove(name);
        self.restart(name, &old, config).await?;
        tracing::info!("reloaded plugin {name}");
        Ok(())
    }

    /// The running configuration if the worker can still say it, else the one it was
    /// last given.
    async fn config_to_keep(&self, plugin: &LoadedPlugin) -> ConfigMap {
        if !plugin.proxy.has_exited() {
            if let Ok(Value::Object(config)) = plugin.proxy.current_config().await {
                return config;
            }
        }
        plugin.config()
    }

    /// Allow executions again. Whether the plugin is known (discovered or loaded).
    pub fn enable_plugin(&self, name: &str) -> bool {
        self.set_enabled(name, true)
    }

    /// Refuse executions (and loads) without stopping the worker. Whether the plugin
    /// is known.
    pub fn disable_plugin(&self, name: &str) -> bool {
        self.set_enabled(name, false)
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let loaded = read(&self.shared.loaded).get(name).cloned();
        let known = loaded.is_some() || self.discovered_plugin(name).is_some();
        if !known {
            return false;
        }
        if let Some(plugin) = loaded {
            plugin.set_enabled(enabled);
        }
        let mut disabled = lock(&self.shared.disabled);
        if enabled {
            disabled.remove(name);
        } else {
            disabled.insert(name.to_owned());
        }
        true
    }

    // ---- execution ----------------------------------------------------------------

    /// Execute a plugin once, after the scheduler admits it, within the plugin's
    /// call timeout if its [`FaultPolicy`](crate::FaultPolicy) sets one.
    pub async fn execute_plugin(&self, name: &str, call: CallArgs) -> Result<Value, ManagerError> {
        self.execute_within(name, call, None).await
    }

    /// [`execute_plugin`](Self::execute_plugin) with this call's own time limit. Past
    /// it the call fails with [`ManagerError::Timeout`], and the worker is killed or
    /// left running as the plugin's [`OnTimeout`](crate::OnTimeout) says.
    pub async fn execute_plugin_with_timeout(
        &self,
        name: &str,
        call: CallArgs,
        timeout: Duration,
    ) -> Result<Value, ManagerError> {
        self.execute_within(name, call, Some(timeout)).await
    }

    async fn execute_within(
        &self,
        name: &str,
        call: CallArgs,
        timeout: Option<Duration>,
    ) -> Result<Value, ManagerError> {
        self.revive_if_dead(name).await?;
        let (plugin, _execution) = self.admit(name).await?;
        let Some(limit) = self.call_timeout(name, timeout) else {
            return Ok(plugin.proxy.execute(call).await?);
        };
        match tokio::time::timeout(limit, plugin.proxy.execute(call)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(self.timed_out(name, &plugin, limit)),
        }
    }

    /// Execute a plugin and receive its results chunk by chunk.
    pub async fn execute_plugin_stream(
        &self,
        name: &str,
        call: CallArgs,
    ) -> Result<PluginStream, ManagerError> {
        self.revive_if_dead(name).await?;
        let (plugin, execution) = self.admit(name).await?;
        let limit = self.call_timeout(name, None);
        let started = plugin.proxy.execute_stream(call);
        let chunks = match limit {
            None => started.await?,
            Some(limit) => match tokio::time::timeout(limit, started).await {
                Ok(chunks) => chunks?,
                Err(_) => return Err(self.timed_out(name, &plugin, limit)),
            },
        };
        let on_timeout = self.shared.options.fault_policy_for(name).on_timeout;
        Ok(PluginStream::new(chunks, execution, limit, on_timeout))
    }

    /// Ask the scheduler; when it refuses for GPU memory, evict idle GPU plugins
    /// first; let a waiting policy wait only when that does not help.
    async fn admit(&self, name: &str) -> Result<(Arc<LoadedPlugin>, ExecutionGuard), ManagerError> {
        let (plugin, claim) = self.claim_execution(name)?;
        if lock(&self.shared.disabled).contains(name) {
            return Err(ManagerError::Disabled {
                name: name.to_owned(),
            });
        }
        let meta = plugin.meta();
        let scheduler = Arc::clone(&self.shared.options.scheduler);
        let stats = self.stats_source();
        let reservation = match scheduler.try_allocate(&meta, &stats).await {
            Ok(reservation) => reservation,
            Err(refusal) if refusal.is_short_of(Resource::GpuMemory) => {
                self.evict_for(&meta, scheduler.as_ref(), &stats).await?
            }
            Err(_) => scheduler.allocate(&meta, &stats).await?,
        };
        let guard = ExecutionGuard::begin(claim, scheduler, reservation, meta);
        Ok((plugin, guard))
    }

    /// The plugin and a claim on it, taken under the table's read lock (see
    /// [`ExecutionClaim`]).
    fn claim_execution(
        &self,
        name: &str,
    ) -> Result<(Arc<LoadedPlugin>, ExecutionClaim), ManagerError> {
        let loaded = read(&self.shared.loaded);
        let plugin = loaded.get(name).ok_or_else(|| ManagerError::NotLoaded {
            name: name.to_owned(),
        })?;
        Ok((Arc::clone(plugin), ExecutionClaim::new(Arc::clone(plugin))))
    }

    // ---- configuration, telemetry, logs ----------------------------------------------

    /// The configuration in force in the plugin's worker.
    pub async fn plugin_config(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.loaded(name)?.proxy.current_config().await?)
    }

    /// Re-configure a running plugin without restarting it. `update` is partial: its
    /// keys replace those of the configuration last given, the others stay. The
    /// result is checked against the config schema before it is sent; a refused
    /// configuration leaves the old one in force.
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
        let checked_against = plugin.config_validator.fingerprint();
        plugin
            .proxy
            .initialize_checked(config.clone(), checked_against)
            .await?;
        plugin.set_config(config);
        Ok(())
    }

    pub async fn plugin_config_schema(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.loaded(name)?.proxy.config_schema().await?)
    }

    /// The configuration of every loaded plugin that can report it.
    pub async fn all_plugin_configs(&self) -> BTreeMap<String, Value> {
        let plugins: Vec<(String, Arc<LoadedPlugin>)> = read(&self.shared.loaded)
            .iter()
            .map(|(name, plugin)| (name.clone(), Arc::clone(plugin)))
            .collect();
        let mut configs = BTreeMap::new();
        for (name, plugin) in plugins {
            match plugin.proxy.current_config().await {
                Ok(config) => {
                    configs.insert(name, config);
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
        let mut stats = plugin.proxy.stats().await?;
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
        read(&self.shared.loaded)
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotLoaded {
                name: name.to_owned(),
            })
    }

    fn claim(&self, name: &str) -> Result<BusyName<'_>, ManagerError> {
        if !lock(&self.shared.busy).insert(name.to_owned()) {
            return Err(ManagerError::Busy {
                name: name.to_owned(),
            });
        }
        Ok(BusyName {
            shared: &self.shared,
            name: name.to_owned(),
        })
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

    fn with_enabled(&self, mut meta: PluginMeta) -> PluginMeta {
        meta.enabled = !lock(&self.shared.disabled).contains(&meta.name);
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
