//! Workers' lives as metrics: spawns, deaths, restarts, idle stops and evictions
//! counted by plugin from the manager's plugin events, and each worker's GPU memory
//! (where the driver tells it) read when scraped.

use cjm_manager::{PluginChange, PluginEvent, PluginManager};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::json::mb_to_bytes;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Plugin {
    plugin: String,
}

/// The counters and the gauge, registered in the daemon's registry.
#[derive(Debug)]
pub(crate) struct PluginMetrics {
    spawns: Family<Plugin, Counter>,
    deaths: Family<Plugin, Counter>,
    restarts: Family<Plugin, Counter>,
    idle_stops: Family<Plugin, Counter>,
    evictions: Family<Plugin, Counter>,
    gpu_memory: Family<Plugin, Gauge>,
}

impl PluginMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let mut counter = |name: &str, help: &str| {
            let family = Family::<Plugin, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let spawns = counter(
            "worker_spawns",
            "Worker processes started (at load, reload, restart, or again after an idle stop)",
        );
        let deaths = counter(
            "worker_deaths",
            "Workers that ended without the host stopping them, or were killed for a call past its time",
        );
        let restarts = counter(
            "worker_restarts",
            "Workers started again by the restart policy after a death",
        );
        let idle_stops = counter(
            "worker_idle_stops",
            "Workers stopped after their keep-alive passed idle",
        );
        let evictions = counter(
            "worker_evictions",
            "Idle workers stopped to free GPU memory for another plugin",
        );
        let gpu_memory = Family::<Plugin, Gauge>::default();
        registry.register_with_unit(
            "worker_gpu_memory",
            "GPU memory of each local worker's process tree, where the driver reports it",
            Unit::Bytes,
            gpu_memory.clone(),
        );
        PluginMetrics {
            spawns,
            deaths,
            restarts,
            idle_stops,
            evictions,
            gpu_memory,
        }
    }

    /// Count `event`.
    pub(crate) fn observe(&self, event: &PluginEvent) {
        let label = Plugin {
            plugin: event.name.clone(),
        };
        let counters: &[&Family<Plugin, Counter>] = match event.change {
            PluginChange::WorkerStarted => &[&self.spawns],
            PluginChange::WorkerRestarted => &[&self.spawns, &self.restarts],
            PluginChange::WorkerDied => &[&self.deaths],
            PluginChange::IdleStopped => &[&self.idle_stops],
            PluginChange::Evicted => &[&self.evictions],
            _ => &[],
        };
        for family in counters {
            family.get_or_create(&label).inc();
        }
    }

    /// Set the gauges for a scrape (the caller holds the scrape lock).
    pub(crate) fn scrape(&self, manager: &PluginManager) {
        self.gpu_memory.clear();
        for meta in manager.list_plugins() {
            if let Ok(Some(mb)) = manager.plugin_gpu_memory_mb(&meta.name) {
                let bytes = i64::try_from(mb_to_bytes(mb)).unwrap_or(i64::MAX);
                self.gpu_memory
                    .get_or_create(&Plugin { plugin: meta.name })
                    .set(bytes);
            }
        }
    }
}
