//! Freeing GPU memory for a refused execution by stopping idle GPU plugins, least
//! recently used first. A stopped plugin stays loaded, with its configuration, and
//! starts again on its next execution.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cjm_metadata::PluginMeta;
use cjm_scheduling::{Reservation, Resource, ResourceScheduler};

use super::lifecycle::{Replaced, Replacement};
use super::{ManagerStats, PluginManager};
use crate::launch::placement_key;
use crate::loaded::LoadedPlugin;
use crate::ManagerError;

impl PluginManager {
    /// After `meta`'s execution was refused for GPU memory: stop idle GPU plugins
    /// (never the requester, never one with executions asked for), least recently
    /// used first, asking the scheduler again after each. When that is not enough the
    /// policy gets its say (a waiting one waits), then the error names what was done.
    pub(super) async fn evict_for(
        &self,
        meta: &PluginMeta,
        scheduler: &dyn ResourceScheduler,
        stats: &ManagerStats<'_>,
    ) -> Result<Reservation, ManagerError> {
        let mut evicted = Vec::new();
        let mut tried = HashSet::new();
        while let Some(victim) = self.least_recently_used_idle_gpu_plugin(&meta.name, &tried) {
            tried.insert(victim.name().to_owned());
            if !self.stop_if_idle(&victim, &meta.name).await {
                continue;
            }
            tracing::info!(
                "stopped idle GPU plugin {} to free memory for {}",
                victim.name(),
                meta.name
            );
            evicted.push(victim.name().to_owned());
            match scheduler.try_allocate(meta, stats).await {
                Ok(reservation) => return Ok(reservation),
                Err(refusal) if refusal.is_short_of(Resource::GpuMemory) => {}
                // GPU memory fits now; what else is short is the policy's to decide.
                Err(_) => break,
            }
        }
        match scheduler.allocate(meta, stats).await {
            Ok(reservation) => Ok(reservation),
            Err(refusal) if refusal.is_short_of(Resource::GpuMemory) => {
                Err(ManagerError::NotEnoughGpuMemory {
                    refusal: Box::new(refusal),
                    evicted,
                    busy: self.busy_gpu_plugins(&meta.name),
                })
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// While `requester`'s worker waits for resources where it is placed (a Ray job
    /// pending): stop the least recently used idle GPU plugin placed by the same
    /// cluster, which frees what it held there. One per call; the placement calls
    /// again while it still waits.
    ///
    /// Boxed as `Send`: it may restart workers, whose start may call it again.
    pub(crate) fn evict_for_placement(
        &self,
        requester: String,
        placement: String,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let manager = self.clone();
        Box::pin(async move {
            let requester = requester.as_str();
            let placement = placement.as_str();
            let candidates: Vec<Arc<LoadedPlugin>> = {
                let mut idle: Vec<_> = manager
                    .shared
                    .loaded
                    .read()
                    .values()
                    .filter(|plugin| {
                        plugin.name() != requester
                            && plugin.claims() == 0
                            && plugin.proxy().is_some_and(|proxy| proxy.is_running())
                            && plugin.meta().resources.requires_gpu
                            && placement_key(&plugin.manifest).as_deref() == Some(placement)
                    })
                    .map(|plugin| (plugin.meta().last_executed, Arc::clone(plugin)))
                    .collect();
                idle.sort_by(|(a, _), (b, _)| a.total_cmp(b));
                idle.into_iter().map(|(_, plugin)| plugin).collect()
            };
            for victim in candidates {
                if manager.stop_if_idle(&victim, requester).await {
                    tracing::info!(
                        "stopped idle GPU plugin {} ({placement}) while {requester} waits there",
                        victim.name()
                    );
                    return;
                }
            }
        })
    }

    /// Running GPU plugins nobody claims, least recently used first.
    fn least_recently_used_idle_gpu_plugin(
        &self,
        requester: &str,
        tried: &HashSet<String>,
    ) -> Option<Arc<LoadedPlugin>> {
        self.shared
            .loaded
            .read()
            .values()
            .filter(|plugin| {
                plugin.name() != requester
                    && !tried.contains(plugin.name())
                    && plugin.claims() == 0
                    && plugin.proxy().is_some_and(|proxy| proxy.is_running())
                    && plugin.meta().resources.requires_gpu
                    // Stopping a worker elsewhere frees nothing on this machine.
                    && plugin.runs_here()
            })
            .map(|plugin| (plugin.meta().last_executed, plugin))
            .min_by(|(a_time, a), (b_time, b)| {
                a_time
                    .total_cmp(b_time)
                    .then_with(|| a.name().cmp(b.name()))
            })
            .map(|(_, plugin)| Arc::clone(plugin))
    }

    fn busy_gpu_plugins(&self, requester: &str) -> Vec<String> {
        let mut busy: Vec<String> = self
            .shared
            .loaded
            .read()
            .values()
            .filter(|plugin| {
                plugin.name() != requester
                    && plugin.claims() > 0
                    && plugin.meta().resources.requires_gpu
            })
            .map(|plugin| plugin.name().to_owned())
            .collect();
        busy.sort();
        busy
    }

    /// Stop `plugin`'s worker if nothing is asked of it (checked again at the moment
    /// of the stop); whether it was stopped.
    async fn stop_if_idle(&self, plugin: &Arc<LoadedPlugin>, requester: &str) -> bool {
        self.stop_while_idle(
            plugin,
            format!("was stopped while idle to free GPU memory for {requester}"),
        )
        .await
    }

    /// The one way an idle worker is stopped (eviction, idle stop): only if nothing is
    /// asked of it at the moment of the stop. It stays loaded, stopped with `reason`,
    /// and starts again with its configuration on its next call. Whether it was
    /// stopped.
    pub(super) async fn stop_while_idle(&self, plugin: &Arc<LoadedPlugin>, reason: String) -> bool {
        // A plugin whose worker is being replaced right now is not idle.
        let Some(lock) = plugin.try_lock_lifecycle() else {
            return false;
        };
        if plugin.claims() > 0 || !self.is_loaded(plugin.name()) {
            return false;
        }
        let config = self.config_to_keep(plugin).await;
        let stopped = self
            .replace_worker(
                plugin,
                lock,
                Replacement {
                    config,
                    only_if_idle: true,
                    kill_old: false,
                    leave_stopped: Some(reason),
                },
            )
            .await;
        matches!(stopped, Ok(Replaced::Done))
    }
}
