//! Jobs: long-running work submitted to plugins, with priorities, progress,
//! cancellation, typed failures and a journal.
//!
//! [`Jobs`] sits beside a [`PluginManager`] and uses only a narrow part of it
//! (`manager/for_jobs.rs`): an admitted execution to run a call on (admission goes
//! through the manager's scheduler, reservations and eviction as for any call) and
//! the forced restart of a worker that would not stop.
//!
//! ```no_run
//! use cjm_manager::jobs::{JobOptions, Jobs};
//! use cjm_manager::{CallArgs, ManagerOptions, PluginManager};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PluginManager::new(ManagerOptions::from_env()?);
//! manager.discover_manifests();
//! manager.load_plugin("cjm-wordcount", None).await?;
//! let jobs = Jobs::new(manager.clone(), JobOptions::default())?;
//! let job = jobs.submit("cjm-wordcount", CallArgs::new().arg("/data/big.txt"), 0)?;
//! let mut events = jobs.events_for(job);
//! tokio::spawn(async move {
//!     while let Some(Ok(event)) = events.next().await {
//!         println!("{event:?}");
//!     }
//! });
//! let outcome = jobs.wait(job).await?;
//! println!("{:?}: {:?}", outcome.status.state, outcome.result);
//! # Ok(())
//! # }
//! ```

mod events;
mod journal;
mod model;
mod options;
mod queue;
mod run;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cjm_interface::CallArgs;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::AbortHandle;

pub use events::{EventsLagged, JobEvents};
pub use journal::{recent_jobs, JournalEntry, JournalError};
pub use model::{
    Cancellation, JobChange, JobEvent, JobFailure, JobId, JobOutcome, JobState, JobStatus,
};
pub use options::JobOptions;

use crate::manager::JobExecution;
use crate::{ManagerError, PluginManager};
use journal::{Journal, Record};
use queue::JobQueue;

/// Why a job operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// The queue holds its limit of waiting jobs already.
    #[error("the job queue is full: {limit} jobs are waiting (JobOptions::max_queued)")]
    QueueFull {
        /// The limit.
        limit: usize,
    },
    /// No such job (never submitted here, or ended so long ago it was forgotten).
    #[error("no job {id} here")]
    UnknownJob {
        /// The job asked for.
        id: JobId,
    },
    /// The plugin cannot take jobs (not loaded).
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The jobs were shut down.
    #[error("the job queue has been shut down")]
    Closed,
}

/// The job queue. Cheap to clone; dropping the last clone cancels every job: queued
/// ones never start, running ones are asked to stop (and stopped by force after
/// [`JobOptions::cancel_timeout`]).
#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

/// Dropped with the last [`Jobs`] handle (the tasks hold `Inner`, not this).
#[derive(Debug)]
struct Owner {
    inner: Arc<Inner>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.close();
    }
}

#[derive(Debug)]
struct Inner {
    manager: PluginManager,
    options: JobOptions,
    /// Tells this host's jobs apart from other hosts' in the journal.
    session: String,
    epoch: Instant,
    book: Mutex<Book>,
    /// Wakes the dispatcher: a job was queued or one ended.
    dispatch: Notify,
    events: broadcast::Sender<JobEvent>,
    journal: Option<Journal>,
    interrupted: Vec<JournalEntry>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Book {
    queue: JobQueue,
    jobs: HashMap<JobId, Entry>,
    /// Ended jobs, oldest first, forgotten past `JobOptions::keep_finished`.
    finished: VecDeque<JobId>,
    next_id: u64,
}

#[derive(Debug)]
struct Entry {
    status: JobStatus,
    /// The call, until the job starts (kept for retries after that).
    call: Option<CallArgs>,
    /// The id the call carries to the worker and the journal.
    call_id: String,
    outcome: watch::Sender<Option<JobOutcome>>,
    cancel: CancelRequest,
    /// The execution while the call runs: where `/cancel` goes.
    execution: Option<Arc<JobExecution>>,
    task: Option<AbortHandle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelRequest {
    None,
    Asked,
    /// The worker was killed to stop it.
    Forced,
}

impl Jobs {
    /// A job queue over `manager`. Opens the journal (unless the options leave it
    /// out) and reports the jobs that hosts which ended left unfinished (see
    /// [`interrupted`](Self::interrupted)). Must be called inside a tokio runtime.
    pub fn new(manager: PluginManager, options: JobOptions) -> Result<Jobs, JobsError> {
        let session = session_id();
        let journal_path = options
            .journal
            .clone()
            .unwrap_or_else(|| manager.options().home.journal_path());
        let (journal, interrupted) = if options.keep_journal {
            let (journal, interrupted) = Journal::open(&journal_path, &session)?;
            (Some(journal), interrupted)
        } else {
            (None, Vec::new())
        };
        for job in &interrupted {
            tracing::warn!(
                "job {} of plugin {} was {} when its host (pid {}) ended: interrupted",
                job.id,
                job.plugin,
                if job.started_at.is_some() {
                    "running"
                } else {
                    "queued"
                },
                job.host_pid
            );
        }
        let (events, _) = broadcast::channel(options.event_capacity);
        let inner = Arc::new(Inner {
            manager,
            book: Mutex::new(Book {
                queue: JobQueue::new(options.aging),
                jobs: HashMap::new(),
                finished: VecDeque::new(),
                next_id: 1,
            }),
            options,
            session,
            epoch: Instant::now(),
            dispatch: Notify::new(),
            events,
            journal,
            interrupted,
            closed: AtomicBool::new(false),
        });
        tokio::spawn(run::dispatch(Arc::clone(&inner)));
        Ok(Jobs {
            _owner: Arc::new(Owner {
                inner: Arc::clone(&inner),
            }),
            inner,
        })
    }

    /// Queue `call` for `plugin` at `priority` (higher goes first; equal ones in
    /// order of submission; waiting raises a job's priority by one level per
    /// [`JobOptions::aging`]). Refused at once when the plugin is not loaded or the
    /// queue is full. Never waits.
    pub fn submit(&self, plugin: &str, call: CallArgs, priority: i32) -> Result<JobId, JobsError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(JobsError::Closed);
        }
        if !inner.manager.is_loaded(plugin) {
            return Err(ManagerError::NotLoaded {
                name: plugin.to_owned(),
            }
            .into());
        }
        let now = SystemTime::now();
        let (id, call_id) = {
            let mut book = inner.book.lock();
            let limit = inner.options.max_queued;
            if book.queue.len() >= limit {
                return Err(JobsError::QueueFull { limit });
            }
            let id = JobId(book.next_id);
            book.next_id += 1;
            let call_id = format!("{}-{}", inner.session, id.0);
            let (outcome, _) = watch::channel(None);
            book.jobs.insert(
                id,
                Entry {
                    status: JobStatus {
                        id,
                        plugin: plugin.to_owned(),
                        priority,
                        state: JobState::Queued,
                        progress: None,
                        submitted_at: now,
                        admitted_at: None,
                        started_at: None,
                        finished_at: None,
                        attempts: 0,
                        failure: None,
                        cancelled: None,
                    },
                    call: Some(call),
                    call_id: call_id.clone(),
                    outcome,
                    cancel: CancelRequest::None,
                    execution: None,
                    task: None,
                },
            );
            book.queue.push(id, plugin, priority, inner.epoch.elapsed());
            (id, call_id)
        };
        inner.record(Record::Submitted {
            id: call_id,
            plugin: plugin.to_owned(),
            priority,
            at: now,
        });
        inner.emit(id, plugin, JobChange::State(JobState::Queued));
        inner.dispatch.notify_one();
        Ok(id)
    }

    /// The job's status now; `None` for a job unknown here.
    pub fn status(&self, id: JobId) -> Option<JobStatus> {
        self.inner
            .book
            .lock()
            .jobs
            .get(&id)
            .map(|entry| entry.status.clone())
    }

    /// Every job known here (waiting, running, and recently ended), oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        let mut all: Vec<JobStatus> = self
            .inner
            .book
            .lock()
            .jobs
            .values()
            .map(|entry| entry.status.clone())
            .collect();
        all.sort_by_key(|status| status.id);
        all
    }

    /// Jobs waiting for their turn now.
    pub fn queued(&self) -> usize {
        self.inner.book.lock().queue.len()
    }

    /// Wait for the job to end; its final status and result.
    pub async fn wait(&self, id: JobId) -> Result<JobOutcome, JobsError> {
        let mut outcome = self
            .inner
            .book
            .lock()
            .jobs
            .get(&id)
            .map(|entry| entry.outcome.subscribe())
            .ok_or(JobsError::UnknownJob { id })?;
        let ended = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| JobsError::Closed)?;
        ended.clone().ok_or(JobsError::Closed)
    }

    /// Cancel the job: a queued one is removed and never starts; a running one is
    /// asked to stop, and its worker killed and started again if it has not stopped
    /// within [`JobOptions::cancel_timeout`] (at once for a worker that cannot be
    /// asked). Whether the job had not ended yet; [`wait`](Self::wait) tells how it
    /// ended.
    pub fn cancel(&self, id: JobId) -> Result<bool, JobsError> {
        run::cancel(&self.inner, id)
    }

    /// Cancel the job without asking: a queued one as [`cancel`](Self::cancel) does; a
    /// running one's worker is killed at once and the plugin left stopped (it starts
    /// again, with its configuration, on its next call); the job ends cancelled
    /// (forced). For a second Ctrl-C, or a host about to stop anyway. Whether the job
    /// had not ended yet.
    pub fn cancel_now(&self, id: JobId) -> Result<bool, JobsError> {
        run::cancel_now(&self.inner, id)
    }

    /// Every job's state changes and progress reports, from now on.
    pub fn events(&self) -> JobEvents {
        JobEvents::new(self.inner.events.subscribe(), None)
    }

    /// One job's state changes and progress reports, from now on.
    pub fn events_for(&self, id: JobId) -> JobEvents {
        JobEvents::new(self.inner.events.subscribe(), Some(id))
    }

    /// Jobs that hosts which ended left queued or running, found in the journal when
    /// this queue opened it.
    pub fn interrupted(&self) -> &[JournalEntry] {
        &self.inner.interrupted
    }

    /// This queue's session in the journal (the prefix of its jobs' journal ids).
    pub fn session(&self) -> &str {
        &self.inner.session
    }

    /// The id job `id` has in the journal and carries to its worker.
    pub fn journal_id(&self, id: JobId) -> Option<String> {
        self.inner
            .book
            .lock()
            .jobs
            .get(&id)
            .map(|entry| entry.call_id.clone())
    }

    /// Wait until the journal holds everything that happened so far (it is written
    /// on a thread of its own, a moment behind). Does nothing without a journal.
    pub async fn sync_journal(&self) {
        if let Some(journal) = &self.inner.journal {
            journal.sync().await;
        }
    }

    /// Cancel every job and wait until each has ended.
    pub async fn shutdown(&self) {
        self.inner.close();
        let ids: Vec<JobId> = self.inner.book.lock().jobs.keys().copied().collect();
        for id in ids {
            let _ = self.wait(id).await;
        }
    }
}

impl Inner {
    fn record(&self, record: Record) {
        if let Some(journal) = &self.journal {
            journal.record(record);
        }
    }

    fn emit(&self, job: JobId, plugin: &str, change: JobChange) {
        // Nobody listening is fine.
        let _ = self.events.send(JobEvent {
            job,
            plugin: plugin.to_owned(),
            change,
        });
    }

    /// The most jobs of `plugin` that run at once.
    fn limit(&self, plugin: &str) -> usize {
        self.options.concurrency_of(plugin)
    }

    /// No more submissions; every job is cancelled.
    fn close(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let ids: Vec<JobId> = self.book.lock().jobs.keys().copied().collect();
        for id in ids {
            let _ = run::cancel(self, id);
        }
        self.dispatch.notify_one();
    }
}

/// A fresh session id: 8 random bytes as hex, so that two hosts (or two runs of
/// one) never share one.
fn session_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Time and pid are unique enough for a journal key when randomness fails.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0);
        return format!("{nanos:x}{:x}", std::process::id());
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The result stored for `wait`.
fn outcome(status: &JobStatus, result: Option<Value>) -> JobOutcome {
    JobOutcome {
        status: status.clone(),
        result,
    }
}
