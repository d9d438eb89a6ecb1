//! Jobs: long-running work submitted to plugins, with priorities, progress,
//! cancellation, typed failures and a journal.
//!
//! [`Jobs`] sits beside a [`PluginManager`] and uses only a narrow part of it
//! (`host.rs`, implemented in `manager/for_jobs.rs`): an admitted execution to run a
//! call on (admission goes through the manager's scheduler, reservations and eviction
//! as for any call) and the forced restart of a worker that would not stop.
//!
//! Every change of a job's state happens once, under the book's lock, with its event
//! and its journal record: a job ends exactly once, and only a job that held one of
//! its plugin's places gives one back. A running job's task is never aborted: a
//! cancel is a signal its task reacts to at the step it is in.
//!
//! ```no_run
//! use cjm_manager::jobs::{JobOptions, Jobs};
//! use cjm_manager::{CallArgs, ManagerOptions, PluginManager};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PluginManager::new(ManagerOptions::from_env()?);
//! manager.discover_manifests();
//! manager.load_plugin("cjm-wordcount", None).await?;
//! let jobs = Jobs::new(manager.clone(), JobOptions::default()).await?;
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

mod call_metrics;
mod cancel;
mod chunks;
mod composition;
#[cfg(test)]
mod composition_tests;
mod diag_ingest;
pub mod diagnostics;
mod events;
pub(crate) mod host;
mod journal;
mod model;
mod observe;
#[cfg(test)]
mod observe_tests;
mod options;
mod progress;
mod queue;
mod requests;
mod run;
#[cfg(test)]
mod tests;
mod verbs;
#[cfg(test)]
mod verbs_tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cjm_interface::CallArgs;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch, Notify};

pub use call_metrics::JournalCallMetrics;
pub use chunks::JobChunks;
pub use composition::{
    recent_compositions, Composition, CompositionChange, CompositionEntry, CompositionError,
    CompositionEvent, CompositionEvents, CompositionId, CompositionNode, CompositionState,
    CompositionStatus, CompositionsError, Input, NodeState, NodeStatus, NodeTarget, OutputRef,
    OUTPUT_KEY,
};
pub use diagnostics::{
    job_diagnostics, DiagnosticRecord, DiagnosticsError, DiagnosticsRetention, JobDiagnostics,
};
pub use events::{EventsLagged, JobEvents};
pub use journal::{
    history, job_accounts, job_call_metrics, job_counts, journal_entry, recent_jobs,
    request_reorder, HistoryQuery, JournalAccount, JournalEntry, JournalError, JournalRetention,
    ReorderRefused,
};
pub use model::{
    BlockReason, CancelPhase, Cancellation, JobChange, JobEvent, JobFailure, JobId, JobOutcome,
    JobState, JobStatus, QueueStats, ResourceSnapshot, TaskCall,
};
pub use options::JobOptions;

use crate::{ManagerError, PluginManager};
use host::{JobCall, JobHost};
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
    /// The job diagnostics could not be opened or read.
    #[error(transparent)]
    Diagnostics(#[from] DiagnosticsError),
    /// The jobs were shut down.
    #[error("the job queue has been shut down")]
    Closed,
    /// The job has left the queue (it is admitted, running or ended): its priority
    /// no longer matters.
    #[error("{id} is {state}, not queued: only a queued job can be reordered")]
    NotPending {
        /// The job.
        id: JobId,
        /// Its state.
        state: JobState,
    },
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
    host: Arc<dyn JobHost>,
    options: JobOptions,
    /// Tells this host's jobs apart from other hosts' in the journal.
    session: String,
    epoch: Instant,
    book: Mutex<Book>,
    /// Wakes the dispatcher: a job was queued or one ended.
    dispatch: Notify,
    events: broadcast::Sender<JobEvent>,
    /// The compositions' events and members.
    hub: composition::Hub,
    journal: Option<Journal>,
    /// Each job's log records (`diagnostics.rs`), read back from the logs.
    diagnostics: Option<Arc<diag_ingest::Ingest>>,
    interrupted: Vec<JournalEntry>,
    interrupted_compositions: Vec<CompositionEntry>,
    closed: AtomicBool,
    /// Every journal record, for the tests to count endings.
    #[cfg(test)]
    recorded: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct Book {
    queue: JobQueue,
    jobs: HashMap<JobId, Entry>,
    /// Ended jobs, oldest first, forgotten past `JobOptions::keep_finished`.
    finished: VecDeque<JobId>,
    next_id: u64,
    compositions: composition::run::Runs,
}

#[derive(Debug)]
struct Entry {
    status: JobStatus,
    /// The call, until the job ends (kept for retries).
    call: Option<CallArgs>,
    /// The job's id in the journal; its first attempt's call id on the worker.
    call_id: String,
    /// The call id of the attempt on its way to the worker or running there: each
    /// attempt has its own, so that a retry is never taken for the call before it.
    attempt_call_id: Option<String>,
    outcome: watch::Sender<Option<JobOutcome>>,
    /// What was asked of the job; its task watches it.
    cancel: watch::Sender<CancelRequest>,
    /// A streaming job's reader, until the job ends.
    chunks_to: Option<mpsc::Sender<Value>>,
    /// The task method the job calls; `None`: the plugin's `execute`.
    task: Option<TaskCall>,
    /// Whether it holds one of its plugin's places (from its turn to its end).
    holds_place: bool,
    /// The execution while the call runs: where `/cancel` goes.
    execution: Option<Arc<dyn JobCall>>,
    /// The composition node it runs, if it is a member of one.
    member: Option<composition::run::Member>,
    /// What its (latest) execution was admitted with.
    resources: Option<ResourceSnapshot>,
    /// How far it is in the journal (its plugin's observability class).
    kept: observe::Kept,
    /// An ambient job's records held back until it is known to be kept.
    held_back: Vec<Record>,
    /// Holds its plugin as the target of a queued job (no eviction stops it) until
    /// it runs or ends.
    pending: Option<host::PendingHold>,
}

impl Entry {
    fn cancel_request(&self) -> CancelRequest {
        *self.cancel.borrow()
    }

    fn ask(&self, request: CancelRequest) {
        self.cancel.send_replace(request);
    }
}

/// What was asked of a job that has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelRequest {
    None,
    /// Stop: before its call is sent it never runs; a running call is asked.
    Asked,
    /// The worker was killed to stop it.
    Forced,
    /// Stop waiting for the call: its worker is not the host's to kill.
    Abandon,
}

impl Jobs {
    /// A job queue over `manager`. Opens the journal (unless the options leave it
    /// out; on a blocking thread, as another host may hold it for a moment) and
    /// reports the jobs that hosts which ended left unfinished (see
    /// [`interrupted`](Self::interrupted)).
    pub async fn new(manager: PluginManager, options: JobOptions) -> Result<Jobs, JobsError> {
        Self::with_host(Arc::new(manager), options).await
    }

    pub(crate) async fn with_host(
        host: Arc<dyn JobHost>,
        options: JobOptions,
    ) -> Result<Jobs, JobsError> {
        let options = options.normalized();
        let session = session_id();
        let journal_path = options.keep_journal.then(|| {
            options
                .journal
                .clone()
                .unwrap_or_else(|| host.default_journal())
        });
        let diagnostics = match (&journal_path, options.diagnostics) {
            (Some(journal), Some(retention)) => {
                let ingest = diag_ingest::open(journal, retention).await?;
                host.diagnostics_store(&diagnostics::path_beside(journal));
                Some(Arc::new(ingest))
            }
            _ => None,
        };
        let (journal, interrupted, interrupted_compositions) = if let Some(path) = &journal_path {
            let path = path.clone();
            let opening = {
                let session = session.clone();
                let retention = options.journal_retention;
                let path = path.clone();
                tokio::task::spawn_blocking(move || Journal::open(&path, &session, retention))
            };
            let (journal, interrupted) = opening.await.map_err(|err| JournalError {
                path,
                what: String::from("opening it failed"),
                source: Box::new(err),
            })??;
            let compositions = journal.interrupted_compositions.clone();
            (Some(journal), interrupted, compositions)
        } else {
            (None, Vec::new(), Vec::new())
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
        let options_event_capacity = options.event_capacity;
        let inner = Arc::new(Inner {
            host,
            book: Mutex::new(Book {
                queue: JobQueue::new(options.aging),
                jobs: HashMap::new(),
                finished: VecDeque::new(),
                next_id: 1,
                compositions: composition::run::Runs::default(),
            }),
            options,
            session,
            epoch: Instant::now(),
            dispatch: Notify::new(),
            events,
            hub: composition::Hub::new(options_event_capacity),
            journal,
            diagnostics,
            interrupted,
            interrupted_compositions,
            closed: AtomicBool::new(false),
            #[cfg(test)]
            recorded: Mutex::new(Vec::new()),
        });
        tokio::spawn(run::dispatch(Arc::clone(&inner)));
        if let Some(ingest) = &inner.diagnostics {
            tokio::spawn(diag_ingest::keep_ingesting(Arc::downgrade(ingest)));
        }
        if let Some(path) = journal_path {
            requests::watch(&inner, path);
        }
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
        self.enqueue(plugin, NewJob::plain(call, priority))
    }

    /// Queue a call of `task`'s method on `plugin` (`POST /task`), with the keyword
    /// arguments of `kwargs`: as [`submit`](Self::submit) in every other way
    /// (priority, progress, cancellation, retries, the journal).
    pub fn submit_task(
        &self,
        plugin: &str,
        task: TaskCall,
        kwargs: CallArgs,
        priority: i32,
    ) -> Result<JobId, JobsError> {
        self.enqueue(plugin, NewJob::plain(kwargs, priority).task(Some(task)))
    }

    /// Queue `call` as a streaming job: as [`submit`](Self::submit), and its chunks
    /// come through the returned [`JobChunks`] as the plugin produces them, at the
    /// reader's pace (the worker waits while the reader does not read). The chunks
    /// end when the job ends; [`wait`](Self::wait) tells how (its result is
    /// `{"chunks": count}`). Dropping the chunks cancels the job. A stream that
    /// delivered a chunk is not tried again after a transient failure.
    pub fn submit_stream(
        &self,
        plugin: &str,
        call: CallArgs,
        priority: i32,
    ) -> Result<(JobId, JobChunks), JobsError> {
        let (chunks_to, chunks) = mpsc::channel(STREAM_BUFFER);
        let job = NewJob {
            chunks_to: Some(chunks_to),
            ..NewJob::plain(call, priority)
        };
        let id = self.enqueue(plugin, job)?;
        Ok((id, JobChunks::new(chunks)))
    }

    fn enqueue(&self, plugin: &str, job: NewJob) -> Result<JobId, JobsError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(JobsError::Closed);
        }
        if !inner.host.is_loaded(plugin) {
            return Err(ManagerError::NotLoaded {
                name: plugin.to_owned(),
            }
            .into());
        }
        let mut book = inner.book.lock();
        inner.enqueue_locked(&mut book, plugin, job, None)
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
        cancel::cancel(&self.inner, id)
    }

    /// Cancel the job without asking: a queued one as [`cancel`](Self::cancel) does; a
    /// running one's worker is killed at once and the plugin left stopped (it starts
    /// again, with its configuration, on its next call); the job ends cancelled
    /// (forced). For a second Ctrl-C, or a host about to stop anyway. Whether the job
    /// had not ended yet.
    pub fn cancel_now(&self, id: JobId) -> Result<bool, JobsError> {
        cancel::cancel_now(&self.inner, id)
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

    /// Job `id`'s log records after `after_seq` (oldest first, at most `limit`),
    /// read back from its worker's log first; what the bounds dropped is counted.
    /// Only its own records, whatever else ran on the worker at the same time: our
    /// workers name the call in each record (see the README's "Per-job
    /// diagnostics").
    pub async fn diagnostics(
        &self,
        id: JobId,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<JobDiagnostics, JobsError> {
        let job = self.journal_id(id).ok_or(JobsError::UnknownJob { id })?;
        let Some(ingest) = self.inner.diagnostics.clone() else {
            return Ok(JobDiagnostics::default());
        };
        let read = tokio::task::spawn_blocking(move || {
            ingest.ingest()?;
            ingest.store().read(&job, after_seq, limit)
        });
        match read.await {
            Ok(read) => Ok(read?),
            Err(_) => Err(JobsError::Closed),
        }
    }

    /// Wait until the journal holds everything that happened so far (it is written
    /// on a thread of its own, a moment behind). Does nothing without a journal.
    pub async fn sync_journal(&self) {
        if let Some(journal) = &self.inner.journal {
            journal.sync().await;
        }
    }

    /// Cancel every job, wait until each has ended, and until the journal holds it
    /// all.
    pub async fn shutdown(&self) {
        self.inner.close();
        let ids: Vec<JobId> = self.inner.book.lock().jobs.keys().copied().collect();
        for id in ids {
            let _ = self.wait(id).await;
        }
        self.sync_journal().await;
    }
}

/// What a job to be queued runs.
pub(crate) struct NewJob {
    call: CallArgs,
    priority: i32,
    /// Where a streaming job's chunks go.
    chunks_to: Option<mpsc::Sender<Value>>,
    /// The task adapter's method it calls instead of `execute`.
    task: Option<TaskCall>,
}

impl NewJob {
    pub(crate) fn plain(call: CallArgs, priority: i32) -> Self {
        NewJob {
            call,
            priority,
            chunks_to: None,
            task: None,
        }
    }

    pub(crate) fn task(mut self, task: Option<TaskCall>) -> Self {
        self.task = task;
        self
    }
}

impl Inner {
    /// Queue a job, under the book's lock (a composition's node becomes a job in the
    /// step that made it ready). Refused when the queue is closed or full, or the
    /// plugin is not loaded.
    fn enqueue_locked(
        &self,
        book: &mut Book,
        plugin: &str,
        job: NewJob,
        member: Option<composition::run::Member>,
    ) -> Result<JobId, JobsError> {
        let NewJob {
            call,
            priority,
            chunks_to,
            task,
        } = job;
        if self.closed.load(Ordering::SeqCst) {
            return Err(JobsError::Closed);
        }
        if member.is_some() && !self.host.is_loaded(plugin) {
            return Err(ManagerError::NotLoaded {
                name: plugin.to_owned(),
            }
            .into());
        }
        let limit = self.options.max_queued;
        if book.queue.len() >= limit {
            return Err(JobsError::QueueFull { limit });
        }
        let now = SystemTime::now();
        let id = JobId(book.next_id);
        book.next_id += 1;
        let call_id = format!("{}-{}", self.session, id.0);
        let (outcome, _) = watch::channel(None);
        let (cancel, _) = watch::channel(CancelRequest::None);
        let kept = observe::Kept::from_start(self.observability(plugin));
        if kept.at_submission() {
            self.record(Record::Submitted {
                id: call_id.clone(),
                plugin: plugin.to_owned(),
                priority,
                at: now,
            });
        }
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
                call_id,
                attempt_call_id: None,
                outcome,
                cancel,
                chunks_to,
                task,
                holds_place: false,
                execution: None,
                member,
                resources: None,
                kept,
                held_back: Vec::new(),
                pending: self.host.pending_target(plugin),
            },
        );
        book.queue.push(id, plugin, priority, self.epoch.elapsed());
        let (running, limit) = (book.queue.running(plugin), self.limit(plugin));
        if let Some(member) = member {
            // Indexed before its first event, so that the composition's listeners
            // see all of its member's.
            book.compositions.index_member(self, id, member);
        }
        self.emit(id, plugin, JobChange::State(JobState::Queued));
        // Its turn cannot come before one of its plugin's jobs ends.
        if running >= limit {
            let reason = BlockReason::Concurrency { running, limit };
            self.emit(id, plugin, JobChange::Blocked(Some(reason)));
        }
        self.dispatch.notify_one();
        Ok(id)
    }

    /// End queued job `id` cancelled, under the book's lock; whether it was queued.
    fn cancel_queued_locked(&self, book: &mut Book, id: JobId) -> bool {
        match book.jobs.get(&id) {
            Some(entry) if entry.status.state == JobState::Queued => {
                entry.ask(CancelRequest::Asked);
                book.queue.remove(id);
                run::end_locked(
                    self,
                    book,
                    id,
                    run::Ending::Cancelled(Cancellation::WhileQueued),
                )
            }
            _ => false,
        }
    }

    /// Record in the journal; called under the book's lock with the change it
    /// records, so that the journal sees changes in the order they happened.
    fn record(&self, record: Record) {
        #[cfg(test)]
        self.recorded.lock().push(format!("{record:?}"));
        if let Some(journal) = &self.journal {
            journal.record(record);
        }
    }

    /// Tell the listeners; called under the book's lock with the change it tells of,
    /// so that no event of a job comes after its final one.
    fn emit(&self, job: JobId, plugin: &str, change: JobChange) {
        let event = JobEvent {
            job,
            plugin: plugin.to_owned(),
            change,
        };
        self.hub.forward(&event);
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// `plugin`'s observability class: the options' word for it, else its
    /// manifest's, else the options' default.
    fn observability(&self, plugin: &str) -> cjm_metadata::Observability {
        self.options
            .observability
            .get(plugin)
            .copied()
            .or_else(|| self.host.observability(plugin))
            .unwrap_or(self.options.default_observability)
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
            let _ = cancel::cancel(self, id);
        }
        self.dispatch.notify_one();
    }
}

/// Chunks of a streaming job that wait for their reader before the worker is held up.
const STREAM_BUFFER: usize = 64;

/// A fresh session id: 8 random bytes as hex, so that two hosts (or two runs of
/// one) never share one.
fn session_id() -> String {
    cjm_interface::random_hex(8).unwrap_or_else(|_| {
        // Time and pid are unique enough for a journal key when randomness fails.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0);
        format!("{nanos:x}{:x}", std::process::id())
    })
}

/// The result stored for `wait`.
fn outcome(status: &JobStatus, result: Option<Value>) -> JobOutcome {
    JobOutcome {
        status: status.clone(),
        result,
    }
}
