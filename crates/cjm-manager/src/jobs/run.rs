//! The life of a job: its turn comes (dispatch), it is admitted, sent, maybe retried,
//! and it ends, exactly once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cjm_interface::envelope::CallEnvelope;
use cjm_interface::wire::ProgressResponse;
use cjm_interface::ErrorCategory;
use cjm_proxy::{CallTarget, ProxyError};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::composition::run::{member_ended, MemberEnd};
use super::host::{Addressed, JobCall, Waiting};
use super::journal::Record;
use super::model::{
    BlockReason, CancelPhase, Cancellation, JobChange, JobFailure, JobId, JobState,
};
use super::observe;
use super::progress::{report_last, watch_progress, Watched};
use super::{outcome, Book, CancelRequest, Inner};
use crate::ManagerError;
use cjm_scheduling::Resource;

/// How long a job's end waits for its watcher's last look at its progress.
const LAST_REPORT_WAIT: Duration = Duration::from_millis(500);
/// A call running longer than this gets a progress watcher.
const WATCH_AFTER: Duration = Duration::from_millis(2);

/// Start every job whose turn has come, as long as the queue lives.
pub(super) async fn dispatch(inner: Arc<Inner>) {
    loop {
        let woken = inner.dispatch.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        while let Some((id, cancel)) = admit_next(&inner) {
            tokio::spawn(run(Arc::clone(&inner), id, cancel));
        }
        if inner.closed.load(Ordering::SeqCst) && inner.book.lock().queue.len() == 0 {
            return;
        }
        woken.await;
    }
}

/// Take the next job whose turn has come out of the queue and admit it, in one step
/// under the lock: a cancel sees it either queued or admitted, never in between.
fn admit_next(inner: &Inner) -> Option<(JobId, watch::Receiver<CancelRequest>)> {
    let mut book = inner.book.lock();
    let book = &mut *book;
    loop {
        let next = book.queue.pop(|plugin| inner.limit(plugin))?;
        let Some(entry) = book
            .jobs
            .get_mut(&next.id)
            .filter(|entry| entry.status.state == JobState::Queued)
        else {
            // Not a queued job (cannot happen: a job leaves the queue as it leaves
            // that state); its place goes back rather than being lost.
            tracing::error!("job {} came up but was not queued", next.id);
            book.queue.finished(&next.plugin);
            continue;
        };
        tracing::debug!(
            "job {} of plugin {}: its turn has come",
            next.id,
            next.plugin
        );
        entry.status.state = JobState::Admitted;
        entry.status.admitted_at = Some(SystemTime::now());
        entry.holds_place = true;
        let cancel = entry.cancel.subscribe();
        inner.emit(next.id, &next.plugin, JobChange::State(JobState::Admitted));
        return Some((next.id, cancel));
    }
}

/// How a job ended.
pub(super) enum Ending {
    Succeeded(Value),
    Failed(ManagerError),
    Cancelled(Cancellation),
    /// Its task ended without an ending (its runtime shut down under it).
    Lost,
}

/// Ends the job if its task is dropped before it could (a runtime shutting down):
/// no job is left running for ever in the book.
struct EndsTheJob {
    inner: Arc<Inner>,
    id: JobId,
}

impl Drop for EndsTheJob {
    fn drop(&mut self) {
        finish(&self.inner, self.id, Ending::Lost);
    }
}

async fn run(inner: Arc<Inner>, id: JobId, mut cancel: watch::Receiver<CancelRequest>) {
    let guard = EndsTheJob {
        inner: Arc::clone(&inner),
        id,
    };
    let ending = attempts(&inner, id, &mut cancel).await;
    finish(&inner, id, ending);
    drop(guard); // finds the job ended: nothing to do
}

/// Resolves once anything is asked of the job (a cancel of any kind).
async fn asked(cancel: &mut watch::Receiver<CancelRequest>) {
    // The sender lives as long as the job's entry; gone, the job is gone too.
    let _ = cancel
        .wait_for(|request| *request != CancelRequest::None)
        .await;
}

/// Resolves once the job is to be abandoned (its call left to run on a worker that is
/// not the host's).
async fn abandoned(mut cancel: watch::Receiver<CancelRequest>) {
    let _ = cancel
        .wait_for(|request| *request == CancelRequest::Abandon)
        .await;
}

/// How a cancel that stopped the job before a call was sent ends it: a job that
/// never ran was cancelled while queued; one whose earlier attempt ran, between two
/// attempts (it stopped when asked).
fn stopped_before_sending(attempt: u32) -> Ending {
    Ending::Cancelled(if attempt == 1 {
        Cancellation::WhileQueued
    } else {
        Cancellation::Cooperative
    })
}

async fn attempts(
    inner: &Arc<Inner>,
    id: JobId,
    cancel: &mut watch::Receiver<CancelRequest>,
) -> Ending {
    let Some((plugin, call, base_id, chunks_to, task)) = ({
        let book = inner.book.lock();
        book.jobs.get(&id).and_then(|entry| {
            Some((
                entry.status.plugin.clone(),
                entry.call.clone()?,
                entry.call_id.clone(),
                entry.chunks_to.clone(),
                entry.task.clone(),
            ))
        })
    }) else {
        // Ended already (the entry is kept until it is): nothing to run.
        return Ending::Lost;
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        // Admission and the worker's start may take long (a model loading): a cancel
        // stops the wait. Dropping `begin` is safe: the host finishes or rolls back
        // whatever it started.
        let execution = tokio::select! {
            biased;
            () = asked(cancel) => return stopped_before_sending(attempt),
            begun = inner.host.begin_telling(&plugin, blocked_by(inner, id)) => match begun {
                Ok(execution) => execution,
                Err(err) => return Ending::Failed(err),
            },
        };
        let call_id = attempt_call_id(&base_id, attempt);
        inner.follow_log(&plugin);
        if !mark_running(inner, id, &plugin, &execution, &call_id, attempt) {
            return stopped_before_sending(attempt);
        }
        let mut delivered = 0u64;
        // The job's journal id and this attempt travel with the call (the original's
        // envelope): the plugin and its log records see which job they work for.
        let envelope = CallEnvelope::for_job(base_id.clone(), attempt);
        let target = match &task {
            Some(task) => CallTarget::Task {
                task: &task.task,
                method: &task.method,
            },
            None => CallTarget::Execute,
        };
        let result = tokio::select! {
            biased;
            () = abandoned(cancel.clone()) => return Ending::Cancelled(Cancellation::Abandoned),
            result = call_watched(inner, id, &plugin, &execution, Work {
                call: &call,
                call_id: &call_id,
                to: Addressed { target, envelope: &envelope },
                chunks_to: chunks_to.as_ref(),
                delivered: &mut delivered,
            }) => result,
        };
        let accounts = execution.take_accounts();
        let metrics = execution.take_metrics();
        let request = {
            let mut book = inner.book.lock();
            match book.jobs.get_mut(&id) {
                Some(entry) => {
                    if !accounts.is_empty() {
                        observe::record(
                            inner,
                            entry,
                            Record::Accounts {
                                id: base_id.clone(),
                                attempt,
                                accounts,
                                at: SystemTime::now(),
                            },
                        );
                    }
                    if !metrics.is_empty() {
                        observe::record(
                            inner,
                            entry,
                            Record::Metrics {
                                id: base_id.clone(),
                                attempt,
                                metrics,
                                at: SystemTime::now(),
                            },
                        );
                    }
                    entry.execution = None;
                    entry.cancel_request()
                }
                None => CancelRequest::None,
            }
        };
        let retry = execution.retry();
        drop(execution);
        inner.ingest_soon();
        let err = match result {
            Ok(value) => return Ending::Succeeded(value),
            Err(err) => err,
        };
        match request {
            CancelRequest::Forced => return Ending::Cancelled(Cancellation::Forced),
            CancelRequest::Abandon => return Ending::Cancelled(Cancellation::Abandoned),
            CancelRequest::Asked => return Ending::Cancelled(Cancellation::Cooperative),
            CancelRequest::None if is_cancellation(&err) => {
                return Ending::Cancelled(Cancellation::Cooperative)
            }
            CancelRequest::None => {}
        }
        // A stream that delivered chunks is not made again: its reader has them.
        if !worth_retrying(&err) || attempt > retry.attempts || delivered > 0 {
            return Ending::Failed(err);
        }
        // A retry is kept in the journal whatever the plugin's observability class.
        if let Some(entry) = inner.book.lock().jobs.get_mut(&id) {
            observe::keep_from_now(inner, entry);
        }
        let delay = retry.delay_before(attempt);
        tracing::warn!(
            "job {id} of plugin {plugin}: attempt {attempt} failed ({err}); trying again in {delay:?}"
        );
        tokio::select! {
            biased;
            () = asked(cancel) => return Ending::Cancelled(Cancellation::Cooperative),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// What tells job `id`'s listeners why its admission waits: once per reason, while
/// it is admitted (a job no longer waiting says nothing more).
fn blocked_by(inner: &Arc<Inner>, id: JobId) -> Box<dyn Fn(Waiting<'_>) + Send + Sync + 'static> {
    let inner = Arc::clone(inner);
    let last = parking_lot::Mutex::new(None::<BlockReason>);
    Box::new(move |waiting| {
        let reason = match waiting {
            Waiting::Refused(refusal) if refusal.is_short_of(Resource::GpuMemory) => {
                BlockReason::Gpu
            }
            Waiting::Refused(refusal) if refusal.is_short_of(Resource::SystemMemory) => {
                BlockReason::Memory
            }
            Waiting::Refused(refusal) => BlockReason::Scheduler {
                message: refusal.to_string(),
            },
            Waiting::Placement(placement) => BlockReason::Placement {
                placement: placement.to_owned(),
            },
        };
        let book = inner.book.lock();
        let Some(entry) = book.jobs.get(&id) else {
            return;
        };
        if entry.status.state != JobState::Admitted {
            return;
        }
        let mut last = last.lock();
        if last.as_ref() != Some(&reason) {
            *last = Some(reason.clone());
            inner.emit(id, &entry.status.plugin, JobChange::Blocked(Some(reason)));
        }
    })
}

/// The call id of attempt `attempt`: the job's own for the first, then one of its own
/// for each retry.
pub(super) fn attempt_call_id(base: &str, attempt: u32) -> String {
    if attempt <= 1 {
        base.to_owned()
    } else {
        format!("{base}.{attempt}")
    }
}

/// Whether a failed attempt may be made again: a transient failure, except a call
/// that timed out on a worker left running (it may still run there: a retry beside
/// it would run the plugin twice at once).
fn worth_retrying(err: &ManagerError) -> bool {
    if let ManagerError::Timeout {
        worker_killed: false,
        ..
    } = err
    {
        return false;
    }
    err.category() == Some(ErrorCategory::Transient)
}

/// The job is sent from here on, unless a cancel came first: one step under the
/// lock. Whether it is to be sent.
fn mark_running(
    inner: &Inner,
    id: JobId,
    plugin: &str,
    execution: &Arc<dyn JobCall>,
    call_id: &str,
    attempt: u32,
) -> bool {
    let mut book = inner.book.lock();
    let Some(entry) = book.jobs.get_mut(&id) else {
        return false;
    };
    if entry.cancel_request() != CancelRequest::None || entry.status.state.is_final() {
        return false;
    }
    entry.status.state = JobState::Running;
    entry.status.attempts = attempt;
    let now = SystemTime::now();
    entry.status.started_at.get_or_insert(now);
    entry.execution = Some(Arc::clone(execution));
    entry.resources = execution.resources();
    entry.attempt_call_id = Some(call_id.to_owned());
    // Running: no longer a queued job's target.
    entry.pending = None;
    if attempt == 1 {
        observe::record(
            inner,
            entry,
            Record::State {
                id: entry.call_id.clone(),
                state: JobState::Running,
                at: now,
            },
        );
    }
    inner.emit(id, plugin, JobChange::State(JobState::Running));
    true
}

/// What one attempt sends.
struct Work<'a> {
    call: &'a cjm_interface::CallArgs,
    call_id: &'a str,
    /// What the call addresses, and the job's envelope.
    to: Addressed<'a>,
    /// Where a streaming job's chunks go; `None` for a plain call.
    chunks_to: Option<&'a mpsc::Sender<Value>>,
    /// Chunks handed to the reader so far.
    delivered: &'a mut u64,
}

/// Run the call; a call that does not end at once gets a progress watcher. Its
/// result, with its last report applied.
async fn call_watched(
    inner: &Arc<Inner>,
    id: JobId,
    plugin: &str,
    execution: &Arc<dyn JobCall>,
    work: Work<'_>,
) -> Result<Value, ManagerError> {
    let call_id = work.call_id;
    let (ended, call_ended) = watch::channel(false);
    // A call that ends at once needs no watcher: its last report comes with the
    // answer. Longer ones get one, and see each report as it is made.
    let (result, watcher) = {
        let running = send(execution.as_ref(), plugin, work);
        tokio::pin!(running);
        tokio::select! {
            result = &mut running => (result, None),
            () = tokio::time::sleep(WATCH_AFTER) => {
                let watcher = tokio::spawn(watch_progress(
                    Arc::clone(inner),
                    Arc::clone(execution),
                    Watched {
                        id,
                        plugin: plugin.to_owned(),
                        call_id: call_id.to_owned(),
                        call_ended,
                    },
                ));
                ((&mut running).await, Some(watcher))
            }
        }
    };
    // Dropped with `ended` if this future is (an abandoned call): the watcher sees
    // the channel close and ends.
    let _ = ended.send(true);
    if let Some(mut watcher) = watcher {
        // The watcher ends itself at the next step after `ended`; this only bounds
        // the wait for its last look.
        let _ = tokio::time::timeout(LAST_REPORT_WAIT, &mut watcher).await;
    }
    let (value, last) = result?;
    if let Some(last) = last {
        report_last(inner, id, plugin, last);
    }
    Ok(value)
}

/// Send the attempt: a plain call's answer, or a stream's chunks handed to its reader
/// one by one (at the reader's pace) and their count as the result.
async fn send(
    execution: &dyn JobCall,
    plugin: &str,
    work: Work<'_>,
) -> Result<(Value, Option<ProgressResponse>), ManagerError> {
    let Some(reader) = work.chunks_to else {
        return execution
            .run(work.call.clone(), work.call_id, work.to)
            .await;
    };
    let reader_gone = || {
        // Nobody reads on: the stream (dropped with this future) stops its producer.
        ManagerError::Plugin(ProxyError::Cancelled {
            plugin: plugin.to_owned(),
            endpoint: cjm_interface::wire::PATH_EXECUTE_STREAM,
            detail: String::from("its reader went away"),
        })
    };
    let mut chunks = execution
        .stream(work.call.clone(), work.call_id, work.to.envelope)
        .await?;
    loop {
        let chunk = tokio::select! {
            chunk = std::future::poll_fn(|cx| chunks.as_mut().poll_next(cx)) => chunk,
            () = reader.closed() => break,
        };
        let Some(chunk) = chunk else {
            return Ok((serde_json::json!({ "chunks": *work.delivered }), None));
        };
        if reader.send(chunk?).await.is_err() {
            break;
        }
        *work.delivered += 1;
    }
    // The reader went away. The plugin is told (its cancel flag set, as for any
    // cancel), then the stream is dropped, which stops its producer in any case.
    execution.ask_to_cancel(work.call_id).await;
    Err(reader_gone())
}

fn is_cancellation(err: &ManagerError) -> bool {
    matches!(err, ManagerError::Plugin(ProxyError::Cancelled { .. }))
}

/// End the job: its final status, its waiters woken, its event and journal record,
/// and its place (if it held one) given to the next. Once: a job that ended already
/// is left as it is. All under the book's lock.
pub(super) fn finish(inner: &Inner, id: JobId, ending: Ending) {
    {
        let mut book = inner.book.lock();
        if !end_locked(inner, &mut book, id, ending) {
            return;
        }
    }
    inner.dispatch.notify_one();
}

/// [`finish`] with the lock held; whether the job ended now.
pub(super) fn end_locked(inner: &Inner, book: &mut Book, id: JobId, ending: Ending) -> bool {
    let Some(entry) = book.jobs.get_mut(&id) else {
        return false;
    };
    if entry.status.state.is_final() {
        return false;
    }
    let now = SystemTime::now();
    entry.execution = None;
    entry.call = None;
    // A streaming job's reader sees the end of its chunks.
    entry.chunks_to = None;
    entry.status.finished_at = Some(now);
    let mut result = None;
    match ending {
        Ending::Succeeded(value) => {
            entry.status.state = JobState::Succeeded;
            result = Some(value);
        }
        Ending::Failed(err) => {
            entry.status.state = JobState::Failed;
            entry.status.failure = Some(failure_of(&err));
        }
        Ending::Lost => {
            entry.status.state = JobState::Failed;
            entry.status.failure = Some(JobFailure {
                category: ErrorCategory::Fatal,
                retriable: true,
                message: String::from(
                    "the job's task ended before the job did (its runtime shut down)",
                ),
            });
        }
        Ending::Cancelled(how) => {
            entry.status.state = JobState::Cancelled;
            entry.status.cancelled = Some(how);
        }
    }
    // A member's result is its dependents' input; anyone else's is only waited for.
    let for_member = if entry.member.is_some() {
        result.clone()
    } else {
        None
    };
    entry
        .outcome
        .send_replace(Some(outcome(&entry.status, result)));
    let plugin = entry.status.plugin.clone();
    if std::mem::take(&mut entry.holds_place) {
        book.queue.finished(&plugin);
    }
    let state = entry.status.state;
    entry.pending = None;
    let ending = journal_ending(&entry.call_id, &entry.status, now);
    observe::record_ending(inner, entry, ending);
    if entry
        .status
        .cancelled
        .is_some_and(|how| how != Cancellation::WhileQueued)
    {
        inner.emit(id, &plugin, JobChange::Cancel(CancelPhase::Completed));
    }
    inner.emit(id, &plugin, JobChange::State(state));
    let member = entry.member.map(|member| {
        (
            member,
            MemberEnd {
                state,
                result: for_member,
                failure: entry.status.failure.clone(),
            },
        )
    });
    remember_finished(book, id, inner.options.keep_finished);
    // Its node moves on in the same step: the composition never sees a member ended
    // that its node has not taken in.
    if let Some((member, end)) = member {
        member_ended(inner, book, member, end);
    }
    true
}

fn journal_ending(call_id: &str, status: &super::JobStatus, at: SystemTime) -> Record {
    let id = call_id.to_owned();
    match (&status.failure, status.cancelled) {
        (Some(failure), _) => Record::Failed {
            id,
            category: failure.category.as_str().to_owned(),
            message: failure.message.clone(),
            at,
        },
        (None, Some(how)) => Record::Cancelled { id, how, at },
        (None, None) => Record::State {
            id,
            state: status.state,
            at,
        },
    }
}

fn remember_finished(book: &mut Book, id: JobId, keep: usize) {
    book.finished.push_back(id);
    while book.finished.len() > keep {
        if let Some(old) = book.finished.pop_front() {
            book.jobs.remove(&old);
        }
    }
}

/// The failure as the job reports it: the error with its causes, and its category.
fn failure_of(err: &ManagerError) -> JobFailure {
    let category = err.category().unwrap_or(ErrorCategory::Fatal);
    JobFailure {
        category,
        retriable: err.retriable(),
        message: cjm_interface::ErrorChain(err).to_string(),
    }
}
