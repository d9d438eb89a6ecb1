//! The manager as the job queue's host (`crate::jobs::host`): an admitted execution
//! to run a call on, and the forced stop of a plugin's worker. Nothing else of the
//! manager is the queue's business.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::envelope::{Account, CallEnvelope};
use cjm_interface::wire::ProgressResponse;
use cjm_interface::CallArgs;
use cjm_metadata::Launch;
use cjm_proxy::{ProxyError, RemotePluginProxy};
use serde_json::Value;

use super::lifecycle::Replacement;
use super::PluginManager;
use crate::jobs::host::{Addressed, BoxFuture, Chunks, JobCall, JobHost, Progress, Waiting};
use crate::loaded::ExecutionGuard;
use crate::{FaultPolicy, ManagerError, OnTimeout, PluginStream, RetryPolicy};

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
    guard: ExecutionGuard,
    /// The accounts the worker sent with this execution's calls, until the job
    /// takes them for its journal.
    accounts: parking_lot::Mutex<Vec<Account>>,
    /// What this execution's calls cost, until the job takes it for its journal.
    metrics: parking_lot::Mutex<Vec<cjm_proxy::CallMetrics>>,
}

impl JobExecution {
    /// Run `call` as call `call_id` within the plugin's call timeout if it has one.
    /// Past it, the plugin's `OnTimeout` is applied as for any call: its worker is
    /// killed, or (left running) the call is asked to stop, so that it does not go on
    /// beside whatever the job does next.
    async fn run_call(
        &self,
        call: CallArgs,
        call_id: &str,
        to: Addressed<'_>,
    ) -> Result<(Value, Option<ProgressResponse>), ManagerError> {
        let running = async {
            let answered = self
                .proxy
                .call_enveloped(to.target, call, Some(call_id), Some(to.envelope))
                .await;
            self.accounts.lock().extend(answered.accounts);
            self.metrics.lock().push(answered.metrics);
            answered.result
        };
        let Some(limit) = self.policy.call_timeout else {
            let result = running.await?;
            self.guard.succeeded();
            return Ok(result);
        };
        if let Ok(result) = tokio::time::timeout(limit, running).await {
            let result = result?;
            self.guard.succeeded();
            return Ok(result);
        }
        let name = self.proxy.name();
        let worker_killed = match self.policy.on_timeout {
            OnTimeout::KillWorker => {
                self.guard.plugin().kill(format!(
                    "was killed by the host after job call {call_id} ran past {limit:?}"
                ));
                true
            }
            OnTimeout::LeaveRunning => {
                if let Err(err) = self.proxy.cancel(Some(call_id)).await {
                    tracing::warn!(
                        "plugin {name}: cannot ask timed-out call {call_id} to stop: {err}"
                    );
                }
                false
            }
        };
        tracing::warn!(
            "plugin {name}: job call {call_id} did not finish within {limit:?}{}",
            if worker_killed {
                "; killed its worker"
            } else {
                "; asked it to stop"
            }
        );
        Err(ManagerError::Timeout {
            name: name.to_owned(),
            after: limit,
            worker_killed,
        })
    }

    /// Ask call `call_id` to stop; `false` when the worker cannot be asked (no
    /// `/cancel`, as the original 0.0.20's) and only a forced stop will do. A call
    /// the worker has not seen yet counts as asked: the cancel overtook it, and the
    /// worker refuses it as cancelled when it arrives. The ask itself is bounded: a
    /// worker that cannot answer (the original 0.0.20 serves nothing while a call
    /// runs) counts as asked, so that the cancel timeout that follows forces it.
    async fn ask(&self, call_id: &str) -> bool {
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

    async fn progress_of(
        &self,
        call_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Progress, ProxyError> {
        let answer = match self.feed {
            ProgressFeed::Push => self.proxy.progress(Some(call_id), Some(after), Some(wait)),
            ProgressFeed::Poll => self.proxy.progress(None, None, None),
        }
        .await?;
        Ok(Progress {
            seq: answer.seq,
            fraction: answer.progress,
            message: answer.message,
            finished: answer.finished.unwrap_or(false),
        })
    }
}

impl JobCall for JobExecution {
    fn plugin(&self) -> &str {
        self.proxy.name()
    }

    fn retry(&self) -> RetryPolicy {
        self.policy.retry
    }

    fn resources(&self) -> Option<crate::jobs::ResourceSnapshot> {
        Some(self.admission())
    }

    fn run<'a>(
        &'a self,
        call: CallArgs,
        call_id: &'a str,
        to: Addressed<'a>,
    ) -> BoxFuture<'a, Result<(Value, Option<ProgressResponse>), ManagerError>> {
        Box::pin(self.run_call(call, call_id, to))
    }

    fn take_accounts(&self) -> Vec<Account> {
        std::mem::take(&mut *self.accounts.lock())
    }

    fn take_metrics(&self) -> Vec<cjm_proxy::CallMetrics> {
        std::mem::take(&mut *self.metrics.lock())
    }

    fn stream<'a>(
        &'a self,
        call: CallArgs,
        call_id: &'a str,
        envelope: &'a CallEnvelope,
    ) -> BoxFuture<'a, Result<Chunks<'a>, ManagerError>> {
        Box::pin(async move {
            let limit = self.policy.call_timeout;
            let started = self
                .proxy
                .execute_stream_enveloped(call, Some(call_id), Some(envelope));
            let chunks = match limit {
                None => started.await?,
                Some(limit) => match tokio::time::timeout(limit, started).await {
                    Ok(chunks) => chunks?,
                    Err(_) => {
                        return Err(ManagerError::Timeout {
                            name: self.proxy.name().to_owned(),
                            after: limit,
                            worker_killed: false,
                        })
                    }
                },
            };
            let stream = PluginStream::for_job(
                chunks,
                Arc::clone(self.guard.plugin()),
                limit,
                self.policy.on_timeout,
                Arc::clone(&self.proxy),
                call_id.to_owned(),
            );
            Ok(Box::pin(ManagerChunks(stream)) as Chunks<'a>)
        })
    }

    fn ask_to_cancel<'a>(&'a self, call_id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(self.ask(call_id))
    }

    fn progress<'a>(
        &'a self,
        call_id: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Progress, ProxyError>> {
        Box::pin(self.progress_of(call_id, after, wait))
    }
}

/// A job's stream, its errors the manager's.
struct ManagerChunks(PluginStream);

impl futures_core::Stream for ManagerChunks {
    type Item = Result<Value, ManagerError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let stream = std::pin::Pin::new(&mut self.get_mut().0);
        stream
            .poll_next(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map_err(ManagerError::from)))
    }
}

impl JobExecution {
    fn admission(&self) -> crate::jobs::ResourceSnapshot {
        self.guard.admission()
    }
}

impl JobHost for PluginManager {
    fn is_loaded(&self, plugin: &str) -> bool {
        PluginManager::is_loaded(self, plugin)
    }

    fn is_disabled(&self, plugin: &str) -> bool {
        PluginManager::is_disabled(self, plugin)
    }

    fn default_journal(&self) -> PathBuf {
        self.options().home.journal_path()
    }

    fn log_path(&self, plugin: &str) -> Option<PathBuf> {
        Some(self.options().home.log_path(plugin))
    }

    fn diagnostics_store(&self, path: &std::path::Path) {
        *self.shared.diagnostics_db.lock() = Some(path.to_owned());
    }

    fn observability(&self, plugin: &str) -> Option<cjm_metadata::Observability> {
        self.loaded(plugin).ok()?.manifest.observability()
    }

    fn pending_target(&self, plugin: &str) -> Option<crate::jobs::host::PendingHold> {
        let plugin = self.loaded(plugin).ok()?;
        Some(Box::new(crate::loaded::PendingJob::new(plugin)))
    }

    fn begin<'a>(
        &'a self,
        plugin: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn JobCall>, ManagerError>> {
        Box::pin(async move {
            let execution = self.begin_job_execution(plugin).await?;
            Ok(Arc::new(execution) as Arc<dyn JobCall>)
        })
    }

    fn begin_telling<'a>(
        &'a self,
        plugin: &'a str,
        waiting: Box<dyn Fn(Waiting<'_>) + Send + Sync + 'a>,
    ) -> BoxFuture<'a, Result<Arc<dyn JobCall>, ManagerError>> {
        Box::pin(async move {
            let (proxy, guard) = self.begin_execution_telling(plugin, &*waiting).await?;
            Ok(Arc::new(self.job_execution(plugin, proxy, guard)) as Arc<dyn JobCall>)
        })
    }

    fn force_stop<'a>(
        &'a self,
        plugin: &'a str,
        why: String,
        still_needed: Box<dyn Fn() -> bool + Send + Sync + 'a>,
        after: AfterKill,
    ) -> BoxFuture<'a, Result<Forced, ManagerError>> {
        Box::pin(async move { self.force_replace(plugin, &why, still_needed, after).await })
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
        Ok(self.job_execution(name, proxy, guard))
    }

    fn job_execution(
        &self,
        name: &str,
        proxy: Arc<RemotePluginProxy>,
        guard: ExecutionGuard,
    ) -> JobExecution {
        let feed = ProgressFeed::of(&guard.plugin().manifest);
        JobExecution {
            proxy,
            feed,
            policy: *self.shared.options.fault_policy_for(name),
            guard,
            accounts: parking_lot::Mutex::new(Vec::new()),
            metrics: parking_lot::Mutex::new(Vec::new()),
        }
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
        let lock = plugin.lock_lifecycle().await;
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
        self.replace_worker(
            &plugin,
            lock,
            Replacement {
                kill_old: true,
                leave_stopped: match after {
                    AfterKill::Restart => None,
                    AfterKill::LeaveStopped => Some(why.to_owned()),
                },
                ..Replacement::start(plugin.config())
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
