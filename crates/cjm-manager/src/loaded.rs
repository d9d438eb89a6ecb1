//! A plugin with a running worker, and the bookkeeping of its executions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cjm_interface::ConfigMap;
use cjm_metadata::{Manifest, PluginMeta};
use cjm_proxy::RemotePluginProxy;
use cjm_scheduling::{Reservation, ResourceScheduler};
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
    /// Executions asked for and not finished, those still waiting for admission
    /// included: a plugin with any is never evicted.
    claims: AtomicUsize,
    /// Restarts by the restart policy that led to this worker.
    restarts: AtomicU32,
    /// Why the host killed the worker, when it did (a call timed out).
    killed_because: Mutex<Option<String>>,
    /// One restart at a time: callers that find the worker dead together wait for the
    /// first one's restart.
    pub(crate) revive: tokio::sync::Mutex<()>,
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
            claims: AtomicUsize::new(0),
            restarts: AtomicU32::new(0),
            killed_because: Mutex::new(None),
            revive: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }

    pub(crate) fn set_restarts(&self, restarts: u32) {
        self.restarts.store(restarts, Ordering::SeqCst);
    }

    /// Kill the worker at once, remembering why.
    pub(crate) fn kill(&self, reason: String) {
        *lock(&self.killed_because) = Some(reason);
        self.proxy.kill();
    }

    /// Why the worker is dead; `None` while it runs.
    pub(crate) fn failure(&self) -> Option<String> {
        if let Some(reason) = lock(&self.killed_because).clone() {
            return Some(reason);
        }
        if self.proxy.is_running() {
            return None;
        }
        Some(
            self.proxy
                .exit_description()
                .unwrap_or_else(|| String::from("was stopped")),
        )
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

    /// Executions asked for and not finished, waiting ones included.
    pub(crate) fn claims(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
    }

    fn mark_executed(&self, at: SystemTime) {
        lock(&self.meta).mark_executed(at);
    }
}

/// One admitted execution. Dropping it, however the execution ended (success, error,
/// a dropped future or stream), releases it with the scheduler: the finish hook runs,
/// then the reservation is returned.
#[derive(Debug)]
pub(crate) struct ExecutionGuard {
    plugin: Arc<LoadedPlugin>,
    /// The metadata the scheduler admitted, handed to its hooks without cloning the
    /// plugin's (config schema included) again on every call.
    meta: PluginMeta,
    scheduler: Arc<dyn ResourceScheduler>,
    _reservation: Reservation,
    _claim: ExecutionClaim,
}

impl ExecutionGuard {
    pub(crate) fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    pub(crate) fn begin(
        claim: ExecutionClaim,
        scheduler: Arc<dyn ResourceScheduler>,
        reservation: Reservation,
        mut meta: PluginMeta,
    ) -> Self {
        let plugin = Arc::clone(&claim.plugin);
        plugin.active_executions.fetch_add(1, Ordering::SeqCst);
        let now = SystemTime::now();
        plugin.mark_executed(now);
        meta.mark_executed(now);
        scheduler.on_execution_start(&meta);
        ExecutionGuard {
            plugin,
            meta,
            scheduler,
            _reservation: reservation,
            _claim: claim,
        }
    }
}

/// An execution asked for, from before admission to its end. Taken while the plugin
/// table is locked for reading, so that eviction (which checks claims with the table
/// locked for writing) never restarts a plugin an execution is about to use.
#[derive(Debug)]
pub(crate) struct ExecutionClaim {
    plugin: Arc<LoadedPlugin>,
}

impl ExecutionClaim {
    pub(crate) fn new(plugin: Arc<LoadedPlugin>) -> Self {
        plugin.claims.fetch_add(1, Ordering::SeqCst);
        ExecutionClaim { plugin }
    }
}

impl Drop for ExecutionClaim {
    fn drop(&mut self) {
        self.plugin.claims.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for ExecutionGuard {
    fn drop(&mut self) {
        let now = SystemTime::now();
        self.plugin.mark_executed(now);
        self.meta.mark_executed(now);
        self.plugin.active_executions.fetch_sub(1, Ordering::SeqCst);
        self.scheduler.on_execution_finish(&self.meta);
    }
}
