//! `GET /metrics`: the OpenMetrics text format (which Prometheus reads), written by
//! the official Rust client. Names follow Prometheus's conventions: the `cjm_`
//! prefix, base units (seconds, bytes), counters ending in `_total`, and labels of low
//! cardinality (plugin, status, category; never a job id).
//!
//! Counters are fed by the job events as they happen; gauges (queued, running,
//! workers, RSS) are read when scraped.

use std::time::SystemTime;

use cjm_manager::jobs::{JobChange, JobEvent, JobState, JobStatus, Jobs};
use cjm_manager::{PluginManager, PluginState};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::json::rss_bytes;
use crate::plugin_metrics::PluginMetrics;

/// What `/metrics` answers with.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    plugin: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    plugin: String,
    category: String,
}

type Seconds = Family<PluginLabel, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 10 ms to about 2.9 h, each bucket 4 times the last.
    Histogram::new(exponential_buckets(0.01, 4.0, 10))
}

/// The daemon's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    submitted: Family<PluginLabel, Counter>,
    finished: Family<StatusLabels, Counter>,
    errors: Family<CategoryLabels, Counter>,
    run_seconds: Seconds,
    queue_wait_seconds: Seconds,
    events_missed: Counter,
    queued: Family<PluginLabel, Gauge>,
    running: Family<PluginLabel, Gauge>,
    workers_running: Gauge,
    plugins_loaded: Gauge,
    worker_rss: Family<PluginLabel, Gauge>,
    /// Workers' lives (`plugin_metrics.rs`).
    pub(crate) plugins: PluginMetrics,
    /// One scrape at a time: the gauges are cleared and set again for each.
    scrape: Mutex<()>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("cjm");
        let submitted = Family::<PluginLabel, Counter>::default();
        registry.register("jobs_submitted", "Jobs submitted", submitted.clone());
        let finished = Family::<StatusLabels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs ended, by how (succeeded, failed, cancelled, interrupted)",
            finished.clone(),
        );
        let errors = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "job_errors",
            "Failed jobs, by error category (user_input, transient, resource, fatal)",
            errors.clone(),
        );
        let run_seconds: Seconds = Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "job_run",
            "How long jobs ran, from their call's start to their end",
            Unit::Seconds,
            run_seconds.clone(),
        );
        let queue_wait_seconds: Seconds = Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "job_queue_wait",
            "How long jobs waited, from submission to their call's start",
            Unit::Seconds,
            queue_wait_seconds.clone(),
        );
        let events_missed = Counter::default();
        registry.register(
            "events_missed",
            "Job events the daemon itself fell too far behind to see (counts above may miss them)",
            events_missed.clone(),
        );
        let queued = Family::<PluginLabel, Gauge>::default();
        registry.register("jobs_queued", "Jobs waiting for their turn", queued.clone());
        let running = Family::<PluginLabel, Gauge>::default();
        registry.register(
            "jobs_running",
            "Jobs admitted or running on their worker",
            running.clone(),
        );
        let workers_running = Gauge::default();
        registry.register(
            "workers_running",
            "Loaded plugins whose worker is up",
            workers_running.clone(),
        );
        let plugins_loaded = Gauge::default();
        registry.register("plugins_loaded", "Plugins loaded", plugins_loaded.clone());
        let worker_rss = Family::<PluginLabel, Gauge>::default();
        registry.register_with_unit(
            "worker_resident_memory",
            "Resident memory of each local worker",
            Unit::Bytes,
            worker_rss.clone(),
        );
        let plugins = PluginMetrics::register(&mut registry);
        registry.register(
            "build",
            "The daemon's version",
            Info::new(vec![(
                String::from("version"),
                String::from(env!("CARGO_PKG_VERSION")),
            )]),
        );
        Metrics {
            registry,
            submitted,
            finished,
            errors,
            run_seconds,
            queue_wait_seconds,
            events_missed,
            queued,
            running,
            workers_running,
            plugins_loaded,
            worker_rss,
            plugins,
            scrape: Mutex::new(()),
        }
    }

    /// Count `event`; `status` is its job's status now (for an end: how long it ran,
    /// why it failed).
    pub(crate) fn observe(&self, event: &JobEvent, status: Option<&JobStatus>) {
        let plugin = || PluginLabel {
            plugin: event.plugin.clone(),
        };
        let JobChange::State(state) = &event.change else {
            return;
        };
        match state {
            JobState::Queued => {
                self.submitted.get_or_create(&plugin()).inc();
            }
            JobState::Running => {
                if let Some(status) = status.filter(|status| status.attempts <= 1) {
                    if let Some(wait) = between(status.submitted_at, status.started_at) {
                        self.queue_wait_seconds
                            .get_or_create(&plugin())
                            .observe(wait);
                    }
                }
            }
            state if state.is_final() => {
                self.finished
                    .get_or_create(&StatusLabels {
                        plugin: event.plugin.clone(),
                        status: state.as_str().to_owned(),
                    })
                    .inc();
                let Some(status) = status else { return };
                if let Some(failure) = &status.failure {
                    self.errors
                        .get_or_create(&CategoryLabels {
                            plugin: event.plugin.clone(),
                            category: failure.category.as_str().to_owned(),
                        })
                        .inc();
                }
                if let Some(started) = status.started_at {
                    if let Some(ran) = between(started, status.finished_at) {
                        self.run_seconds.get_or_create(&plugin()).observe(ran);
                    }
                }
            }
            _ => {}
        }
    }

    /// The daemon fell behind the job events by `missed`.
    pub(crate) fn missed(&self, missed: u64) {
        self.events_missed.inc_by(missed);
    }

    /// The text of a scrape.
    pub(crate) fn render(
        &self,
        manager: &PluginManager,
        jobs: &Jobs,
    ) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock();
        self.queued.clear();
        self.running.clear();
        for status in jobs.list() {
            let family = match status.state {
                JobState::Queued => &self.queued,
                JobState::Admitted | JobState::Running => &self.running,
                _ => continue,
            };
            family
                .get_or_create(&PluginLabel {
                    plugin: status.plugin.clone(),
                })
                .inc();
        }
        self.worker_rss.clear();
        let plugins = manager.list_plugins();
        let mut up = 0;
        for meta in &plugins {
            let running = manager
                .plugin_status(&meta.name)
                .is_some_and(|status| status.state == PluginState::Running);
            if !running {
                continue;
            }
            up += 1;
            let rss = manager
                .worker_info(&meta.name)
                .filter(|info| info.local)
                .and_then(|info| rss_bytes(info.pid));
            if let Some(rss) = rss {
                self.worker_rss
                    .get_or_create(&PluginLabel {
                        plugin: meta.name.clone(),
                    })
                    .set(i64::try_from(rss).unwrap_or(i64::MAX));
            }
        }
        self.workers_running.set(up);
        self.plugins.scrape(manager);
        self.plugins_loaded
            .set(i64::try_from(plugins.len()).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Seconds from `from` to `to`, when both are known and in order.
fn between(from: SystemTime, to: Option<SystemTime>) -> Option<f64> {
    to?.duration_since(from).ok().map(|span| span.as_secs_f64())
}
