//! One execution: claim the plugin, make sure its worker runs, admit it through the
//! scheduler (evicting idle GPU plugins when memory is short), call the worker.

use std::sync::Arc;
use std::time::Duration;

use cjm_interface::CallArgs;
use cjm_metadata::PluginMeta;
use cjm_proxy::RemotePluginProxy;
use cjm_scheduling::{never_admissible, Demand, Refusal, Resource, StatsSource};
use serde_json::Value;

use super::PluginManager;
use crate::jobs::host::Waiting;
use crate::loaded::{ExecutionClaim, ExecutionGuard, Worker};
use crate::{ManagerError, PluginStream};

/// # Calls
///
/// Execute a loaded plugin: once, with a typed result, with a time limit of its own,
/// or as a stream of chunks. Each call is claimed, admitted by the scheduler and
/// timed; a stopped or dead worker is started first where the policies allow. For
/// queued calls with progress and cancellation, see [`Jobs`](crate::jobs::Jobs).
impl PluginManager {
    /// Execute a plugin once, after the scheduler admits it, within the plugin's
    /// call timeout if its [`FaultPolicy`](crate::FaultPolicy) sets one.
    pub async fn execute_plugin(&self, name: &str, call: CallArgs) -> Result<Value, ManagerError> {
        self.execute_within(name, call, None).await
    }

    /// [`execute_plugin`](Self::execute_plugin), with a typed result of the original
    /// 0.0.46 (`{"__wire__": kind, "data": ..}`) given as its kind and data.
    pub async fn execute_plugin_output(
        &self,
        name: &str,
        call: CallArgs,
    ) -> Result<cjm_interface::wire::CallOutput, ManagerError> {
        self.execute_plugin(name, call)
            .await
            .map(cjm_interface::wire::CallOutput::from_value)
    }

    /// [`execute_plugin`](Self::execute_plugin) with this call's own time limit. Past
    /// it the call fails with [`ManagerError::Timeout`], and the worker is killed or
    /// left running as the plugin's [`OnTimeout`](crate::OnTimeout) says.
    pub async fn execute_plugin_with_timeout(
        &self,
        name: &str,
        call: CallArgs,
        timeout: Duration,
    ) -> Result<Value, ManagerError> {
        self.execute_within(name, call, Some(timeout)).await
    }

    /// Execute a plugin and receive its results chunk by chunk.
    pub async fn execute_plugin_stream(
        &self,
        name: &str,
        call: CallArgs,
    ) -> Result<PluginStream, ManagerError> {
        let (proxy, execution) = self.begin_execution(name).await?;
        let limit = self.call_timeout(name, None);
        let call_id = stream_call_id();
        let started = proxy.execute_stream_as(call, Some(&call_id));
        let chunks = match limit {
            None => started.await?,
            Some(limit) => match tokio::time::timeout(limit, started).await {
                Ok(chunks) => chunks?,
                Err(_) => return Err(self.timed_out(name, execution.plugin(), limit)),
            },
        };
        let on_timeout = self.shared.options.fault_policy_for(name).on_timeout;
        Ok(PluginStream::new(
            chunks, execution, limit, on_timeout, proxy, call_id,
        ))
    }
}

impl PluginManager {
    async fn execute_within(
        &self,
        name: &str,
        call: CallArgs,
        timeout: Option<Duration>,
    ) -> Result<Value, ManagerError> {
        let (proxy, execution) = self.begin_execution(name).await?;
        let Some(limit) = self.call_timeout(name, timeout) else {
            let result = proxy.execute(call).await?;
            execution.succeeded();
            return Ok(result);
        };
        match tokio::time::timeout(limit, proxy.execute(call)).await {
            Ok(result) => {
                let result = result?;
                execution.succeeded();
                Ok(result)
            }
            Err(_) => Err(self.timed_out(name, execution.plugin(), limit)),
        }
    }

    /// Claim the plugin, have the execution admitted, and bring its worker up if it is
    /// stopped or dead (as its restart policy allows). Admission comes first: a worker
    /// started now takes memory the admission has reserved for it.
    pub(super) async fn begin_execution(
        &self,
        name: &str,
    ) -> Result<(Arc<RemotePluginProxy>, ExecutionGuard), ManagerError> {
        self.begin_execution_telling(name, &|_| {}).await
    }

    /// [`begin_execution`](Self::begin_execution), telling `waiting` why the
    /// scheduler did not admit it at once, before it waits (or evicts) for it.
    pub(super) async fn begin_execution_telling(
        &self,
        name: &str,
        waiting: &(dyn Fn(Waiting<'_>) + Send + Sync),
    ) -> Result<(Arc<RemotePluginProxy>, ExecutionGuard), ManagerError> {
        let claim = ExecutionClaim::new(self.loaded(name)?);
        if self.is_disabled(name) {
            return Err(ManagerError::Disabled {
                name: name.to_owned(),
            });
        }
        let execution = self
            .admit(claim, &|refusal| waiting(Waiting::Refused(refusal)))
            .await?;
        let plugin = execution.plugin();
        if !matches!(plugin.worker_now(), Some(Worker::Running(_))) {
            let placement = crate::launch::placement_key(&plugin.manifest);
            waiting(Waiting::Placement(
                placement.as_deref().unwrap_or("this machine"),
            ));
        }
        let proxy = self.ready_worker(plugin).await?;
        Ok((proxy, execution))
    }

    /// Ask the scheduler; when it refuses for GPU memory, evict idle GPU plugins
    /// first; let a waiting policy wait only when that does not help.
    async fn admit(
        &self,
        claim: ExecutionClaim,
        waiting: &(dyn Fn(&Refusal) + Send + Sync),
    ) -> Result<ExecutionGuard, ManagerError> {
        let mut meta = claim.plugin().meta();
        let stats = self.stats_source();
        if !claim.plugin().runs_here() {
            // Its placement (Ray) admitted it where it runs; it takes nothing here.
            meta.resources = cjm_metadata::ResourceRequirements::default();
        } else {
            let learned_gpu = self.raise_to_learned(claim.plugin(), &mut meta.resources);
            refuse_never_admissible(&meta, &stats).await?;
            if !learned_gpu {
                self.credit_own_gpu_memory(claim.plugin(), &mut meta.resources);
            }
        }
        let scheduler = Arc::clone(&self.shared.options.scheduler);
        let reservation = match scheduler.try_allocate(&meta, &stats).await {
            Ok(reservation) => reservation,
            Err(refusal) if refusal.is_short_of(Resource::GpuMemory) => {
                waiting(&refusal);
                self.evict_for(&meta, scheduler.as_ref(), &stats, &refusal)
                    .await?
            }
            Err(refusal) => {
                waiting(&refusal);
                scheduler.allocate(&meta, &stats).await?
            }
        };
        let on_end = self.call_recorder(claim.plugin());
        Ok(ExecutionGuard::begin(claim, scheduler, reservation, meta)
            .admitted_seeing(stats.seen())
            .on_end(on_end))
    }
}

/// Refuse at once, whatever the policy, an execution that needs more than the
/// machine has in all or than its plugin's declared limit: no release of memory
/// would ever admit it, and a waiting policy would wait for nothing. Figures that
/// cannot be read bound nothing but the declared limits.
async fn refuse_never_admissible(
    meta: &PluginMeta,
    stats: &dyn StatsSource,
) -> Result<(), ManagerError> {
    if Demand::of(&meta.resources).is_nothing() {
        return Ok(());
    }
    // Without figures the declared limits still hold.
    let snapshot = stats.system_stats().await.unwrap_or_default();
    let never = never_admissible(&meta.resources, &snapshot);
    if never.is_empty() {
        return Ok(());
    }
    let refusal = Refusal::never_admissible(&meta.name, never);
    tracing::warn!("{refusal}");
    Err(refusal.into())
}

/// A fresh id for a stream's call, by which [`PluginStream::cancel`] names it.
fn stream_call_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("stream-{}-{n}", std::process::id())
}
