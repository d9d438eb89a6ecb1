//! A loaded plugin: what stays while its worker comes and goes (manifest, schema,
//! configuration, counters), the worker of the moment, and the bookkeeping of its
//! executions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use cjm_interface::ConfigMap;
use cjm_metadata::{Manifest, PluginMeta};
use cjm_proxy::RemotePluginProxy;
use cjm_scheduling::{Reservation, ResourceScheduler};
use cjm_validation::ConfigValidator;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// A plugin in the manager's table. It stays there from load to unload, whatever
/// happens to its worker: a worker that dies, or whose restart fails, leaves the
/// plugin listed as dead with the reason, never gone.
#[derive(Debug)]
pub(crate) struct LoadedPlugin {
    name: String,
    pub(crate) manifest: Manifest,
    pub(crate) manifest_path: PathBuf,
    /// The manifest's config schema, compiled at discovery.
    pub(crate) config_validator: Arc<ConfigValidator>,
    meta: Mutex<PluginMeta>,
    /// The configuration the worker last accepted, to restart it with, and its
    /// fingerprint (what learned profiles are keyed by), computed once per change.
    config: Mutex<(ConfigMap, Arc<str>)>,
    slot: Mutex<WorkerSlot>,
    /// Wakes executions waiting for a restart to finish.
    slot_changed: Notify,
    /// One restart (or stop) of this plugin's worker at a time. Owned guards, so that
    /// a restart goes on holding it on a task of its own when its caller is dropped.
    lifecycle: Arc<tokio::sync::Mutex<()>>,
    active_executions: AtomicUsize,
    /// Queued jobs whose target it is (see [`PendingJob`]): eviction leaves it alone.
    pending_jobs: AtomicUsize,
    /// Restarts by the restart policy since the last load or reload.
    restarts: AtomicU32,
    /// When the current worker became ready: idleness counts from here at the
    /// earliest.
    up_since: Mutex<SystemTime>,
    /// The pid of the last worker whose death was told (`manager/events.rs`): told
    /// once, by its watcher or by the restart path, whichever sees it first.
    pub(crate) death_told: AtomicU32,
}

/// The worker of the moment and the executions that may use it. One lock for both,
/// so that an execution's claim and an idle-only restart's check cannot interleave.
#[derive(Debug)]
struct WorkerSlot {
    state: WorkerState,
    /// Executions asked for and not finished, those waiting for admission included: a
    /// plugin with any is never restarted for being idle.
    claims: usize,
}

#[derive(Debug)]
enum WorkerState {
    Up {
        proxy: Arc<RemotePluginProxy>,
        /// Why the host killed this worker, when it did (a call timed out).
        killed_because: Option<String>,
    },
    /// Being stopped and started again; executions wait for the outcome.
    Restarting,
    /// Stopped on purpose while idle (to free its memory); the next execution starts
    /// it again with its configuration.
    Stopped { reason: String },
    /// No worker: the last start failed.
    Down { reason: String },
}

/// What an execution finds when it looks at the plugin's worker.
#[derive(Debug, Clone)]
pub(crate) enum Worker {
    Running(Arc<RemotePluginProxy>),
    /// Stopped while idle, and why; to be started on demand.
    Stopped(String),
    /// Dead, and why ("was killed by signal 9", "restart failed: ..").
    Dead(String),
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
            name: meta.name.clone(),
            manifest,
            manifest_path,
            config_validator,
            meta: Mutex::new(meta),
            config: Mutex::new(with_fingerprint(config)),
            up_since: Mutex::new(SystemTime::now()),
            slot: Mutex::new(WorkerSlot {
                state: WorkerState::Up {
                    proxy: Arc::new(proxy),
                    killed_because: None,
                },
                claims: 0,
            }),
            slot_changed: Notify::new(),
            lifecycle: Arc::new(tokio::sync::Mutex::new(())),
            active_executions: AtomicUsize::new(0),
            pending_jobs: AtomicUsize::new(0),
            restarts: AtomicU32::new(0),
            death_told: AtomicU32::new(0),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The current worker, waiting while it is being restarted.
    pub(crate) async fn worker(&self) -> Worker {
        loop {
            let changed = self.slot_changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so that a restart ending in between wakes us.
            changed.as_mut().enable();
            if let Some(worker) = self.worker_now() {
                return worker;
            }
            changed.await;
        }
    }

    /// The current worker; `None` while it is being restarted.
    pub(crate) fn worker_now(&self) -> Option<Worker> {
        match &self.slot.lock().state {
            WorkerState::Up {
                proxy,
                killed_because,
            } => Some(match failure_of(proxy, killed_because.as_deref()) {
                None => Worker::Running(Arc::clone(proxy)),
                Some(reason) => Worker::Dead(reason),
            }),
            WorkerState::Restarting => None,
            WorkerState::Stopped { reason } => Some(Worker::Stopped(reason.clone())),
            WorkerState::Down { reason } => Some(Worker::Dead(reason.clone())),
        }
    }

    /// The current worker's process, if one exists (running or dead).
    pub(crate) fn proxy(&self) -> Option<Arc<RemotePluginProxy>> {
        match &self.slot.lock().state {
            WorkerState::Up { proxy, .. } => Some(Arc::clone(proxy)),
            WorkerState::Restarting | WorkerState::Stopped { .. } | WorkerState::Down { .. } => {
                None
            }
        }
    }

    /// Wait for this plugin's lifecycle: one restart, stop or reconfiguration at a
    /// time.
    pub(crate) async fn lock_lifecycle(&self) -> LifecycleLock {
        Arc::clone(&self.lifecycle).lock_owned().await
    }

    /// The plugin's lifecycle if nobody holds it now.
    pub(crate) fn try_lock_lifecycle(&self) -> Option<LifecycleLock> {
        Arc::clone(&self.lifecycle).try_lock_owned().ok()
    }

    /// Take the worker out for a restart, unless `only_if_idle` and an execution
    /// claims it. From now until the returned slot is put back, executions wait; a
    /// slot dropped without being put back (a panic) leaves the plugin dead with the
    /// reason, never `Restarting` for good.
    pub(crate) fn take_for_restart(
        &self,
        only_if_idle: bool,
    ) -> Result<(Option<Arc<RemotePluginProxy>>, RestartSlot<'_>), Busy> {
        let mut slot = self.slot.lock();
        if only_if_idle && slot.claims > 0 {
            return Err(Busy);
        }
        let old = match std::mem::replace(&mut slot.state, WorkerState::Restarting) {
            WorkerState::Up { proxy, .. } => Some(proxy),
            WorkerState::Restarting | WorkerState::Stopped { .. } | WorkerState::Down { .. } => {
                None
            }
        };
        Ok((
            old,
            RestartSlot {
                plugin: self,
                put_back: false,
            },
        ))
    }

    /// End a restart: the new worker, or why there is none; waiting executions go on.
    fn put_back(&self, outcome: SlotOutcome) {
        if matches!(outcome, SlotOutcome::Started(_)) {
            *self.up_since.lock() = SystemTime::now();
        }
        self.slot.lock().state = match outcome {
            SlotOutcome::Started(proxy) => WorkerState::Up {
                proxy,
                killed_because: None,
            },
            SlotOutcome::Stopped(reason) => WorkerState::Stopped { reason },
            SlotOutcome::Failed(reason) => WorkerState::Down { reason },
        };
        self.slot_changed.notify_waiters();
    }

    /// Kill the worker at once, remembering why.
    pub(crate) fn kill(&self, reason: String) {
        let mut slot = self.slot.lock();
        if let WorkerState::Up {
            proxy,
            killed_because,
        } = &mut slot.state
        {
            *killed_because = Some(reason);
            proxy.kill();
        }
    }

    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }

    pub(crate) fn set_restarts(&self, restarts: u32) {
        self.restarts.store(restarts, Ordering::SeqCst);
    }

    pub(crate) fn meta(&self) -> PluginMeta {
        self.meta.lock().clone()
    }

    /// Whether the plugin's worker runs on this machine (and so uses its resources).
    pub(crate) fn runs_here(&self) -> bool {
        self.manifest
            .placement()
            .map_or(true, |placement| placement.is_local())
    }

    pub(crate) fn config(&self) -> ConfigMap {
        self.config.lock().0.clone()
    }

    /// The fingerprint of [`config`](Self::config).
    pub(crate) fn config_fingerprint(&self) -> Arc<str> {
        Arc::clone(&self.config.lock().1)
    }

    pub(crate) fn set_config(&self, config: ConfigMap) {
        *self.config.lock() = with_fingerprint(config);
    }

    /// Executions admitted and not yet finished.
    pub(crate) fn active_executions(&self) -> usize {
        self.active_executions.load(Ordering::SeqCst)
    }

    /// Executions asked for and not finished, waiting ones included.
    /// Queued jobs whose target it is now.
    pub(crate) fn pending_jobs(&self) -> usize {
        self.pending_jobs.load(Ordering::SeqCst)
    }

    pub(crate) fn claims(&self) -> usize {
        self.slot.lock().claims
    }

    /// Since when nothing has run on the plugin's worker: its last execution's end,
    /// or the worker's start if later.
    pub(crate) fn idle_since(&self) -> SystemTime {
        let up_since = *self.up_since.lock();
        self.meta
            .lock()
            .last_executed_at()
            .map_or(up_since, |last| last.max(up_since))
    }

    fn mark_executed(&self, at: SystemTime) {
        self.meta.lock().mark_executed(at);
    }
}

fn with_fingerprint(config: ConfigMap) -> (ConfigMap, Arc<str>) {
    let value = serde_json::Value::Object(config);
    let fingerprint = Arc::from(cjm_validation::schema_fingerprint(&value));
    match value {
        serde_json::Value::Object(config) => (config, fingerprint),
        _ => (ConfigMap::new(), fingerprint),
    }
}

/// How a restart (or stop) ended, for [`LoadedPlugin::put_back`].
#[derive(Debug)]
pub(crate) enum SlotOutcome {
    Started(Arc<RemotePluginProxy>),
    /// Left stopped on purpose, and why.
    Stopped(String),
    /// The start failed, and why.
    Failed(String),
}

/// The lifecycle of one plugin, held.
pub(crate) type LifecycleLock = tokio::sync::OwnedMutexGuard<()>;

/// A worker slot taken out for a restart ([`LoadedPlugin::take_for_restart`]).
#[derive(Debug)]
pub(crate) struct RestartSlot<'a> {
    plugin: &'a LoadedPlugin,
    put_back: bool,
}

impl RestartSlot<'_> {
    /// End the restart with `outcome`.
    pub(crate) fn put_back(mut self, outcome: SlotOutcome) {
        self.put_back = true;
        self.plugin.put_back(outcome);
    }
}

impl Drop for RestartSlot<'_> {
    fn drop(&mut self) {
        if !self.put_back {
            self.plugin.put_back(SlotOutcome::Failed(String::from(
                "could not be restarted: the restart was interrupted",
            )));
        }
    }
}

/// An idle-only restart found the plugin claimed by an execution.
#[derive(Debug)]
pub(crate) struct Busy;

fn failure_of(proxy: &RemotePluginProxy, killed_because: Option<&str>) -> Option<String> {
    if let Some(reason) = killed_because {
        return Some(reason.to_owned());
    }
    if proxy.is_running() {
        return None;
    }
    Some(
        proxy
            .exit_description()
            .unwrap_or_else(|| String::from("was stopped")),
    )
}

/// One admitted execution. Dropping it, however the execution ended (success, error,
/// a dropped future or stream), releases it with the scheduler: the finish hook runs,
/// then the reservation is returned.
#[derive(Debug)]
pub(crate) struct ExecutionGuard {
    /// The metadata the scheduler admitted, handed to its hooks without cloning the
    /// plugin's (config schema included) again on every call.
    meta: PluginMeta,
    scheduler: Arc<dyn ResourceScheduler>,
    _reservation: Reservation,
    claim: ExecutionClaim,
    started: std::time::Instant,
    succeeded: std::sync::atomic::AtomicBool,
    on_end: Option<OnEnd>,
    /// What the scheduler read of the machine when it admitted this (none when its
    /// policy needed no figures).
    view: Option<cjm_scheduling::SystemStats>,
}

/// How an execution ended, for whoever records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExecutionEnd {
    pub(crate) duration: std::time::Duration,
    /// Whether the call returned a result (see [`ExecutionGuard::succeeded`]).
    pub(crate) succeeded: bool,
}

/// Run once when an execution ends, however it ends (from `Drop`: it must not
/// block, nor panic).
pub(crate) struct OnEnd(pub(crate) Box<dyn FnOnce(ExecutionEnd) + Send + Sync>);

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

impl ExecutionGuard {
    pub(crate) fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.claim.plugin
    }

    /// The call returned a result; any other end counts as a failure.
    pub(crate) fn succeeded(&self) {
        self.succeeded.store(true, Ordering::SeqCst);
    }

    /// Have `on_end` told how the execution ended.
    pub(crate) fn on_end(mut self, on_end: Option<OnEnd>) -> Self {
        self.on_end = on_end;
        self
    }

    /// With the machine as the scheduler saw it when it admitted this.
    pub(crate) fn admitted_seeing(mut self, view: Option<cjm_scheduling::SystemStats>) -> Self {
        self.view = view;
        self
    }

    /// What was declared, what is reserved, and the scheduler's view, for the jobs.
    pub(crate) fn admission(&self) -> crate::jobs::ResourceSnapshot {
        let reserved = self._reservation.demand();
        crate::jobs::ResourceSnapshot {
            declared: self.meta.resources.clone(),
            requires_gpu: reserved.requires_gpu,
            reserved_ram_mb: reserved.system_ram_mb,
            reserved_vram_mb: reserved.gpu_vram_mb,
            system_at_admission: self.view.clone(),
        }
    }

    pub(crate) fn begin(
        claim: ExecutionClaim,
        scheduler: Arc<dyn ResourceScheduler>,
        reservation: Reservation,
        mut meta: PluginMeta,
    ) -> Self {
        let plugin = &claim.plugin;
        plugin.active_executions.fetch_add(1, Ordering::SeqCst);
        let now = SystemTime::now();
        plugin.mark_executed(now);
        meta.mark_executed(now);
        scheduler.on_execution_start(&meta);
        ExecutionGuard {
            meta,
            scheduler,
            _reservation: reservation,
            claim,
            started: std::time::Instant::now(),
            succeeded: std::sync::atomic::AtomicBool::new(false),
            on_end: None,

            view: None,
        }
    }
}

impl Drop for ExecutionGuard {
    fn drop(&mut self) {
        let now = SystemTime::now();
        let plugin = &self.claim.plugin;
        plugin.mark_executed(now);
        self.meta.mark_executed(now);
        plugin.active_executions.fetch_sub(1, Ordering::SeqCst);
        self.scheduler.on_execution_finish(&self.meta);
        if let Some(OnEnd(on_end)) = self.on_end.take() {
            on_end(ExecutionEnd {
                duration: self.started.elapsed(),
                succeeded: self.succeeded.load(Ordering::SeqCst),
            });
        }
    }
}

/// An execution asked for, from before admission to its end: while any exists, the
/// plugin is not restarted for being idle (eviction, idle stop).
#[derive(Debug)]
pub(crate) struct ExecutionClaim {
    plugin: Arc<LoadedPlugin>,
}

impl ExecutionClaim {
    pub(crate) fn new(plugin: Arc<LoadedPlugin>) -> Self {
        plugin.slot.lock().claims += 1;
        ExecutionClaim { plugin }
    }

    pub(crate) fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }
}

impl Drop for ExecutionClaim {
    fn drop(&mut self) {
        self.plugin.slot.lock().claims -= 1;
    }
}

/// A queued job's mark on its plugin, from its submission until it runs or ends:
/// a plugin some queued job waits for is not idle memory to take back.
#[derive(Debug)]
pub(crate) struct PendingJob {
    plugin: Arc<LoadedPlugin>,
}

impl PendingJob {
    pub(crate) fn new(plugin: Arc<LoadedPlugin>) -> Self {
        plugin.pending_jobs.fetch_add(1, Ordering::SeqCst);
        PendingJob { plugin }
    }
}

impl Drop for PendingJob {
    fn drop(&mut self) {
        self.plugin.pending_jobs.fetch_sub(1, Ordering::SeqCst);
    }
}
