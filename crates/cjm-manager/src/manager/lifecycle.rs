//! Loading and unloading plugins, and the one path by which a loaded plugin's worker
//! is replaced: reload, recovery after a crash, stopping idle workers (eviction) and
//! starting them again on demand all go through [`PluginManager::replace_worker`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cjm_interface::ConfigMap;
use cjm_proxy::RemotePluginProxy;
use serde_json::Value;
use tokio::task::JoinSet;

use super::events::PluginChange;
use super::{checked, PluginManager};
use crate::discovery::DiscoveredPlugin;
use crate::launch::{launch_spec, placement_key};
use crate::loaded::{LifecycleLock, LoadedPlugin, SlotOutcome};
use crate::ManagerError;

/// What becomes of a plugin's worker in [`PluginManager::replace_worker`].
#[derive(Debug)]
pub(super) struct Replacement {
    /// What the new worker is initialized with (and what is kept for later starts).
    pub(super) config: ConfigMap,
    /// Leave the plugin alone if an execution claims it (eviction, idle stop).
    pub(super) only_if_idle: bool,
    /// Kill the old worker at once instead of asking it to clean up first.
    pub(super) kill_old: bool,
    /// `None`: start a new worker now. `Some(reason)`: leave the plugin stopped; the
    /// next execution starts it.
    pub(super) leave_stopped: Option<String>,
    /// What a new worker's start is told as (`manager/events.rs`).
    pub(super) started_as: PluginChange,
    /// What leaving the plugin stopped is told as; `None`: nothing is told.
    pub(super) stopped_as: Option<PluginChange>,
}

impl Replacement {
    /// Start a new worker with `config` once the old one has cleaned up, whatever
    /// the plugin is doing; the other kinds of replacement are this with a field
    /// changed.
    pub(super) fn start(config: ConfigMap) -> Self {
        Replacement {
            config,
            only_if_idle: false,
            kill_old: false,
            leave_stopped: None,
            started_as: PluginChange::WorkerStarted,
            stopped_as: None,
        }
    }
}

/// What [`PluginManager::replace_worker`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replaced {
    /// Done as asked.
    Done,
    /// Left alone: an execution claims the plugin (only with `only_if_idle`).
    Busy,
}

/// Holds a plugin name in `loading` while its first worker starts.
struct LoadingName<'a> {
    manager: &'a PluginManager,
    name: String,
}

impl Drop for LoadingName<'_> {
    fn drop(&mut self) {
        self.manager.shared.loading.lock().remove(&self.name);
    }
}

/// # Lifecycle
///
/// Start a discovered plugin's worker (load, as an instance of its own, all at once),
/// start it again (reload), stop it for good (unload, shutdown). A reload, like a
/// restart after a crash, an eviction or an idle stop, replaces the worker through
/// the manager's one restart path.
impl PluginManager {
    /// Start the worker of a discovered plugin and initialize it with `config`, or
    /// with the defaults of its config schema when none is given. The configuration is
    /// checked against the manifest's `config_schema` first: an invalid one starts no
    /// process. On failure no worker is left running.
    pub async fn load_plugin(
        &self,
        name: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        self.load_as(name, name, config).await
    }

    /// Load plugin `plugin` once more, as the instance `instance`, with a worker and a
    /// configuration of its own (two sizes of one model, say). The instance is then
    /// addressed by its name everywhere a plugin's name goes: calls, jobs,
    /// configuration, status, logs (`logs/<instance>.log`), unload, admission and
    /// eviction (each instance is its own unit). It shares the plugin's secrets and
    /// data folder. `instance` follows the rules of plugin names and may not be the
    /// name of another discovered plugin.
    pub async fn load_instance(
        &self,
        plugin: &str,
        instance: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        if instance != plugin {
            cjm_metadata::validate_name(instance).map_err(|source| ManagerError::BadInstance {
                plugin: plugin.to_owned(),
                instance: instance.to_owned(),
                reason: source.to_string(),
            })?;
            if self.discovered_plugin(instance).is_some() {
                return Err(ManagerError::BadInstance {
                    plugin: plugin.to_owned(),
                    instance: instance.to_owned(),
                    reason: String::from("that is the name of another plugin"),
                });
            }
        }
        self.load_as(instance, plugin, config).await
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

    /// Stop a plugin's worker (cleanup first) and forget the plugin.
    pub async fn unload_plugin(&self, name: &str) -> Result<(), ManagerError> {
        let plugin = {
            let mut table = self.shared.loaded.write();
            let removed = table.remove(name);
            if removed.is_some() {
                self.announce(name, PluginChange::Unloaded, None, None);
            }
            removed
        }
        .ok_or_else(|| ManagerError::NotLoaded {
            name: name.to_owned(),
        })?;
        stop_for_good(plugin).await;
        tracing::info!("unloaded plugin {name}");
        Ok(())
    }

    /// Stop every worker, all at once.
    pub async fn unload_all(&self) {
        let plugins: Vec<Arc<LoadedPlugin>> = self
            .shared
            .loaded
            .write()
            .drain()
            .map(|(name, plugin)| {
                self.announce(&name, PluginChange::Unloaded, None, None);
                plugin
            })
            .collect();
        let mut stops = JoinSet::new();
        for plugin in plugins {
            stops.spawn(stop_for_good(plugin));
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
    /// If the new worker cannot start, the plugin stays loaded, dead, with the reason
    /// (see [`plugin_status`](Self::plugin_status)); a later execution or reload may
    /// start it again.
    pub async fn reload_plugin(
        &self,
        name: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        let plugin = self.loaded(name)?;
        let given = config.is_some();
        let config = match config {
            Some(config) => checked(name, &plugin.config_validator, config)?,
            None => self.config_to_keep(&plugin).await,
        };
        let lock = plugin.lock_lifecycle().await;
        plugin.set_restarts(0);
        self.replace_worker(&plugin, lock, Replacement::start(config.clone()))
            .await?;
        if given {
            self.keep_config(name, &config, &plugin.config_validator)
                .await;
        }
        let pid = plugin.proxy().map(|proxy| proxy.worker_pid());
        self.announce(name, PluginChange::Reloaded, pid, None);
        tracing::info!("reloaded plugin {name}");
        Ok(())
    }
}

// The restart path, and loading's steps.
impl PluginManager {
    async fn load_as(
        &self,
        name: &str,
        plugin: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        let _loading = self.claim_load(name)?;
        if self.is_loaded(name) {
            return Err(ManagerError::AlreadyLoaded {
                name: name.to_owned(),
            });
        }
        if self.is_disabled(name) {
            return Err(ManagerError::Disabled {
                name: name.to_owned(),
            });
        }
        let discovered = self
            .discovered_plugin(plugin)
            .ok_or_else(|| self.not_discovered(plugin))?;
        // A given configuration is checked before anything starts; a kept one once
        // the worker has said which schema it has now.
        let given = match config {
            Some(config) => Some(checked(name, &discovered.config_validator, config)?),
            None => None,
        };
        let kept = match given {
            Some(_) => None,
            None => self.kept_for_start(name).await,
        };
        // Nothing given nor kept: the defaults, which must pass too.
        let defaulted = given.is_none() && kept.is_none();
        let given = match given {
            None if defaulted => Some(checked(
                name,
                &discovered.config_validator,
                discovered.config_validator.defaults().clone(),
            )?),
            given => given,
        };
        let proxy = self
            .spawn_worker(name, &discovered.manifest, &discovered.path)
            .await?;
        let live_schema = self
            .live_schema(name, &proxy, &discovered.config_validator)
            .await;
        let start = self.start_config(
            name,
            &discovered.config_validator,
            given,
            kept,
            live_schema.as_ref(),
        );
        let config = start.config;
        if let Err(err) = initialize(&proxy, &config, &discovered.config_validator).await {
            proxy.shutdown().await;
            return Err(err);
        }
        if start.keep && !defaulted {
            self.keep_config(name, &config, &discovered.config_validator)
                .await;
        }
        let DiscoveredPlugin {
            mut meta,
            manifest,
            path,
            config_validator,
        } = discovered;
        // An instance is its own unit for the scheduler and eviction.
        meta.name = name.to_owned();
        let loaded = Arc::new(LoadedPlugin::new(
            proxy,
            manifest,
            path,
            config_validator,
            meta,
            config,
        ));
        self.watch_idleness(&loaded);
        {
            let mut table = self.shared.loaded.write();
            table.insert(name.to_owned(), Arc::clone(&loaded));
            // Under the table's lock: an unload cannot be told before this load.
            let first = loaded.proxy();
            if let Some(proxy) = &first {
                self.worker_up(&loaded, proxy, PluginChange::WorkerStarted);
            }
            let pid = first.map(|proxy| proxy.worker_pid());
            self.announce(name, PluginChange::Loaded, pid, None);
        }
        if name == plugin {
            tracing::info!("loaded plugin {name}");
        } else {
            tracing::info!("loaded plugin {plugin} as instance {name}");
        }
        Ok(())
    }

    /// The one way a loaded plugin's worker is replaced. The caller hands over the
    /// plugin's lifecycle lock. Executions arriving meanwhile wait for the outcome.
    /// Whatever happens, the plugin stays in the table: a failed start leaves it dead
    /// with the reason.
    ///
    /// The replacement runs on a task of its own, which holds the lock until it is
    /// done: a caller dropped at any point (a job cancelled while its worker starts, a
    /// `timeout` around a reload) only stops waiting for it. It never leaves the
    /// plugin `Restarting`, nor a second replacement running beside the first.
    pub(super) async fn replace_worker(
        &self,
        plugin: &Arc<LoadedPlugin>,
        lock: LifecycleLock,
        replacement: Replacement,
    ) -> Result<Replaced, ManagerError> {
        let manager = self.clone();
        let plugin = Arc::clone(plugin);
        let name = plugin.name().to_owned();
        let replacing = tokio::spawn(async move {
            let _one_at_a_time = lock;
            manager.replace_now(&plugin, replacement).await
        });
        match replacing.await {
            Ok(replaced) => replaced,
            Err(err) => Err(ManagerError::NotRunning {
                reason: format!("its restart failed: {err}"),
                name,
                restarts: 0,
                max_restarts: 0,
            }),
        }
    }

    async fn replace_now(
        &self,
        plugin: &Arc<LoadedPlugin>,
        replacement: Replacement,
    ) -> Result<Replaced, ManagerError> {
        let Ok((old, slot)) = plugin.take_for_restart(replacement.only_if_idle) else {
            return Ok(Replaced::Busy);
        };
        let old_pid = old.as_ref().map(|old| old.worker_pid());
        if let Some(old) = old {
            if replacement.kill_old {
                old.kill();
            } else {
                old.shutdown().await;
            }
        }
        if let Some(reason) = replacement.leave_stopped {
            plugin.set_config(replacement.config);
            slot.put_back(SlotOutcome::Stopped(reason.clone()));
            if let Some(change) = replacement.stopped_as {
                let why = match change {
                    PluginChange::IdleStopped => Some("keep_alive"),
                    PluginChange::Evicted => Some("gpu_memory"),
                    _ => None,
                };
                self.announce_why(plugin.name(), change, old_pid, Some(reason), why);
            }
            return Ok(Replaced::Done);
        }
        let started = self
            .start_worker(
                plugin.name(),
                &plugin.manifest,
                &plugin.manifest_path,
                &plugin.config_validator,
                &replacement.config,
            )
            .await;
        match started {
            Ok(proxy) => {
                plugin.set_config(replacement.config);
                let proxy = Arc::new(proxy);
                slot.put_back(SlotOutcome::Started(Arc::clone(&proxy)));
                self.worker_up(plugin, &proxy, replacement.started_as);
                Ok(Replaced::Done)
            }
            Err(err) => {
                slot.put_back(SlotOutcome::Failed(format!("could not be started: {err}")));
                Err(err)
            }
        }
    }

    /// Start a worker and initialize it with `config` (already checked against the
    /// schema); on failure nothing is left running.
    async fn start_worker(
        &self,
        name: &str,
        manifest: &cjm_metadata::Manifest,
        manifest_path: &std::path::Path,
        validator: &cjm_validation::ConfigValidator,
        config: &ConfigMap,
    ) -> Result<RemotePluginProxy, ManagerError> {
        let proxy = self.spawn_worker(name, manifest, manifest_path).await?;
        if let Err(err) = initialize(&proxy, config, validator).await {
            proxy.shutdown().await;
            return Err(err);
        }
        Ok(proxy)
    }

    /// Start a worker, not yet initialized.
    async fn spawn_worker(
        &self,
        name: &str,
        manifest: &cjm_metadata::Manifest,
        manifest_path: &std::path::Path,
    ) -> Result<RemotePluginProxy, ManagerError> {
        crate::launch::learn_original_version(manifest, manifest_path).await;
        let adapters: Vec<String> = self
            .matched_adapters(&manifest.name)
            .iter()
            .map(cjm_metadata::AdapterManifest::spec)
            .collect();
        let diagnostics_db = self.shared.diagnostics_db.lock().clone();
        let mut spec = launch_spec(
            name,
            manifest,
            manifest_path,
            &self.shared.options,
            &adapters,
            diagnostics_db.as_deref(),
        )
        .await?;
        if manifest.resources.requires_gpu {
            if let Some(placement) = placement_key(manifest) {
                let manager = self.clone();
                let requester = name.to_owned();
                spec.on_waiting = Some(cjm_proxy::WaitingHook::new(move |shortfall| {
                    // On a task of its own: a stop once begun finishes, whatever becomes
                    // of the placement that asked for it.
                    let stopping = tokio::spawn(manager.evict_for_placement(
                        requester.clone(),
                        placement.clone(),
                        shortfall,
                    ));
                    Box::pin(async move { stopping.await.ok().flatten() })
                }));
            }
        }
        let proxy = RemotePluginProxy::start(spec).await?;
        tracing::debug!(
            "plugin {name}: worker {} started ({})",
            proxy.worker_pid(),
            proxy.location()
        );
        Ok(proxy)
    }

    /// The running configuration if the worker can still say it, else the one it was
    /// last given.
    pub(super) async fn config_to_keep(&self, plugin: &LoadedPlugin) -> ConfigMap {
        if let Some(proxy) = plugin.proxy().filter(|proxy| proxy.is_running()) {
            if let Ok(Value::Object(config)) = proxy.current_config().await {
                return config;
            }
        }
        plugin.config()
    }

    fn claim_load(&self, name: &str) -> Result<LoadingName<'_>, ManagerError> {
        if !self.shared.loading.lock().insert(name.to_owned()) {
            return Err(ManagerError::Busy {
                name: name.to_owned(),
            });
        }
        Ok(LoadingName {
            manager: self,
            name: name.to_owned(),
        })
    }
}

/// Initialize a new worker with `config`, checked against the manifest's schema.
async fn initialize(
    proxy: &RemotePluginProxy,
    config: &ConfigMap,
    validator: &cjm_validation::ConfigValidator,
) -> Result<(), ManagerError> {
    Ok(proxy
        .initialize_checked(config.clone(), validator.fingerprint())
        .await?)
}

/// Stop an unloaded plugin's worker, after any restart under way. On a task of its
/// own, like a replacement: a caller dropped meanwhile leaves no worker half stopped.
async fn stop_for_good(plugin: Arc<LoadedPlugin>) {
    let stopping = tokio::spawn(async move {
        let _one_at_a_time = plugin.lock_lifecycle().await;
        if let Ok((old, slot)) = plugin.take_for_restart(false) {
            if let Some(proxy) = old {
                proxy.shutdown().await;
            }
            slot.put_back(SlotOutcome::Failed(String::from("was unloaded")));
        }
    });
    if let Err(err) = stopping.await {
        tracing::warn!("stopping an unloaded plugin's worker failed: {err}");
    }
}
