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

/// A death by its cause (`exited`, `signal`, `lost`, `timed_out`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCause {
    plugin: String,
    cause: String,
}

/// A stop by its reason (`keep_alive`, `gpu_memory`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginReason {
    plugin: String,
    reason: String,
}

/// The counters and the gauge, registered in the daemon's registry.
#[derive(Debug)]
pub(crate) struct PluginMetrics {
    spawns: Family<Plugin, Counter>,
    deaths: Family<PluginCause, Counter>,
    restarts: Family<Plugin, Counter>,
    idle_stops: Family<PluginReason, Counter>,
    evictions: Family<PluginReason, Counter>,
    gpu_memory: Family<Plugin, Gauge>,
}

impl PluginMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        fn counted<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
        where
            L: EncodeLabelSet
                + Clone
                + std::hash::Hash
                + Eq
                + std::fmt::Debug
                + Send
                + Sync
                + 'static,
        {
            let family = Family::<L, Counter>::default();
            registry.register(name, help, family.clone());
            family
        }
        let spawns = counted(
            registry,
            "worker_spawns",
            "Worker processes started (at load, reload, restart, or again after an idle stop)",
        );
        let deaths = counted(
            registry,
            "worker_deaths",
            "Workers that ended without the host stopping them, or were killed for a call past its time, by cause (exited, signal, lost, timed_out)",
        );
        let restarts = counted(
            registry,
            "worker_restarts",
            "Workers started again by the restart policy after a death",
        );
        let idle_stops = counted(
            registry,
            "worker_idle_stops",
            "Workers stopped after their keep-alive passed idle, by reason (keep_alive)",
        );
        let evictions = counted(
            registry,
            "worker_evictions",
            "Idle workers stopped to free memory for another plugin, by reason (gpu_memory)",
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
        let plugin = event.name.clone();
        let why = || event.reason.unwrap_or("unknown").to_owned();
        match event.change {
            PluginChange::WorkerStarted => self.spawns.get_or_create(&Plugin { plugin }).inc(),
            PluginChange::WorkerRestarted => {
                let label = Plugin { plugin };
                self.spawns.get_or_create(&label).inc();
                self.restarts.get_or_create(&label).inc()
            }
            PluginChange::WorkerDied => self
                .deaths
                .get_or_create(&PluginCause {
                    plugin,
                    cause: why(),
                })
                .inc(),
            PluginChange::IdleStopped => self
                .idle_stops
                .get_or_create(&PluginReason {
                    plugin,
                    reason: why(),
                })
                .inc(),
            PluginChange::Evicted => self
                .evictions
                .get_or_create(&PluginReason {
                    plugin,
                    reason: why(),
                })
                .inc(),
            _ => 0,
        };
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
