//! What every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cjm_manager::jobs::Jobs;
use cjm_manager::PluginManager;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::auth::Auth;
use crate::events::EventLog;
use crate::job_arguments::JobArguments;
use crate::metrics::Metrics;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) manager: PluginManager,
    pub(crate) jobs: Jobs,
    pub(crate) events: Arc<EventLog>,
    pub(crate) metrics: Metrics,
    /// What each job was asked, for its detail (`job_arguments.rs`).
    pub(crate) arguments: JobArguments,
    /// Why each waiting job waits (`GET /api/system`).
    pub(crate) admission: Admission,
    pub(crate) max_body: usize,
    /// Who may use the API over TCP.
    pub(crate) auth: Auth,

    /// The job journal, for `/api/jobs/history`; `None` when none is kept.
    pub(crate) journal: Option<std::path::PathBuf>,
    pub(crate) started: Instant,
    /// Set at SIGTERM: no new jobs, loads or unloads; what runs may end.
    pub(crate) draining: AtomicBool,
    /// Turns true when the jobs and workers are done: event streams end.
    pub(crate) closing: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
