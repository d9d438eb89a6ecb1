use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use cjm_metadata::Observability;

use super::diagnostics::DiagnosticsRetention;
use super::journal::JournalRetention;

/// How a [`Jobs`](super::Jobs) queue behaves: [`JobOptions::default`], then the
/// setters. Fields may be added in later releases. Values the setters would not
/// take (a zero concurrency or event capacity) are raised to the least that works
/// when the queue starts, whichever way they were set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobOptions {
    /// Jobs waiting at most; a submission past it is refused (default 10 000).
    pub max_queued: usize,
    /// Jobs of one plugin running at once, unless `concurrency` names the plugin
    /// (default 1: a model usually serves one call at a time).
    pub default_concurrency: usize,
    /// Jobs at once by plugin name.
    pub concurrency: HashMap<String, usize>,
    /// Waiting this long raises a job's priority by one level (default 30 s).
    pub aging: Duration,
    /// How long a running job asked to stop has before its worker is killed
    /// (default 5 s); zero: it is not asked, its worker is killed at once.
    pub cancel_timeout: Duration,
    /// How often the progress of a worker that cannot push it (the original's
    /// Python worker) is asked for (default 250 ms).
    pub progress_poll: Duration,
    /// Ended jobs kept in memory for `status` and `wait` (default 10 000); the
    /// journal keeps them all.
    pub keep_finished: usize,
    /// Events kept for listeners that fall behind (default 4096).
    pub event_capacity: usize,
    /// Keep the journal (default true).
    pub keep_journal: bool,
    /// The journal file; default `$CJM_HOME/jobs.sqlite3`.
    pub journal: Option<PathBuf>,
    /// How much of the journal's history is kept (default: 100 000 ended jobs, 30
    /// days).
    pub journal_retention: JournalRetention,
    /// Each job's log records, kept beside the journal (`diagnostics.sqlite3`) and
    /// bounded so; `None`: not kept. Only with a journal.
    pub diagnostics: Option<DiagnosticsRetention>,
    /// Observability class by plugin or instance name, over what its manifest
    /// declares: `ambient` journals only failed, cancelled and retried jobs.
    pub observability: HashMap<String, Observability>,
    /// The class of plugins neither named here nor declaring one (default `full`).
    pub default_observability: Observability,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            max_queued: 10_000,
            default_concurrency: 1,
            concurrency: HashMap::new(),
            aging: Duration::from_secs(30),
            cancel_timeout: Duration::from_secs(5),
            progress_poll: Duration::from_millis(250),
            keep_finished: 10_000,
            event_capacity: 4096,
            keep_journal: true,
            journal: None,
            journal_retention: JournalRetention::default(),
            diagnostics: Some(DiagnosticsRetention::default()),
            observability: HashMap::new(),
            default_observability: Observability::Full,
        }
    }
}

impl JobOptions {
    /// With at most `limit` jobs waiting.
    pub fn max_queued(mut self, limit: usize) -> Self {
        self.max_queued = limit;
        self
    }

    /// With `limit` jobs of `plugin` running at once.
    pub fn concurrency(mut self, plugin: impl Into<String>, limit: usize) -> Self {
        self.concurrency.insert(plugin.into(), limit.max(1));
        self
    }

    /// With `limit` jobs at once for plugins not named otherwise.
    pub fn default_concurrency(mut self, limit: usize) -> Self {
        self.default_concurrency = limit.max(1);
        self
    }

    /// With waiting `aging` worth one priority level.
    pub fn aging(mut self, aging: Duration) -> Self {
        self.aging = aging;
        self
    }

    /// With `timeout` for a running job to stop before its worker is killed.
    pub fn cancel_timeout(mut self, timeout: Duration) -> Self {
        self.cancel_timeout = timeout;
        self
    }

    /// With this interval for progress that must be asked for.
    pub fn progress_poll(mut self, interval: Duration) -> Self {
        self.progress_poll = interval;
        self
    }

    /// With `count` ended jobs kept in memory.
    pub fn keep_finished(mut self, count: usize) -> Self {
        self.keep_finished = count;
        self
    }

    /// With the journal at `path` instead of `$CJM_HOME/jobs.sqlite3`.
    pub fn journal(mut self, path: impl Into<PathBuf>) -> Self {
        self.journal = Some(path.into());
        self.keep_journal = true;
        self
    }

    /// With the journal's history bounded by `retention`.
    pub fn journal_retention(mut self, retention: JournalRetention) -> Self {
        self.journal_retention = retention;
        self
    }

    /// With `capacity` events kept for listeners that fall behind (at least 1).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// With each job's log records kept within `retention` (`None`: not kept).
    pub fn diagnostics(mut self, retention: Option<DiagnosticsRetention>) -> Self {
        self.diagnostics = retention;
        self
    }

    /// With `plugin` (a plugin or instance name) journaled as `class` says,
    /// whatever its manifest declares.
    pub fn observability(mut self, plugin: impl Into<String>, class: Observability) -> Self {
        self.observability.insert(plugin.into(), class);
        self
    }

    /// With `class` for plugins that neither the options nor their manifest name.
    pub fn default_observability(mut self, class: Observability) -> Self {
        self.default_observability = class;
        self
    }

    /// Without a journal.
    pub fn without_journal(mut self) -> Self {
        self.keep_journal = false;
        self
    }

    /// The options with every value in the range the setters allow: public fields
    /// can be set past the setters.
    pub(crate) fn normalized(mut self) -> Self {
        self.default_concurrency = self.default_concurrency.max(1);
        for limit in self.concurrency.values_mut() {
            *limit = (*limit).max(1);
        }
        // broadcast::channel panics on a capacity of 0 (and on one past usize::MAX / 2).
        self.event_capacity = self.event_capacity.clamp(1, 1 << 20);
        self
    }

    pub(crate) fn concurrency_of(&self, plugin: &str) -> usize {
        self.concurrency
            .get(plugin)
            .copied()
            .unwrap_or(self.default_concurrency)
            .max(1)
    }
}
