//! Freeing GPU memory for a refused execution by restarting idle GPU plugins, least
//! recently used first.

use std::collections::HashSet;
use std::sync::Arc;

use cjm_metadata::PluginMeta;
use cjm_scheduling::{Reservation, Resource, ResourceScheduler};

use super::{read, write, ManagerStats, PluginManager};
use crate::loaded::LoadedPlugin;
use crate::ManagerError;

impl PluginManager {
    /// After `meta`'s execution was refused for GPU memory: restart idle GPU plugins
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
            tried.insert(victim.clone());
            match self.restart_if_idle(&victim).await {
                Ok(true) => {
                    tracing::info!(
                        "restarted idle GPU plugin {victim} to free memory for {}",
                        meta.name
                    );
                    evicted.push(victim);
                }
                Ok(false) => continue,
                Err(err) => {
                    // Its old worker is gone either way, and with it its memory.
                    tracing::warn!("evicting {victim}: {err}");
                    evicted.push(victim);
                }
            }
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

    fn least_recently_used_idle_gpu_plugin(
        &self,
        requester: &str,
        tried: &HashSet<String>,
    ) -> Option<String> {
        read(&self.shared.loaded)
            .iter()
            .filter(|(name, plugin)| {
                name.as_str() != requester
                    && !tried.contains(name.as_str())
                    && plugin.claims() == 0
                    && plugin.meta().resources.requires_gpu
            })
            .map(|(name, plugin)| (plugin.meta().last_executed, name))
            .min_by(|(a_time, a_name), (b_time, b_name)| {
                a_time.total_cmp(b_time).then_with(|| a_name.cmp(b_name))
            })
            .map(|(_, name)| name.clone())
    }

    fn busy_gpu_plugins(&self, requester: &str) -> Vec<String> {
        let mut busy: Vec<String> = read(&self.shared.loaded)
            .iter()
            .filter(|(name, plugin)| {
                name.as_str() != requester
                    && plugin.claims() > 0
                    && plugin.meta().resources.requires_gpu
            })
            .map(|(name, _)| name.clone())
            .collect();
        busy.sort();
        busy
    }

    /// Restart `name` with its configuration if nothing is asked of it; whether it was.
    async fn restart_if_idle(&self, name: &str) -> Result<bool, ManagerError> {
        let _busy = self.claim(name)?;
        let Some(old) = read(&self.shared.loaded).get(name).cloned() else {
            return Ok(false);
        };
        if old.claims() > 0 {
            return Ok(false);
        }
        let config = self.config_to_keep(&old).await;
        {
            let mut loaded = write(&self.shared.loaded);
            // Again under the write lock: executions claim under the read lock, so
            // none can slip in between this check and the removal.
            let current = loaded.get(name).is_some_and(|now| Arc::ptr_eq(now, &old));
            if !current || old.claims() > 0 {
                return Ok(false);
            }
            loaded.remove(name);
        }
        self.restart(name, &old, config).await?;
        Ok(true)
    }

    /// Stop `old` (already out of the table) and start it anew with `config`.
    pub(super) async fn restart(
        &self,
        name: &str,
        old: &LoadedPlugin,
        config: cjm_interface::ConfigMap,
    ) -> Result<(), ManagerError> {
        old.proxy.shutdown().await;
        let discovered = crate::DiscoveredPlugin {
            meta: old.meta(),
            manifest: old.manifest.clone(),
            path: old.manifest_path.clone(),
            config_validator: Arc::clone(&old.config_validator),
        };
        let loaded = self.start(discovered, config).await?;
        write(&self.shared.loaded).insert(name.to_owned(), Arc::new(loaded));
        Ok(())
    }
}
