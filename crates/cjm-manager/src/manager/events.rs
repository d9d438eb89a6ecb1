//! What happens to plugins and their workers, told to whoever listens (a daemon's
//! event stream and metrics): a broadcast of [`PluginEvent`]s, each sent where the
//! change is made, under the lock that makes it, so that listeners see them in the
//! order they happened.
//!
//! A worker's death is seen by a watcher per worker (its exit notice), or by the
//! restart path when a call finds it dead first; whichever comes first tells it, once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cjm_proxy::RemotePluginProxy;
use tokio::sync::broadcast;

use super::PluginManager;
use crate::loaded::LoadedPlugin;

/// How many events a listener may fall behind before it misses some (it is told how
/// many: [`broadcast::error::RecvError::Lagged`]).
pub(super) const EVENTS_BUFFER: usize = 1024;

/// One change of a plugin or of its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginEvent {
    /// The plugin (or instance).
    pub name: String,
    /// What happened.
    pub change: PluginChange,
    /// The worker's process id where it runs, when the change is about one.
    pub pid: Option<u32>,
    /// Why, in words, where there is more to say ("was killed by signal 9").
    pub detail: Option<String>,
    /// Why, in one word, for counting: a death's cause (`exited`, `signal`, `lost`,
    /// `timed_out`), an idle stop's or an eviction's reason (`keep_alive`,
    /// `gpu_memory`).
    pub reason: Option<&'static str>,
}

/// What happened to a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PluginChange {
    /// Loaded: its first worker is up.
    Loaded,
    /// Unloaded: its worker stopped for good.
    Unloaded,
    /// Takes calls again.
    Enabled,
    /// Refuses calls (its worker left running).
    Disabled,
    /// Its worker replaced on request.
    Reloaded,
    /// A worker started (at load, reload, or on demand after an idle stop).
    WorkerStarted,
    /// Its worker ended without the host stopping it, or was killed by the host for
    /// a call that ran too long.
    WorkerDied,
    /// A worker started again by the restart policy after a death.
    WorkerRestarted,
    /// Its worker stopped after its keep-alive passed idle.
    IdleStopped,
    /// Its idle worker stopped to free memory for another plugin.
    Evicted,
}

impl PluginChange {
    /// Its name in snake case (`worker_died`).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginChange::Loaded => "loaded",
            PluginChange::Unloaded => "unloaded",
            PluginChange::Enabled => "enabled",
            PluginChange::Disabled => "disabled",
            PluginChange::Reloaded => "reloaded",
            PluginChange::WorkerStarted => "worker_started",
            PluginChange::WorkerDied => "worker_died",
            PluginChange::WorkerRestarted => "worker_restarted",
            PluginChange::IdleStopped => "idle_stopped",
            PluginChange::Evicted => "evicted",
        }
    }
}

/// # Plugin events
///
/// What happens to plugins and their workers as it happens.
impl PluginManager {
    /// Subscribe to the plugin events from now on: loads, unloads, enable and
    /// disable, reloads, and what happens to workers (started, died, restarted,
    /// stopped idle, evicted). A listener that falls more than 1024 events behind is
    /// told how many it missed.
    pub fn plugin_events(&self) -> broadcast::Receiver<PluginEvent> {
        self.shared.plugin_events.subscribe()
    }
}

impl PluginManager {
    /// Tell the listeners (none listening is no error).
    pub(super) fn announce(
        &self,
        name: &str,
        change: PluginChange,
        pid: Option<u32>,
        detail: Option<String>,
    ) {
        self.announce_why(name, change, pid, detail, None);
    }

    /// [`announce`](Self::announce), with the one-word reason of a death or a stop.
    pub(super) fn announce_why(
        &self,
        name: &str,
        change: PluginChange,
        pid: Option<u32>,
        detail: Option<String>,
        reason: Option<&'static str>,
    ) {
        tracing::debug!("plugin {name}: {}", change.as_str());
        let _ = self.shared.plugin_events.send(PluginEvent {
            name: name.to_owned(),
            change,
            pid,
            detail,
            reason,
        });
    }

    /// `proxy`, `plugin`'s new worker, is up: say so, and watch for its death.
    pub(super) fn worker_up(
        &self,
        plugin: &Arc<LoadedPlugin>,
        proxy: &Arc<RemotePluginProxy>,
        change: PluginChange,
    ) {
        self.announce(plugin.name(), change, Some(proxy.worker_pid()), None);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let exited = proxy.exit_notice();
        // Weak: the watcher must not keep a worker alive (a proxy's drop stops it),
        // nor the plugin or the manager.
        let proxy = Arc::downgrade(proxy);
        let plugin = Arc::downgrade(plugin);
        let manager = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            exited.await;
            let (Some(proxy), Some(plugin), Some(shared)) =
                (proxy.upgrade(), plugin.upgrade(), manager.upgrade())
            else {
                return;
            };
            // Stopped by the host: an unload, a reload, an idle stop; not a death
            // (a kill for a call past its time is told where it is made).
            if proxy.stopped_by_host() {
                return;
            }
            let detail = proxy
                .exit_description()
                .unwrap_or_else(|| String::from("ended"));
            let cause = proxy.exit_cause().unwrap_or("lost");
            PluginManager { shared }.worker_died(&plugin, proxy.worker_pid(), detail, cause);
        });
    }

    /// Tell the death of `plugin`'s worker `pid`, unless it was told already.
    pub(super) fn worker_died(
        &self,
        plugin: &LoadedPlugin,
        pid: u32,
        detail: String,
        cause: &'static str,
    ) {
        let told = plugin.death_told.swap(pid, Ordering::SeqCst);
        if told != pid {
            self.announce_why(
                plugin.name(),
                PluginChange::WorkerDied,
                Some(pid),
                Some(detail),
                Some(cause),
            );
        }
    }
}
