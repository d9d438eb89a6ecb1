//! The manager for code without an async runtime, like the original's synchronous
//! `execute_plugin` beside `execute_plugin_async`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use cjm_interface::wire::{CallOutput, StatsResponse};
use cjm_interface::{CallArgs, ConfigMap};
use cjm_metadata::PluginMeta;
use cjm_proxy::ProxyError;
use cjm_scheduling::SystemStats;
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::{
    ManagerError, ManagerOptions, PluginConfig, PluginManager, PluginStatus, PluginStream,
};

/// A [`PluginManager`] with a runtime of its own; every method blocks. Must not be
/// used from inside an async runtime (use [`PluginManager`] there). Dropping it stops
/// every worker.
///
/// Its methods come in [`PluginManager`]'s groups, under the same headings. Every
/// async method of the manager has its blocking twin here, named the same; of the
/// manager's other methods, which answer at once, those a caller needs most are here
/// too, and all of them through [`manager`](Self::manager).
///
/// | Group | Methods |
/// |---|---|
/// | [Making one](#making-one) | [`new`](Self::new), [`manager`](Self::manager), [`block_on`](Self::block_on) |
/// | [Discovery](#discovery) | [`discover_manifests`](Self::discover_manifests) |
/// | [Lifecycle](#lifecycle) | [`load_plugin`](Self::load_plugin), [`load_instance`](Self::load_instance), [`load_all`](Self::load_all), [`reload_plugin`](Self::reload_plugin), [`unload_plugin`](Self::unload_plugin), [`unload_all`](Self::unload_all), [`shutdown`](Self::shutdown) |
/// | [Readiness](#readiness) | [`enable_plugin`](Self::enable_plugin), [`disable_plugin`](Self::disable_plugin), [`prefetch_plugin`](Self::prefetch_plugin) |
/// | [Calls](#calls) | [`execute_plugin`](Self::execute_plugin), [`execute_plugin_output`](Self::execute_plugin_output), [`execute_plugin_with_timeout`](Self::execute_plugin_with_timeout), [`execute_plugin_stream`](Self::execute_plugin_stream), [`execute_task`](Self::execute_task), [`execute_task_output`](Self::execute_task_output) |
/// | [Configuration](#configuration) | [`plugin_config`](Self::plugin_config), [`plugin_config_detail`](Self::plugin_config_detail), [`update_plugin_config`](Self::update_plugin_config), [`plugin_config_options`](Self::plugin_config_options), [`plugin_config_schema`](Self::plugin_config_schema), [`all_plugin_configs`](Self::all_plugin_configs) |
/// | [Loaded plugins and their status](#loaded-plugins-and-their-status) | [`list_plugins`](Self::list_plugins), [`plugin_status`](Self::plugin_status), [`is_running`](Self::is_running), [`plugin_logs`](Self::plugin_logs) |
/// | [Resources and telemetry](#resources-and-telemetry) | [`plugin_stats`](Self::plugin_stats), [`plugin_gpu_memory_mb`](Self::plugin_gpu_memory_mb), [`system_stats`](Self::system_stats), [`register_system_monitor`](Self::register_system_monitor) |
/// | [Kept configuration](#kept-configuration) | [`kept_config`](Self::kept_config), [`config_drift`](Self::config_drift), [`import_original_configs`](Self::import_original_configs) |
/// | [Learned resource profiles](#learned-resource-profiles) | [`resource_profiles`](Self::resource_profiles), [`learned_profile`](Self::learned_profile) |
#[derive(Debug)]
pub struct BlockingPluginManager {
    manager: PluginManager,
    runtime: Runtime,
}

/// # Making one
///
/// A manager with a runtime of its own, the async manager underneath, and a way to
/// run any of its futures.
impl BlockingPluginManager {
    /// A manager with a two-thread runtime of its own; fails only when the runtime
    /// cannot be started.
    pub fn new(options: ManagerOptions) -> std::io::Result<Self> {
        // Two threads: one keeps the transport moving while another waits on a stream.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cjm-manager")
            .enable_all()
            .build()?;
        let manager = runtime.block_on(async { PluginManager::new(options) });
        Ok(BlockingPluginManager { manager, runtime })
    }

    /// The async manager underneath, for anything this facade does not wrap.
    pub fn manager(&self) -> &PluginManager {
        &self.manager
    }

    /// Run any future of the async API to completion.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// # Discovery
///
/// [`PluginManager`'s](PluginManager#discovery); the lookups through
/// [`manager`](Self::manager).
impl BlockingPluginManager {
    /// [`PluginManager::discover_manifests`].
    pub fn discover_manifests(&self) -> Vec<PluginMeta> {
        self.manager.discover_manifests()
    }
}

/// # Lifecycle
///
/// [`PluginManager`'s](PluginManager#lifecycle), blocking.
impl BlockingPluginManager {
    /// [`PluginManager::load_plugin`], blocking.
    pub fn load_plugin(&self, name: &str, config: Option<ConfigMap>) -> Result<(), ManagerError> {
        self.block_on(self.manager.load_plugin(name, config))
    }

    /// [`PluginManager::load_instance`], blocking.
    pub fn load_instance(
        &self,
        plugin: &str,
        instance: &str,
        config: Option<ConfigMap>,
    ) -> Result<(), ManagerError> {
        self.block_on(self.manager.load_instance(plugin, instance, config))
    }

    /// [`PluginManager::load_all`], blocking.
    pub fn load_all(
        &self,
        configs: HashMap<String, ConfigMap>,
    ) -> BTreeMap<String, Result<(), ManagerError>> {
        self.block_on(self.manager.load_all(configs))
    }

    /// [`PluginManager::reload_plugin`], blocking.
    pub fn reload_plugin(&self, name: &str, config: Option<ConfigMap>) -> Result<(), ManagerError> {
        self.block_on(self.manager.reload_plugin(name, config))
    }

    /// [`PluginManager::unload_plugin`], blocking.
    pub fn unload_plugin(&self, name: &str) -> Result<(), ManagerError> {
        self.block_on(self.manager.unload_plugin(name))
    }

    /// [`PluginManager::unload_all`], blocking.
    pub fn unload_all(&self) {
        self.block_on(self.manager.unload_all())
    }

    /// [`PluginManager::shutdown`], blocking; dropping the facade does the same.
    pub fn shutdown(&self) {
        self.block_on(self.manager.shutdown())
    }
}

/// # Readiness
///
/// [`PluginManager`'s](PluginManager#readiness), blocking.
impl BlockingPluginManager {
    /// [`PluginManager::enable_plugin`], blocking.
    pub fn enable_plugin(&self, name: &str) -> bool {
        self.block_on(self.manager.enable_plugin(name))
    }

    /// [`PluginManager::disable_plugin`], blocking.
    pub fn disable_plugin(&self, name: &str) -> bool {
        self.block_on(self.manager.disable_plugin(name))
    }

    /// [`PluginManager::prefetch_plugin`], blocking.
    pub fn prefetch_plugin(&self, name: &str, stall_after: Duration) -> Result<bool, ManagerError> {
        self.block_on(self.manager.prefetch_plugin(name, stall_after))
    }
}

/// # Calls
///
/// [`PluginManager`'s](PluginManager#calls), blocking; a stream as an iterator.
impl BlockingPluginManager {
    /// [`PluginManager::execute_plugin`], blocking.
    pub fn execute_plugin(&self, name: &str, call: CallArgs) -> Result<Value, ManagerError> {
        self.block_on(self.manager.execute_plugin(name, call))
    }

    /// [`PluginManager::execute_task`], blocking.
    pub fn execute_task(
        &self,
        name: &str,
        task: &str,
        method: &str,
        kwargs: CallArgs,
    ) -> Result<Value, ManagerError> {
        self.block_on(self.manager.execute_task(name, task, method, kwargs))
    }

    /// [`PluginManager::execute_task_output`], blocking.
    pub fn execute_task_output(
        &self,
        name: &str,
        task: &str,
        method: &str,
        kwargs: CallArgs,
    ) -> Result<CallOutput, ManagerError> {
        self.block_on(self.manager.execute_task_output(name, task, method, kwargs))
    }

    /// [`PluginManager::execute_plugin_output`], blocking.
    pub fn execute_plugin_output(
        &self,
        name: &str,
        call: CallArgs,
    ) -> Result<CallOutput, ManagerError> {
        self.block_on(self.manager.execute_plugin_output(name, call))
    }

    /// [`PluginManager::execute_plugin_with_timeout`], blocking.
    pub fn execute_plugin_with_timeout(
        &self,
        name: &str,
        call: CallArgs,
        timeout: Duration,
    ) -> Result<Value, ManagerError> {
        self.block_on(
            self.manager
                .execute_plugin_with_timeout(name, call, timeout),
        )
    }

    /// The chunks of a streaming execution as a blocking iterator.
    pub fn execute_plugin_stream(
        &self,
        name: &str,
        call: CallArgs,
    ) -> Result<BlockingStream<'_>, ManagerError> {
        let stream = self.block_on(self.manager.execute_plugin_stream(name, call))?;
        Ok(BlockingStream {
            stream,
            runtime: &self.runtime,
        })
    }
}

/// # Configuration
///
/// [`PluginManager`'s](PluginManager#configuration), blocking.
impl BlockingPluginManager {
    /// [`PluginManager::plugin_config`], blocking.
    pub fn plugin_config(&self, name: &str) -> Result<Value, ManagerError> {
        self.block_on(self.manager.plugin_config(name))
    }

    /// [`PluginManager::plugin_config_detail`], blocking.
    pub fn plugin_config_detail(&self, name: &str) -> Result<PluginConfig, ManagerError> {
        self.block_on(self.manager.plugin_config_detail(name))
    }

    /// [`PluginManager::update_plugin_config`], blocking.
    pub fn update_plugin_config(&self, name: &str, config: ConfigMap) -> Result<(), ManagerError> {
        self.block_on(self.manager.update_plugin_config(name, config))
    }

    /// [`PluginManager::plugin_config_options`], blocking.
    pub fn plugin_config_options(&self, name: &str) -> Result<Value, ManagerError> {
        self.block_on(self.manager.plugin_config_options(name))
    }

    /// [`PluginManager::plugin_config_schema`], blocking.
    pub fn plugin_config_schema(&self, name: &str) -> Result<Value, ManagerError> {
        self.block_on(self.manager.plugin_config_schema(name))
    }

    /// [`PluginManager::all_plugin_configs`], blocking.
    pub fn all_plugin_configs(&self) -> BTreeMap<String, Value> {
        self.block_on(self.manager.all_plugin_configs())
    }
}

/// # Loaded plugins and their status
///
/// [`PluginManager`'s](PluginManager#loaded-plugins-and-their-status); the others
/// through [`manager`](Self::manager).
impl BlockingPluginManager {
    /// [`PluginManager::list_plugins`].
    pub fn list_plugins(&self) -> Vec<PluginMeta> {
        self.manager.list_plugins()
    }

    /// [`PluginManager::plugin_status`].
    pub fn plugin_status(&self, name: &str) -> Option<PluginStatus> {
        self.manager.plugin_status(name)
    }

    /// [`PluginManager::is_running`].
    pub fn is_running(&self, name: &str) -> bool {
        self.manager.is_running(name)
    }

    /// [`PluginManager::plugin_logs`].
    pub fn plugin_logs(&self, name: &str, lines: usize) -> Result<String, ManagerError> {
        self.manager.plugin_logs(name, lines)
    }
}

/// # Resources and telemetry
///
/// [`PluginManager`'s](PluginManager#resources-and-telemetry), blocking where they
/// wait; the others through [`manager`](Self::manager).
impl BlockingPluginManager {
    /// [`PluginManager::plugin_stats`], blocking.
    pub fn plugin_stats(&self, name: &str) -> Result<StatsResponse, ManagerError> {
        self.block_on(self.manager.plugin_stats(name))
    }

    /// [`PluginManager::plugin_gpu_memory_mb`].
    pub fn plugin_gpu_memory_mb(&self, name: &str) -> Result<Option<f64>, ManagerError> {
        self.manager.plugin_gpu_memory_mb(name)
    }

    /// [`PluginManager::system_stats`], blocking.
    pub fn system_stats(&self) -> Result<SystemStats, ManagerError> {
        self.block_on(self.manager.system_stats())
    }

    /// [`PluginManager::register_system_monitor`].
    pub fn register_system_monitor(&self, name: &str) -> Result<(), ManagerError> {
        self.manager.register_system_monitor(name)
    }
}

/// # Kept configuration
///
/// [`PluginManager`'s](PluginManager#kept-configuration).
impl BlockingPluginManager {
    /// [`PluginManager::kept_config`], blocking.
    pub fn kept_config(&self, name: &str) -> Result<Option<crate::KeptConfig>, ManagerError> {
        self.block_on(self.manager.kept_config(name))
    }

    /// [`PluginManager::config_drift`].
    pub fn config_drift(&self, name: &str) -> Option<crate::ConfigDrift> {
        self.manager.config_drift(name)
    }

    /// [`PluginManager::import_original_configs`], blocking.
    pub fn import_original_configs(
        &self,
        original: &std::path::Path,
    ) -> Result<usize, ManagerError> {
        self.block_on(self.manager.import_original_configs(original))
    }
}

/// # Learned resource profiles
///
/// [`PluginManager`'s](PluginManager#learned-resource-profiles).
impl BlockingPluginManager {
    /// [`PluginManager::resource_profiles`], blocking.
    pub fn resource_profiles(&self) -> Result<Vec<crate::ResourceProfile>, ManagerError> {
        self.block_on(self.manager.resource_profiles())
    }

    /// [`PluginManager::learned_profile`].
    pub fn learned_profile(
        &self,
        name: &str,
    ) -> Result<Option<crate::ResourceProfile>, ManagerError> {
        self.manager.learned_profile(name)
    }
}

impl Drop for BlockingPluginManager {
    fn drop(&mut self) {
        self.runtime.block_on(self.manager.shutdown());
    }
}

/// A [`PluginStream`] as an [`Iterator`].
#[derive(Debug)]
pub struct BlockingStream<'a> {
    stream: PluginStream,
    runtime: &'a Runtime,
}

impl Iterator for BlockingStream<'_> {
    type Item = Result<Value, ProxyError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.stream.next())
    }
}
