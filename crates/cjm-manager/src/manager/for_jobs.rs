//! The narrow interface the job queue (`crate::jobs`) uses: an admitted execution to
//! run a call on, and the forced stop of a plugin's worker. Nothing else of the
//! manager is the queue's business.

use std::sync::Arc;
use std::time::Duration;

use cjm_interface::wire::ProgressResponse;
use cjm_interface::CallArgs;
use cjm_metadata::Launch;
use cjm_proxy::{ProxyError, RemotePluginProxy};
use serde_json::Value;

use super::lifecycle::Replacement;
use super::PluginManager;
use crate::loaded::ExecutionGuard;
use crate::{FaultPolicy, ManagerError};

/// How a watcher learns of a call's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressFeed {
    /// Our workers: `/progress` answers at the next report (long poll).
    Push,
    /// The original's Python worker: `/progress` answers at once; ask again.
    Poll,
}

impl ProgressFeed {
    /// How the worker of `manifest` reports progress.
    pub(crate) fn of(manifest: &cjm_metadata::Manifest) -> Self {
        match manifest.launch {
            Launch::Native { .. } => ProgressFeed::Push,
            _ => ProgressFeed::Poll,
        }
    }
}

/// An execution the scheduler has admitted, on a running worker. The admission (and
/// its reservation) lasts until this is dropped.
#[derive(Debug)]
pub(crate) struct JobExecution {
    pub(crate) proxy: Arc<RemotePluginProxy>,
    pub(crate) feed: ProgressFeed,
    pub(crate) policy: FaultPolicy,
    _guard: ExecutionGuard,
}

impl JobExecution {
    /// The plugin it runs on.
    pub(crate) fn plugin(&self) -> &str {
        self.proxy.name()
    }

    /// Run `call` as call `call_id`, within the plugin's call timeout if it has one:
    /// its result, and its last progress report where the worker sent it along.
    pub(crate) async fn run(
        &self,
        call: CallArgs,
        call_id: &str,
    ) -> Result<(Value, Option<ProgressResponse>), ManagerError> {
        let running = self.proxy.execute_reporting(call, Some(call_id));
        match self.policy.call_timeout {
            None => Ok(running.await?),
            Some(limit) => match tokio::time::timeout(limit, running).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(ManagerError::Timeout {
                    name: self.proxy.name().to_owned(),
                    after: limit,
                    worker_killed: false,
                }),
            },
        }
    }

    /// Ask call `call_id` to stop; `false` when the worker cannot be asked (no
    /// `/cancel`, as the original 0.0.20's) and only a forced stop will do. A call
    /// the worker has not seen yet counts as asked: the cancel overtook it, and the
    /// worker refuses it as cancelled when it arrives. The ask itself is bounded: a
    /// worker that cannot answer (the original 0.0.20 serves nothing while a call
    /// runs) counts as asked, so that the cancel timeout that follows forces it.
    pub(crate) async fn ask_to_cancel(&self, call_id: &str) -> bool {
        // Our workers answer `/cancel` at once, on a connection of its own.
        const ASK_LIMIT: Duration = Duration::from_secs(5);
        let asked = tokio::time::timeout(ASK_LIMIT, self.proxy.cancel(Some(call_id))).await;
        match asked {
            Ok(Ok(answer)) => match answer.status.as_str() {
                cjm_interface::wire::CANCEL_STATUS_NOT_SUPPORTED => false,
                cjm_interface::wire::CANCEL_STATUS_REMEMBERED => {
                    tracing::debug!(
                        "call {call_id} had not reached its worker; it will be refused there"
                    );
                    true
                }
                // Cancelled, or an error such as "already ended": the call's end is
                // on its way to the job, or the cancel timeout forces it.
                _ => true,
            },
            Ok(Err(err)) => {
                tracing::warn!("{err}");
                true
            }
            Err(_) => {
                tracing::warn!(
                    "plugin {}: no answer to the cancel of call {call_id} within {ASK_LIMIT:?}",
                    self.proxy.name()
                );
                true
            }
        }
    }

    /// The call's progress: the next report after `after` (waiting up to `wait` for
    /// it, with our workers), as `(seq, fraction, message, finished)`.
    pub(crate) async fn progress(
        &self,
        call_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<(Option<u64>, f64, String, bool), ProxyError> {
        let answer = match self.feed {
            ProgressFeed::Push => self.proxy.progress(Some(call_id), Some(after), Some(wait)),
            ProgressFeed::Poll => self.proxy.progress(None, None, None),
        }
        .await?;
        Ok((
            answer.seq,
            answer.progress,
            answer.message,
            answer.finished.unwrap_or(false),
        ))
    }
}

impl PluginManager {
    /// Claim `name`, have the execution admitted (evicting as usual), and make sure
    /// its worker runs: what [`execute_plugin`](Self::execute_plugin) does before it
    /// sends the call.
    pub(crate) async fn begin_job_execution(
        &self,
        name: &str,
    ) -> Result<JobExecution, ManagerError> {
        let (proxy, guard) = self.begin_execution(name).await?;
        let feed = ProgressFeed::of(&guard.plugin().manifest);
        Ok(JobExecution {
            proxy,
            feed,
            policy: *self.shared.options.fault_policy_for(name),
            _guard: guard,
        })
    }

    /// Kill a plugin's worker and start it again with its configuration.
    pub(crate) async fn force_restart(&self, name: &str, why: &str) -> Result<(), ManagerError> {
        self.force_replace(name, why, || true, AfterKill::Restart)
            .await
            .map(drop)
    }

    /// Kill a plugin's worker, unless `still_needed` says otherwise once this caller
    /// has the plugin to itself (a call that ended while the kill waited for its turn
    /// must not cost the worker a later call now runs on); then start it again, or
    /// leave the plugin stopped (it starts again, with its configuration, on its next
    /// call: for a host that will not call it soon, a restart would only load what is
    /// about to be dropped).
    ///
    /// A worker the host attached to is someone else's: it is left as it is
    /// ([`Forced::NotOwned`]). Letting it go and attaching again would stop nothing,
    /// and would wait for the very call being stopped (the configuration a fresh
    /// attach sends waits for the plugin's running calls).
    pub(crate) async fn force_replace(
        &self,
        name: &str,
        why: &str,
        still_needed: impl Fn() -> bool,
        after: AfterKill,
    ) -> Result<Forced, ManagerError> {
        let plugin = self.loaded(name)?;
        let _one_at_a_time = plugin.lifecycle.lock().await;
        if !still_needed() {
            tracing::debug!("plugin {name}: not killing its worker after all ({why}: ended)");
            return Ok(Forced::NotNeeded);
        }
        if plugin.proxy().is_some_and(|proxy| !proxy.owns_worker()) {
            tracing::warn!(
                "plugin {name}: its worker is not this host's to kill ({why}); the call is left to end there"
            );
            return Ok(Forced::NotOwned);
        }
        tracing::warn!("plugin {name}: killing its worker ({why})");
        let config = plugin.config();
        self.replace_worker(
            &plugin,
            Replacement {
                config,
                only_if_idle: false,
                kill_old: true,
                leave_stopped: match after {
                    AfterKill::Restart => None,
                    AfterKill::LeaveStopped => Some(why.to_owned()),
                },
            },
        )
        .await
        .map(|_| Forced::Replaced)
    }
}

/// What [`PluginManager::force_replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forced {
    /// The worker was killed (and started again or left stopped, as asked).
    Replaced,
    /// The call had ended meanwhile: nothing was done.
    NotNeeded,
    /// The worker is someone else's (attached): nothing was done.
    NotOwned,
}

/// What [`PluginManager::force_replace`] does once the worker is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterKill {
    /// Start it again now.
    Restart,
    /// Leave the plugin stopped until its next call.
    LeaveStopped,
}
