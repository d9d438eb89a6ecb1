//! Workers that are not running when an execution needs them (dead, or stopped while
//! idle), hung calls, and the status the manager reports.

use std::sync::Arc;
use std::time::Duration;

use cjm_proxy::RemotePluginProxy;

use super::events::PluginChange;
use super::lifecycle::Replacement;
use super::PluginManager;
use crate::loaded::{LoadedPlugin, Worker};
use crate::{ManagerError, OnTimeout};

impl PluginManager {
    /// The plugin's running worker for an execution: a stopped one is started again,
    /// a dead one restarted when the restart policy allows (after its backoff), else
    /// the execution fails with [`ManagerError::NotRunning`].
    pub(super) async fn ready_worker(
        &self,
        plugin: &Arc<LoadedPlugin>,
    ) -> Result<Arc<RemotePluginProxy>, ManagerError> {
        loop {
            let worker = plugin.worker().await;
            let proxy = match worker {
                Worker::Running(proxy) => return Ok(proxy),
                Worker::Stopped(_) | Worker::Dead(_) => self.bring_back(plugin).await?,
            };
            if let Some(proxy) = proxy {
                return Ok(proxy);
            }
        }
    }

    /// One caller at a time brings the worker back; the others find it running when
    /// they get the lock. `Ok(None)`: look again.
    async fn bring_back(
        &self,
        plugin: &Arc<LoadedPlugin>,
    ) -> Result<Option<Arc<RemotePluginProxy>>, ManagerError> {
        let name = plugin.name();
        let lock = plugin.lock_lifecycle().await;
        if !self.is_loaded(name) {
            return Err(ManagerError::NotLoaded {
                name: name.to_owned(),
            });
        }
        let reason = match plugin.worker_now() {
            Some(Worker::Running(proxy)) => return Ok(Some(proxy)),
            None => return Ok(None),
            Some(Worker::Stopped(reason)) => {
                tracing::info!("plugin {name}: starting its worker again (it {reason})");
                self.replace_worker(plugin, lock, Replacement::start(plugin.config()))
                    .await?;
                return Ok(None);
            }
            Some(Worker::Dead(reason)) => reason,
        };
        if let Some(proxy) = plugin.proxy() {
            let cause = proxy.exit_cause().unwrap_or("lost");
            self.worker_died(plugin, proxy.worker_pid(), reason.clone(), cause);
        }
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
        // Counted whether or not it works, so that a plugin that cannot start runs
        // into the limit instead of being retried for ever.
        plugin.set_restarts(restart);
        let replacement = Replacement {
            started_as: PluginChange::WorkerRestarted,
            ..Replacement::start(plugin.config())
        };
        self.replace_worker(plugin, lock, replacement).await?;
        tracing::info!("plugin {name}: restarted (restart {restart})");
        Ok(None)
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
                let reason =
                    format!("was killed by the host after an execution ran past {after:?}");
                let pid = plugin.proxy().map(|proxy| proxy.worker_pid());
                plugin.kill(reason.clone());
                if let Some(pid) = pid {
                    self.worker_died(plugin, pid, reason, "timed_out");
                }
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
