//! Freeing GPU memory for a refused execution by stopping idle GPU plugins, largest
//! first (the successor's rule, `cjm_scheduling::plan_eviction`). A stopped plugin stays loaded, with its configuration, and
//! starts again on its next execution.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cjm_metadata::PluginMeta;
use cjm_scheduling::{
    plan_eviction, EvictionCandidate, Refusal, Reservation, Resource, ResourceScheduler,
};

use cjm_proxy::{Endpoint, Shortfall};

use super::events::PluginChange;
use super::lifecycle::{Replaced, Replacement};
use super::{ManagerStats, PluginManager};
use crate::launch::{placement_key, ray_gpu_held};
use crate::loaded::LoadedPlugin;
use crate::ManagerError;

impl PluginManager {
    /// After `meta`'s execution was refused for GPU memory (`refusal`): stop idle
    /// GPU plugins by the successor's rule ([`plan_eviction`]: largest first, until
    /// 1.25 times the shortfall is freed; never one measured hollow, busy, the
    /// target of a queued job, or the requester), then ask the scheduler again;
    /// while it is still short and some are left, plan again. When that is not
    /// enough the policy gets its say (a waiting one waits), then the error names
    /// what was done.
    pub(super) async fn evict_for(
        &self,
        meta: &PluginMeta,
        scheduler: &dyn ResourceScheduler,
        stats: &ManagerStats<'_>,
        refusal: &Refusal,
    ) -> Result<Reservation, ManagerError> {
        let mut evicted = Vec::new();
        let mut tried = HashSet::new();
        let mut short_mb = gpu_shortfall_mb(refusal);
        while let Some(shortfall_mb) = short_mb {
            let (plugins, candidates) = self.eviction_candidates(&meta.name, &tried);
            let plan = plan_eviction(shortfall_mb, &candidates);
            if plan.victims.is_empty() {
                break;
            }
            tracing::info!(
                "{} is {shortfall_mb:.0} MiB of GPU memory short: stopping {} idle GPU \
                 plugin(s) to free {:.0} MiB",
                meta.name,
                plan.victims.len(),
                plan.target_mb
            );
            for index in plan.victims {
                let victim = &plugins[index];
                tried.insert(victim.name().to_owned());
                if self.stop_if_idle(victim, &meta.name).await {
                    tracing::info!(
                        "stopped idle GPU plugin {} (holding {:.0} MiB) to free memory for {}",
                        victim.name(),
                        candidates[index].freeable_mb().unwrap_or(0.0),
                        meta.name
                    );
                    evicted.push(victim.name().to_owned());
                }
            }
            short_mb = match scheduler.try_allocate(meta, stats).await {
                Ok(reservation) => return Ok(reservation),
                Err(refusal) => gpu_shortfall_mb(&refusal),
            };
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
    /// pending for GPU memory): stop one idle GPU plugin placed by the same cluster on
    /// a node named in `shortfall`, where the idle ones could free what is missing,
    /// one that frees it all alone first, least recently used first. The name of the
    /// one stopped; `None` when none would help (nothing is stopped then). One per
    /// call: the placement calls again only once what this one freed was seen free.
    ///
    /// Boxed as `Send`: it may restart workers, whose start may call it again.
    pub(crate) fn evict_for_placement(
        &self,
        requester: String,
        placement: String,
        shortfall: Shortfall,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send>> {
        let manager = self.clone();
        Box::pin(async move {
            let requester = requester.as_str();
            let placement = placement.as_str();
            let (plugins, candidates): (Vec<Arc<LoadedPlugin>>, Vec<Candidate>) = manager
                .gpu_plugins_besides(requester)
                .into_iter()
                .filter(|plugin| {
                    plugin.claims() == 0
                        && placement_key(&plugin.manifest).as_deref() == Some(placement)
                })
                .filter_map(|plugin| {
                    let proxy = plugin.proxy().filter(|proxy| proxy.is_running())?;
                    let Endpoint::Tls { host, .. } = proxy.endpoint() else {
                        return None;
                    };
                    let candidate = Candidate {
                        node: host
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                        held: ray_gpu_held(&plugin.manifest)?,
                        last_used: plugin.meta().last_executed,
                    };
                    Some((plugin, candidate))
                })
                .unzip();
            let order = eviction_order(&candidates, &shortfall);
            if order.is_empty() {
                tracing::debug!(
                    "{requester} waits for {:?} ({placement}): no idle GPU plugin there would free it",
                    shortfall.nodes
                );
            }
            for index in order {
                let victim = &plugins[index];
                if manager.stop_if_idle(victim, requester).await {
                    tracing::info!(
                        "stopped idle GPU plugin {} ({placement}, node {}) while {requester} waits there for {:?}",
                        victim.name(),
                        candidates[index].node,
                        shortfall.nodes.get(&candidates[index].node)
                    );
                    return Some(victim.name().to_owned());
                }
            }
            None
        })
    }

    /// The running GPU plugins of this machine but `requester` and those `tried`,
    /// each as eviction sees it: what it holds (measured, else its learned or
    /// declared need), when it last ran, whether it is busy or a queued job's
    /// target.
    fn eviction_candidates(
        &self,
        requester: &str,
        tried: &HashSet<String>,
    ) -> (Vec<Arc<LoadedPlugin>>, Vec<EvictionCandidate>) {
        self.gpu_plugins_besides(requester)
            .into_iter()
            .filter(|plugin| {
                !tried.contains(plugin.name())
                    && plugin.proxy().is_some_and(|proxy| proxy.is_running())
                    // Stopping a worker elsewhere frees nothing on this machine.
                    && plugin.runs_here()
            })
            .map(|plugin| {
                let meta = plugin.meta();
                let mut candidate =
                    EvictionCandidate::new(plugin.name(), self.worker_gpu_memory_mb(&plugin));
                // Unmeasured, it is thought to hold what its calls were seen to peak
                // at, else what it declares.
                let learned = self
                    .learned_profile(plugin.name())
                    .ok()
                    .flatten()
                    .filter(|profile| profile.gpu_memory_mb.count > 0)
                    .map(|profile| profile.gpu_memory_mb.max);
                candidate.estimated_mb = learned.unwrap_or(meta.resources.gpu_vram_mb() as f64);
                candidate.last_used = meta.last_executed;
                candidate.busy = plugin.claims() > 0;
                candidate.pending_target = plugin.pending_jobs() > 0;
                (plugin, candidate)
            })
            .unzip()
    }

    fn busy_gpu_plugins(&self, requester: &str) -> Vec<String> {
        let mut busy: Vec<String> = self
            .gpu_plugins_besides(requester)
            .into_iter()
            .filter(|plugin| plugin.claims() > 0)
            .map(|plugin| plugin.name().to_owned())
            .collect();
        busy.sort();
        busy
    }

    /// The loaded plugins that need a GPU (as their manifest declares, or as their
    /// calls were seen to use GPU memory where it declares nothing), but `requester`,
    /// as they are now (the table's lock is not held while the caller looks at them).
    fn gpu_plugins_besides(&self, requester: &str) -> Vec<Arc<LoadedPlugin>> {
        let plugins: Vec<Arc<LoadedPlugin>> = self
            .shared
            .loaded
            .read()
            .values()
            .filter(|plugin| plugin.name() != requester)
            .cloned()
            .collect();
        plugins
            .into_iter()
            .filter(|plugin| {
                plugin.meta().resources.requires_gpu || self.seen_using_gpu(plugin.name())
            })
            .collect()
    }

    /// Stop `plugin`'s worker if nothing is asked of it (checked again at the moment
    /// of the stop); whether it was stopped.
    async fn stop_if_idle(&self, plugin: &Arc<LoadedPlugin>, requester: &str) -> bool {
        self.stop_while_idle(
            plugin,
            format!("was stopped while idle to free GPU memory for {requester}"),
            PluginChange::Evicted,
        )
        .await
    }

    /// The one way an idle worker is stopped (eviction, idle stop): only if nothing is
    /// asked of it at the moment of the stop. It stays loaded, stopped with `reason`,
    /// and starts again with its configuration on its next call. Whether it was
    /// stopped.
    pub(super) async fn stop_while_idle(
        &self,
        plugin: &Arc<LoadedPlugin>,
        reason: String,
        told_as: PluginChange,
    ) -> bool {
        // A plugin whose worker is being replaced right now is not idle.
        let Some(lock) = plugin.try_lock_lifecycle() else {
            return false;
        };
        if plugin.claims() > 0 || plugin.pending_jobs() > 0 || !self.is_loaded(plugin.name()) {
            return false;
        }
        let config = self.config_to_keep(plugin).await;
        let stopped = self
            .replace_worker(
                plugin,
                lock,
                Replacement {
                    only_if_idle: true,
                    leave_stopped: Some(reason),
                    stopped_as: Some(told_as),
                    ..Replacement::start(config)
                },
            )
            .await;
        matches!(stopped, Ok(Replaced::Done))
    }
}

/// How much GPU memory `refusal` found missing (needed less free), when it was
/// short of GPU memory with a figure to tell; `None` otherwise (eviction cannot
/// size what to free).
fn gpu_shortfall_mb(refusal: &Refusal) -> Option<f64> {
    refusal
        .shortfalls
        .iter()
        .find(|shortfall| shortfall.resource == Resource::GpuMemory)
        .and_then(|shortfall| Some(shortfall.needed_mb as f64 - shortfall.free_mb()?))
        .filter(|missing| *missing > 0.0)
}

/// An idle GPU plugin placed elsewhere, as eviction for a placement sees it.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    /// The node its worker runs on.
    node: String,
    /// The GPU resources it holds there.
    held: BTreeMap<String, f64>,
    /// When it last ran a call.
    last_used: f64,
}

/// Which of `candidates` to try stopping for `shortfall`, in order: only those on a
/// node where the idle ones together free what is missing (stopping the others would
/// help nothing); first those that free it alone, then the rest, least recently used
/// first within each.
fn eviction_order(candidates: &[Candidate], shortfall: &Shortfall) -> Vec<usize> {
    let mut freeable: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    for candidate in candidates {
        let on_node = freeable.entry(candidate.node.as_str()).or_default();
        for (name, amount) in &candidate.held {
            *on_node.entry(name.clone()).or_default() += amount;
        }
    }
    let mut order: Vec<(bool, f64, usize)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, candidate)| {
            freeable
                .get(candidate.node.as_str())
                .is_some_and(|all| shortfall.covered_by(&candidate.node, all))
        })
        .map(|(index, candidate)| {
            let alone = shortfall.covered_by(&candidate.node, &candidate.held);
            (!alone, candidate.last_used, index)
        })
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
    order.into_iter().map(|(_, _, index)| index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(node: &str, vram: f64, last_used: f64) -> Candidate {
        Candidate {
            node: node.to_owned(),
            held: BTreeMap::from([
                (String::from("GPU"), 1.0),
                (String::from("gpu_vram_mb"), vram),
            ]),
            last_used,
        }
    }

    fn short(node: &str, vram: f64) -> Shortfall {
        Shortfall::new(BTreeMap::from([(
            node.to_owned(),
            BTreeMap::from([(String::from("gpu_vram_mb"), vram)]),
        )]))
    }

    #[test]
    fn only_plugins_on_the_short_node_that_can_free_enough_are_stopped() {
        let candidates = [
            candidate("10.0.0.9", 24000.0, 1.0), // elsewhere: frees nothing here
            candidate("10.0.0.2", 4000.0, 2.0),
            candidate("10.0.0.2", 16000.0, 3.0),
            candidate("10.0.0.2", 8000.0, 4.0),
        ];
        // 8000 missing: the one freeing it alone, least recently used first.
        assert_eq!(
            eviction_order(&candidates, &short("10.0.0.2", 8000.0)),
            [2, 3, 1]
        );
        // 20000 missing: none alone, all three together: least recently used first.
        assert_eq!(
            eviction_order(&candidates, &short("10.0.0.2", 20000.0)),
            [1, 2, 3]
        );
        // More than all the idle ones there hold: stopping any would help nothing.
        assert!(eviction_order(&candidates, &short("10.0.0.2", 40000.0)).is_empty());
        // A node with no idle plugin of ours.
        assert!(eviction_order(&candidates, &short("10.0.0.5", 1.0)).is_empty());
        // Short of GPUs themselves (count): any one there frees one.
        let gpus = Shortfall::new(BTreeMap::from([(
            String::from("10.0.0.2"),
            BTreeMap::from([(String::from("GPU"), 1.0)]),
        )]));
        assert_eq!(eviction_order(&candidates, &gpus), [1, 2, 3]);
    }
}
