//! The manager for code without an async runtime, like the original's synchronous
//! `execute_plugin` beside `execute_plugin_async`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use cjm_interface::wire::StatsResponse;
use cjm_interface::{CallArgs, ConfigMap};
use cjm_metadata::PluginMeta;
use cjm_proxy::ProxyError;
use cjm_scheduling::SystemStats;
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::{ManagerError, ManagerOptions, PluginManager, PluginStream};

/// A [`PluginManager`] with a runtime of its own; every method blocks. Must not be
/// used from inside an async runtime (use [`PluginManager`] there). Dropping it stops
/// every worker.
#[derive(Debug)]
pub struct BlockingPluginManager {
    manager: PluginManager,
    runtime: Runtime,
}

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

    /// [`PluginManager::discover_manifests`], blocking.
    pub fn discover_manifests(&self) -> Vec<PluginMeta> {
        self.manager.discover_manifests()
    }

    /// [`PluginManager::list_plugins`], blocking.
    pub fn list_plugins(&self) -> Vec<PluginMeta> {
        self.manager.list_plugins()
    }

    /// [`PluginManager::load_plugin`], blocking.
    pub fn load_plugin(&self, name: &str, config: Option<ConfigMap>) -> Result<(), ManagerError> {
        self.block_on(self.manager.load_plugin(name, config))
    }

    /// [`PluginManager::load_all`], blocking.
    pub fn load_all(
        &self,
        configs: HashMap<String, ConfigMap>,
    ) -> BTreeMap<String, Result<(), ManagerError>> {
        self.block_on(self.manager.load_all(configs))
    }

    /// [`PluginManager::unload_plugin`], blocking.
    pub fn unload_plugin(&self, name: &str) -> Result<(), ManagerError> {
        self.block_on(self.manager.unload_plugin(name))
    }

    /// [`PluginManager::unload_all`], blocking.
    pub fn unload_all(&self) {
        self.block_on(self.manager.unload_all())
    }

    /// [`PluginManager::reload_plugin`], blocking.
    pub fn reload_plugin(&self, name: &str, config: Option<ConfigMap>) -> Result<(), ManagerError> {
        self.block_on(self.manager.reload_plugin(name, config))
    }

    /// [`PluginManager::execute_plugin`], blocking.
    pub fn execute_plugin(&self, name: &str, call: CallArgs) -> Result<Value, ManagerError> {
        self.block_on(self.manager.execute_plugin(name, call))
    }

    /// [`PluginManager::execute_plugin_with_timeout`], blocking.
    pub fn execute_plugin_with_timeout(
        &self,
        name: &str,
        call: CallArgs,
        timeout: std::time::Duration,
    ) -> Result<Value, ManagerError> {
        self.block_on(
            self.manager
                .execute_plugin_with_timeout(name, call, timeout),
        )
    }

    /// [`PluginManager::enable_plugin`], blocking.
    pub fn enable_plugin(&self, name: &str) -> bool {
        self.block_on(self.manager.enable_plugin(name))
    }

    /// [`PluginManager::disable_plugin`], blocking.
    pub fn disable_plugin(&self, name: &str) -> bool {
        self.block_on(self.manager.disable_plugin(name))
    }

    /// [`PluginManager::prefetch_plugin`], blocking.
    pub fn prefetch_plugin(
        &self,
        name: &str,
        stall_after: std::time::Duration,
    ) -> Result<bool, ManagerError> {
        self.block_on(self.manager.prefetch_plugin(name, stall_after))
    }

    /// [`PluginManager::plugin_status`], blocking.
    pub fn plugin_status(&self, name: &str) -> Option<crate::PluginStatus> {
        self.manager.plugin_status(name)
    }

    /// [`PluginManager::is_running`], blocking.
    pub fn is_running(&self, name: &str) -> bool {
        self.manager.is_running(name)
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

    /// [`PluginManager::plugin_config`], blocking.
    pub fn plugin_config(&self, name: &str) -> Result<Value, ManagerError> {
        self.block_on(self.manager.plugin_config(name))
    }

    /// [`PluginManager::plugin_config_detail`], blocking.
    pub fn plugin_config_detail(&self, name: &str) -> Result<crate::PluginConfig, ManagerError> {
        self.block_on(self.manager.plugin_config_detail(name))
    }

    /// [`PluginManager::update_plugin_config`], blocking.
    pub fn update_plugin_config(&self, name: &str, config: ConfigMap) -> Result<(), ManagerError> {
        self.block_on(self.manager.update_plugin_config(name, config))
    }

    /// [`PluginManager::plugin_config_schema`], blocking.
    pub fn plugin_config_schema(&self, name: &str) -> Result<Value, ManagerError> {
        self.block_on(self.manager.plugin_config_schema(name))
    }

    /// [`PluginManager::plugin_stats`], blocking.
    pub fn plugin_stats(&self, name: &str) -> Result<StatsResponse, ManagerError> {
        self.block_on(self.manager.plugin_stats(name))
    }

    /// [`PluginManager::plugin_logs`], blocking.
    pub fn plugin_logs(&self, name: &str, lines: usize) -> Result<String, ManagerError> {
        self.manager.plugin_logs(name, lines)
    }

    /// [`PluginManager::register_system_monitor`], blocking.
    pub fn register_system_monitor(&self, name: &str) -> Result<(), ManagerError> {
        self.manager.register_system_monitor(name)
    }

    /// [`PluginManager::system_stats`], blocking.
    pub fn system_stats(&self) -> Result<SystemStats, ManagerError> {
        self.block_on(self.manager.system_stats())
    }

    /// [`PluginManager::plugin_gpu_memory_mb`], blocking.
    pub fn plugin_gpu_memory_mb(&self, name: &str) -> Result<Option<f64>, ManagerError> {
        self.manager.plugin_gpu_memory_mb(name)
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
