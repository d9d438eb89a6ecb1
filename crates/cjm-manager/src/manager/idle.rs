//! Idle stop: a worker idle past its plugin's keep-alive is stopped (freeing what it
//! holds, GPU memory first of all) and starts again, with its configuration, on the
//! plugin's next call. The stop is eviction's (`stop_while_idle`): one mechanism.
//!
//! One task per manager sweeps the loaded plugins, waking at the next deadline (at
//! most a second apart, so that a plugin loaded later is seen soon). It holds the
//! manager only while it sweeps: dropping the last clone ends it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::events::PluginChange;
use super::PluginManager;
use crate::loaded::{LoadedPlugin, Worker};

/// The longest the sweeper sleeps, and the shortest: deadlines closer than this are
/// met a little late rather than spun on.
const MAX_SWEEP_WAIT: Duration = Duration::from_secs(1);
const MIN_SWEEP_WAIT: Duration = Duration::from_millis(10);

impl PluginManager {
    /// How long `plugin`'s worker may stay idle: the host's word for the plugin, else
    /// its manifest's `keep_alive_secs`, else the host's default; `None`: forever.
    pub(super) fn keep_alive_of(&self, plugin: &LoadedPlugin) -> Option<Duration> {
        let options = &self.shared.options;
        options
            .plugin_keep_alive
            .get(plugin.name())
            .copied()
            .or_else(|| plugin.manifest.keep_alive())
            .or(options.keep_alive)
    }

    /// When `plugin`'s worker will be stopped for idleness if nothing runs on it
    /// before; `None` when it has no keep-alive or no running worker.
    pub(super) fn idle_stop_at(&self, plugin: &LoadedPlugin) -> Option<SystemTime> {
        let keep_alive = self.keep_alive_of(plugin)?;
        matches!(plugin.worker_now(), Some(Worker::Running(_)))
            .then(|| plugin.idle_since() + keep_alive)
    }

    /// Start the sweeper, once per manager, if a keep-alive may apply to `plugin`.
    pub(super) fn watch_idleness(&self, plugin: &LoadedPlugin) {
        if self.keep_alive_of(plugin).is_none()
            || self.shared.idle_sweeper.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared.idle_sweeper.store(false, Ordering::SeqCst);
            return;
        };
        let shared = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            loop {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let wait = PluginManager { shared }.stop_idle_workers().await;
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Stop every worker idle past its keep-alive; how long until the next deadline.
    async fn stop_idle_workers(&self) -> Duration {
        let plugins: Vec<Arc<LoadedPlugin>> = self.shared.loaded.read().values().cloned().collect();
        let mut next = MAX_SWEEP_WAIT;
        for plugin in plugins {
            let Some(deadline) = self.idle_stop_at(&plugin) else {
                continue;
            };
            match deadline.duration_since(SystemTime::now()) {
                Ok(left) => next = next.min(left),
                Err(_) if plugin.claims() == 0 => {
                    let keep_alive = self.keep_alive_of(&plugin).unwrap_or_default();
                    let reason = format!("was stopped after {keep_alive:?} idle (its keep-alive)");
                    if self
                        .stop_while_idle(&plugin, reason, PluginChange::IdleStopped)
                        .await
                    {
                        tracing::info!(
                            "stopped plugin {} after {keep_alive:?} idle",
                            plugin.name()
                        );
                    }
                }
                // A call is on its way: its end starts the idle time again.
                Err(_) => {}
            }
        }
        next.max(MIN_SWEEP_WAIT)
    }
}
