//! Dead workers and hung calls: restarting by policy, call timeouts, status.

use std::sync::Arc;
use std::time::Duration;

use super::{write, PluginManager};
use crate::loaded::LoadedPlugin;
use crate::{ManagerError, OnTimeout, PluginState, PluginStatus};

impl PluginManager {
    /// Whether a loaded plugin's worker is up (`None`: not loaded).
    pub fn plugin_status(&self, name: &str) -> Option<PluginStatus> {
        let plugin = self.loaded(name).ok()?;
        let last_failure = plugin.failure();
        Some(PluginStatus {
            state: if last_failure.is_none() {
                PluginState::Running
            } else {
                PluginState::Dead
            },
            pid: plugin.proxy.pid(),
            restarts: plugin.restarts(),
            last_failure,
        })
    }

    /// Loaded and its worker up.
    pub fn is_running(&self, name: &str) -> bool {
        self.plugin_status(name)
            .is_some_and(|status| status.state == PluginState::Running)
    }

    /// Before an execution: if the plugin's worker is dead, start it again when the
    /// restart policy allows (after its backoff), else fail with
    /// [`ManagerError::NotRunning`]. Not loaded: nothing to do here.
    pub(super) async fn revive_if_dead(&self, name: &str) -> Result<(), ManagerError> {
        let Ok(plugin) = self.loaded(name) else {
            return Ok(());
        };
        if plugin.proxy.is_running() {
            return Ok(());
        }
        let _one_at_a_time = plugin.revive.lock().await;
        // Brought back (or reloaded, or unloaded) while this caller waited.
        match self.loaded(name) {
            Ok(current) if Arc::ptr_eq(&current, &plugin) => {}
            _ => return Ok(()),
        }
        let reason = plugin
            .failure()
            .unwrap_or_else(|| String::from("was stopped"));
        let policy = self.shared.options.fault_policy_for(name).restart;
        let restart = plugin.restarts() + 1;
        if restart > policy.max_restarts {
            return Err(ManagerError::NotRunning {
                name: name.to_owned(),
                reason,
                restarts: plugin.restarts(),
                max_restarts: policy.max_restarts,
            });
        }
        let delay = policy.delay_before(restart);
        tracing::warn!(
            "plugin {name}: worker {reason}; restarting it in {delay:?} (restart {restart} of {})",
            policy.max_restarts
        );
        tokio::time::sleep(delay).await;
        let _busy = self.claim(name)?;
        {
            let mut loaded = write(&self.shared.loaded);
            if !loaded
                .get(name)
                .is_some_and(|current| Arc::ptr_eq(current, &plugin))
            {
                return Ok(());
            }
            loaded.remove(name);
        }
        match self.restart(name, &plugin, plugin.config()).await {
            Ok(()) => {
                if let Ok(revived) = self.loaded(name) {
                    revived.set_restarts(restart);
                }
                tracing::info!("plugin {name}: restarted (restart {restart})");
                Ok(())
            }
            Err(err) => {
                // Keep the dead entry, so that the next execution may try again (and
                // the count keeps growing towards the limit).
                plugin.set_restarts(restart);
                write(&self.shared.loaded)
                    .entry(name.to_owned())
                    .or_insert_with(|| Arc::clone(&plugin));
                tracing::warn!("plugin {name}: restart {restart} failed: {err}");
                Err(err)
            }
        }
    }

    /// The limit on one execution: the caller's, else the plugin's policy.
    pub(super) fn call_timeout(&self, name: &str, asked: Option<Duration>) -> Option<Duration> {
        asked.or(self.shared.options.fault_policy_for(name).call_timeout)
    }

    /// An execution of `plugin` ran past `after`: act on the policy and say so.
    pub(super) fn timed_out(
        &self,
        name: &str,
        plugin: &LoadedPlugin,
        after: Duration,
    ) -> ManagerError {
        let worker_killed = match self.shared.options.fault_policy_for(name).on_timeout {
            OnTimeout::KillWorker => {
                plugin.kill(format!(
                    "was killed by the host after an execution ran past {after:?}"
                ));
                true
            }
            OnTimeout::LeaveRunning => false,
        };
        tracing::warn!(
            "plugin {name}: execution did not finish within {after:?}{}",
            if worker_killed {
                "; killed its worker"
            } else {
                ""
            }
        );
        ManagerError::Timeout {
            name: name.to_owned(),
            after,
            worker_killed,
        }
    }
}
