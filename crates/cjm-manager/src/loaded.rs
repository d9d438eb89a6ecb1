//! A plugin with a running worker, and the bookkeeping of its executions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cjm_interface::ConfigMap;
use cjm_metadata::{Manifest, PluginMeta};
use cjm_proxy::RemotePluginProxy;
use cjm_scheduling::ResourceScheduler;
use cjm_validation::ConfigValidator;

#[derive(Debug)]
pub(crate) struct LoadedPlugin {
    pub(crate) proxy: Arc<RemotePluginProxy>,
    pub(crate) manifest: Manifest,
    pub(crate) manifest_path: PathBuf,
    /// The manifest's config schema, compiled at discovery.
    pub(crate) config_validator: Arc<ConfigValidator>,
    meta: Mutex<PluginMeta>,
    /// The configuration the worker last accepted, to restart it with.
    config: Mutex<ConfigMap>,
    active_executions: AtomicUsize,
}

/// Lock a mutex whose data stays consistent even if a holder panicked (plain values,
/// replaced whole).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LoadedPlugin {
    pub(crate) fn new(
        proxy: RemotePluginProxy,
        manifest: Manifest,
        manifest_path: PathBuf,
        config_validator: Arc<ConfigValidator>,
        meta: PluginMeta,
        config: ConfigMap,
    ) -> Self {
        LoadedPlugin {
            proxy: Arc::new(proxy),
            manifest,
            manifest_path,
            config_validator,
            meta: Mutex::new(meta),
            config: Mutex::new(config),
            active_executions: AtomicUsize::new(0),
        }
    }

    pub(crate) fn meta(&self) -> PluginMeta {
        lock(&self.meta).clone()
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        lock(&self.meta).enabled = enabled;
    }

    pub(crate) fn config(&self) -> ConfigMap {
        lock(&self.config).clone()
    }

    pub(crate) fn set_config(&self, config: ConfigMap) {
        *lock(&self.config) = config;
    }

    /// Executions admitted and not yet finished.
    pub(crate) fn active_executions(&self) -> usize {
        self.active_executions.load(Ordering::SeqCst)
    }

    fn mark_executed(&self) {
        lock(&self.meta).mark_executed(SystemTime::now());
    }
}

/// One admitted execution. Dropping it, however the execution ended (success, error,
/// a dropped future or stream), releases it with the scheduler.
#[derive(Debug)]
pub(crate) struct ExecutionGuard {
    plugin: Arc<LoadedPlugin>,
    scheduler: Arc<dyn ResourceScheduler>,
}

impl ExecutionGuard {
    pub(crate) fn begin(plugin: Arc<LoadedPlugin>, scheduler: Arc<dyn ResourceScheduler>) -> Self {
        plugin.active_executions.fetch_add(1, Ordering::SeqCst);
        plugin.mark_executed();
        scheduler.on_execution_start(&plugin.meta());
        ExecutionGuard { plugin, scheduler }
    }
}

impl Drop for ExecutionGuard {
    fn drop(&mut self) {
        self.plugin.mark_executed();
        self.plugin.active_executions.fetch_sub(1, Ordering::SeqCst);
        self.scheduler.on_execution_finish(&self.plugin.meta());
    }
}
