//! The life of a job: its turn comes (dispatch), it is admitted, sent, watched for
//! progress, maybe retried, maybe cancelled, and it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cjm_interface::wire::ProgressResponse;
use cjm_interface::ErrorCategory;
use cjm_proxy::ProxyError;
use serde_json::Value;
use tokio::sync::watch;

use super::journal::Record;
use super::model::{Cancellation, JobChange, JobFailure, JobId, JobState};
use super::{outcome, CancelRequest, Inner, JobsError};
use crate::manager::{AfterKill, Forced, JobExecution};
use crate::ManagerError;

/// How long one `/progress` request waits for a report from our workers.
const PROGRESS_WAIT: Duration = Duration::from_secs(25);
/// A watcher that asks before the worker has the call, or while it dies, tries again
/// after this.
const PROGRESS_RETRY: Duration = Duration::from_millis(10);
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
        loop {
            let next = inner.book.lock().queue.pop(|plugin| inner.limit(plugin));
            let Some(next) = next else { break };
            tracing::debug!(
                "job {} of plugin {}: its turn has come",
                next.id,
                next.plugin
            );
            start(&inner, next.id);
        }
        if inner.closed.load(Ordering::SeqCst) && inner.book.lock().queue.len() == 0 {
            return;
        }
        woken.await;
    }
}

/// The job's turn came: admit and run it on a task of its own.
fn start(inner: &Arc<Inner>, id: JobId) {
    let plugin = {
        let mut book = inner.book.lock();
        let Some(entry) = book.jobs.get_mut(&id) else {
            return;
        };
        entry.status.state = JobState::Admitted;
        entry.status.admitted_at = Some(SystemTime::now());
        entry.status.plugin.clone()
    };
    inner.emit(id, &plugin, JobChange::State(JobState::Admitted));
    let task = tokio::spawn(run(Arc::clone(inner), id));
    if let Some(entry) = inner.book.lock().jobs.get_mut(&id) {
        entry.task = Some(task.abort_handle());
    }
}

/// How a job ended.
enum Ending {
    Succeeded(Value),
    Failed(ManagerError),
    Cancelled(Cancellation),
}

async fn run(inner: Arc<Inner>, id: JobId) {
    let ending = attempts(&inner, id).await;
    finish(&inner, id, ending);
}

async fn attempts(inner: &Arc<Inner>, id: JobId) -> Ending {
    let Some((plugin, call, call_id)) = ({
        let book = inner.book.lock();
        book.jobs.get(&id).and_then(|entry| {
            Some((
                entry.status.plugin.clone(),
                entry.call.clone()?,
                entry.call_id.clone(),
            ))
        })
    }) else {
        return Ending::Failed(ManagerError::NotLoaded {
            name: String::from("(job without a call)"),
        });
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let execution = match inner.manager.begin_job_execution(&plugin).await {
            Ok(execution) => Arc::new(execution),
            Err(err) => return Ending::Failed(err),
        };
        // Sent from here on, unless cancelled while it was being admitted.
        {
            let mut book = inner.book.lock();
            let Some(entry) = book.jobs.get_mut(&id) else {
                return Ending::Cancelled(Cancellation::WhileQueued);
            };
            if entry.cancel != CancelRequest::None {
                return Ending::Cancelled(Cancellation::WhileQueued);
            }
            entry.status.state = JobState::Running;
            entry.status.attempts = attempt;
            entry.status.started_at.get_or_insert_with(SystemTime::now);
            entry.execution = Some(Arc::clone(&execution));
        }
        inner.emit(id, &plugin, JobChange::State(JobState::Running));
        if attempt == 1 {
            inner.record(Record::State {
                id: call_id.clone(),
                state: JobState::Running,
                at: SystemTime::now(),
            });
        }
        let (ended, call_ended) = watch::channel(false);
        let watch = Watched {
            id,
            plugin: plugin.clone(),
            call_id: call_id.clone(),
            call_ended,
        };
        // A call that ends at once needs no watcher: its last report comes with the
        // answer. Longer ones get one, and see each report as it is made.
        let (result, watcher) = {
            let running = execution.run(call.clone(), &call_id);
            tokio::pin!(running);
            tokio::select! {
                result = &mut running => (result, None),
                () = tokio::time::sleep(WATCH_AFTER) => {
                    let watcher = tokio::spawn(watch_progress(
                        Arc::clone(inner),
                        Arc::clone(&execution),
                        watch,
                    ));
                    ((&mut running).await, Some(watcher))
                }
            }
        };
        let _ = ended.send(true);
        if let Some(mut watcher) = watcher {
            if tokio::time::timeout(LAST_REPORT_WAIT, &mut watcher)
                .await
                .is_err()
            {
                watcher.abort();
            }
        }
        let result = match result {
            Ok((value, last)) => {
                if let Some(last) = last {
                    report_last(inner, id, &plugin, last);
                }
                Ok(value)
            }
            Err(err) => Err(err),
        };
        let (cancel, retry) = {
            let mut book = inner.book.lock();
            let entry = book.jobs.get_mut(&id);
            let cancel = entry
                .as_ref()
                .map_or(CancelRequest::None, |entry| entry.cancel);
            if let Some(entry) = entry {
                entry.execution = None;
            }
            (cancel, execution.policy.retry)
        };
        drop(execution);
        let err = match result {
            Ok(value) => return Ending::Succeeded(value),
            Err(err) => err,
        };
        if is_cancellation(&err) || cancel == CancelRequest::Asked {
            return Ending::Cancelled(Cancellation::Cooperative);
        }
        if cancel == CancelRequest::Forced {
            return Ending::Cancelled(Cancellation::Forced);
        }
        if err.category() == Some(ErrorCategory::Transient) && attempt <= retry.attempts {
            let delay = retry.delay_before(attempt);
            tracing::warn!(
                "job {id} of plugin {plugin}: attempt {attempt} failed ({err}); trying again in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            continue;
        }
        return Ending::Failed(err);
    }
}

fn is_cancellation(err: &ManagerError) -> bool {
    matches!(err, ManagerError::Plugin(ProxyError::Cancelled { .. }))
}

/// The call a progress watcher follows.
struct Watched {
    id: JobId,
    plugin: String,
    call_id: String,
    /// Turns true when the call has returned: one last look, then stop.
    call_ended: watch::Receiver<bool>,
}

/// Follow the call's progress until it ends, as events and in its status.
async fn watch_progress(inner: Arc<Inner>, execution: Arc<JobExecution>, watched: Watched) {
    let Watched {
        id,
        plugin,
        call_id,
        call_ended,
    } = watched;
    let mut after = 0u64;
    let mut last: Option<(f64, String)> = None;
    let mut failures = 0u32;
    loop {
        let last_look = *call_ended.borrow();
        let wait = if last_look {
            Duration::ZERO
        } else {
            PROGRESS_WAIT
        };
        // The call's task gone (its job abandoned) ends the watch, long poll or not:
        // nobody waits for the reports, and the execution it holds must go.
        let mut task_alive = call_ended.clone();
        let answer = tokio::select! {
            answer = execution.progress(&call_id, after, wait) => answer,
            () = async { while task_alive.changed().await.is_ok() {} } => return,
        };
        match answer {
            Ok((seq, fraction, message, finished)) => {
                failures = 0;
                let news = match seq {
                    // Our worker: numbered reports; an unknown call (not arrived yet)
                    // answers without a number.
                    Some(seq) if seq > after => {
                        after = seq;
                        true
                    }
                    Some(_) => false,
                    None if finished && !last_look => {
                        tokio::time::sleep(PROGRESS_RETRY).await;
                        continue;
                    }
                    None if finished => false,
                    // The original's: plugin-wide, unnumbered; new when it changed.
                    None => last.as_ref() != Some(&(fraction, message.clone())),
                };
                if news {
                    last = Some((fraction, message.clone()));
                    match inner.book.lock().jobs.get_mut(&id) {
                        Some(entry) if !entry.status.state.is_final() => {
                            entry.status.progress = Some((fraction, message.clone()));
                        }
                        _ => return,
                    }
                    inner.emit(id, &plugin, JobChange::Progress { fraction, message });
                }
                if last_look || (finished && seq.is_some()) {
                    return;
                }
                if seq.is_none() {
                    poll_pause(inner.options.progress_poll, &call_ended).await;
                }
            }
            // No progress endpoint (the original 0.0.20): nothing to watch.
            Err(ProxyError::Http { status: 404, .. }) => return,
            Err(err) => {
                failures += 1;
                if last_look || failures > 100 {
                    tracing::debug!("job {id}: giving up on its progress: {err}");
                    return;
                }
                poll_pause(inner.options.progress_poll.max(PROGRESS_RETRY), &call_ended).await;
            }
        }
    }
}

/// The report that came with the call's answer, if the watcher had not seen it.
fn report_last(inner: &Inner, id: JobId, plugin: &str, last: ProgressResponse) {
    let news = {
        let mut book = inner.book.lock();
        let Some(entry) = book.jobs.get_mut(&id) else {
            return;
        };
        let known = entry.status.progress.as_ref();
        let news = known.is_none_or(|(fraction, message)| {
            *fraction != last.progress || *message != last.message
        });
        if news {
            entry.status.progress = Some((last.progress, last.message.clone()));
        }
        news
    };
    if news {
        inner.emit(
            id,
            plugin,
            JobChange::Progress {
                fraction: last.progress,
                message: last.message,
            },
        );
    }
}

/// Wait `pause` before asking again, or less if the call ends meanwhile.
async fn poll_pause(pause: Duration, call_ended: &watch::Receiver<bool>) {
    let mut call_ended = call_ended.clone();
    let _ = tokio::time::timeout(pause, call_ended.wait_for(|ended| *ended)).await;
}

/// Record how the job ended, wake whoever waits, and let the next one go.
fn finish(inner: &Inner, id: JobId, ending: Ending) {
    let now = SystemTime::now();
    let (plugin, call_id, state) = {
        let mut book = inner.book.lock();
        let Some(entry) = book.jobs.get_mut(&id) else {
            return;
        };
        if entry.status.state.is_final() {
            return; // ended already (cancelled while it was being admitted)
        }
        entry.task = None;
        entry.execution = None;
        entry.call = None;
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
            Ending::Cancelled(how) => {
                entry.status.state = JobState::Cancelled;
                entry.status.cancelled = Some(how);
            }
        }
        entry
            .outcome
            .send_replace(Some(outcome(&entry.status, result)));
        let ended = (
            entry.status.plugin.clone(),
            entry.call_id.clone(),
            entry.status.clone(),
        );
        book.queue.finished(&ended.0);
        remember_finished(&mut book, id, inner.options.keep_finished);
        ended
    };
    journal_ending(inner, &call_id, &state, now);
    inner.emit(id, &plugin, JobChange::State(state.state));
    inner.dispatch.notify_one();
}

fn journal_ending(inner: &Inner, call_id: &str, status: &super::JobStatus, at: SystemTime) {
    let id = call_id.to_owned();
    let record = match (&status.failure, status.cancelled) {
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
    };
    inner.record(record);
}

fn remember_finished(book: &mut super::Book, id: JobId, keep: usize) {
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
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    JobFailure {
        category,
        retriable: err.retriable(),
        message,
    }
}

/// [`Jobs::cancel`](super::Jobs::cancel).
pub(super) fn cancel(inner: &Arc<Inner>, id: JobId) -> Result<bool, JobsError> {
    let mut book = inner.book.lock();
    let entry = book.jobs.get_mut(&id).ok_or(JobsError::UnknownJob { id })?;
    match entry.status.state {
        state if state.is_final() => Ok(false),
        JobState::Queued => {
            entry.cancel = CancelRequest::Asked;
            book.queue.remove(id);
            drop(book);
            finish(inner, id, Ending::Cancelled(Cancellation::WhileQueued));
            Ok(true)
        }
        JobState::Admitted => {
            // Not sent yet (waiting for admission or its worker): it never runs.
            entry.cancel = CancelRequest::Asked;
            if let Some(task) = entry.task.take() {
                task.abort();
            }
            drop(book);
            finish(inner, id, Ending::Cancelled(Cancellation::WhileQueued));
            Ok(true)
        }
        _ => {
            if entry.cancel != CancelRequest::None {
                return Ok(true);
            }
            entry.cancel = CancelRequest::Asked;
            let Some(execution) = entry.execution.clone() else {
                return Ok(true);
            };
            let call_id = entry.call_id.clone();
            drop(book);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(stop_running(Arc::clone(inner), id, execution, call_id));
                }
                Err(_) => tracing::warn!(
                    "job {id}: cancelled outside an async runtime; its call is left to end"
                ),
            }
            Ok(true)
        }
    }
}

/// Whether job `id` has not ended yet.
fn still_running(inner: &Inner, id: JobId) -> bool {
    inner
        .book
        .lock()
        .jobs
        .get(&id)
        .is_some_and(|entry| !entry.status.state.is_final())
}

/// Cancel without asking: a queued job as [`cancel`] does; a running one's worker is
/// killed at once and left stopped (it starts again on the plugin's next call).
pub(super) fn cancel_now(inner: &Arc<Inner>, id: JobId) -> Result<bool, JobsError> {
    let plugin = {
        let mut book = inner.book.lock();
        let entry = book.jobs.get_mut(&id).ok_or(JobsError::UnknownJob { id })?;
        match entry.status.state {
            state if state.is_final() => return Ok(false),
            JobState::Queued | JobState::Admitted => {
                drop(book);
                return cancel(inner, id);
            }
            _ => {
                entry.cancel = CancelRequest::Forced;
                entry.status.plugin.clone()
            }
        }
    };
    let inner = Arc::clone(inner);
    let stopping = async move {
        let forced = inner
            .manager
            .force_replace(
                &plugin,
                &format!("job {id} was cancelled at once"),
                || still_running(&inner, id),
                AfterKill::LeaveStopped,
            )
            .await;
        after_force(&inner, id, &plugin, forced);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(stopping);
        }
        Err(_) => tracing::warn!("job {id}: cancelled outside an async runtime; left to end"),
    }
    Ok(true)
}

/// Ask a running job's call to stop; if it has not ended within the cancel timeout
/// (or its worker cannot be asked), kill the worker and start it again.
async fn stop_running(inner: Arc<Inner>, id: JobId, execution: Arc<JobExecution>, call_id: String) {
    let plugin = execution.plugin().to_owned();
    // A zero timeout leaves nothing to wait for: no asking, the force at once (a
    // zero-length timer would still cost a tick of tokio's clock).
    let timeout = inner.options.cancel_timeout;
    if !timeout.is_zero() && execution.ask_to_cancel(&call_id).await {
        let ended = inner
            .book
            .lock()
            .jobs
            .get(&id)
            .map(|entry| entry.outcome.subscribe());
        let Some(mut ended) = ended else { return };
        if tokio::time::timeout(timeout, ended.wait_for(Option::is_some))
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!("job {id} of plugin {plugin} did not stop within {timeout:?} of its cancel");
    }
    drop(execution);
    {
        let mut book = inner.book.lock();
        match book.jobs.get_mut(&id) {
            Some(entry) if !entry.status.state.is_final() => entry.cancel = CancelRequest::Forced,
            _ => return,
        }
    }
    let forced = inner
        .manager
        .force_replace(
            &plugin,
            &format!("job {id} was cancelled and did not stop"),
            || still_running(&inner, id),
            AfterKill::Restart,
        )
        .await;
    after_force(&inner, id, &plugin, forced);
}

/// A killed worker ends the job's call by itself (it ends `Forced`). A worker that is
/// not the host's to kill would keep the job waiting for a call it ignores its cancel
/// in: the job stops waiting (its task, the call's connection with it, is dropped).
fn after_force(inner: &Inner, id: JobId, plugin: &str, forced: Result<Forced, ManagerError>) {
    match forced {
        Ok(Forced::Replaced | Forced::NotNeeded) => {}
        Ok(Forced::NotOwned) => {
            if let Some(task) = inner
                .book
                .lock()
                .jobs
                .get_mut(&id)
                .and_then(|entry| entry.task.take())
            {
                task.abort();
            }
            finish(inner, id, Ending::Cancelled(Cancellation::Abandoned));
        }
        Err(err) => tracing::warn!("job {id}: forced stop of plugin {plugin}: {err}"),
    }
}
