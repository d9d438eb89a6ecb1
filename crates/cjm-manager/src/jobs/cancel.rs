//! Cancelling a job: what a cancel does depends on the step the job is at, read and
//! changed under the book's lock. A queued job ends at once; an admitted one (not sent
//! yet) is told, and its task ends it; a running one's call is asked to stop, and its
//! worker killed if it does not. No task is ever aborted: its steps end it.

use std::sync::Arc;

use super::host::JobCall;
use super::model::{CancelPhase, Cancellation, JobChange, JobId, JobState};
use super::run::{end_locked, Ending};
use super::{CancelRequest, Inner, JobsError};
use crate::manager::{AfterKill, Forced};
use crate::ManagerError;

/// [`Jobs::cancel`](super::Jobs::cancel).
pub(super) fn cancel(inner: &Arc<Inner>, id: JobId) -> Result<bool, JobsError> {
    let mut book = inner.book.lock();
    let entry = book.jobs.get_mut(&id).ok_or(JobsError::UnknownJob { id })?;
    match entry.status.state {
        state if state.is_final() => Ok(false),
        JobState::Queued => {
            entry.ask(CancelRequest::Asked);
            book.queue.remove(id);
            end_locked(
                inner,
                &mut book,
                id,
                Ending::Cancelled(Cancellation::WhileQueued),
            );
            Ok(true)
        }
        _ => {
            if entry.cancel_request() != CancelRequest::None {
                return Ok(true);
            }
            entry.ask(CancelRequest::Asked);
            // Admitted, or between two attempts: its task sees the request and ends
            // it before anything more is sent.
            let (Some(execution), Some(call_id)) =
                (entry.execution.clone(), entry.attempt_call_id.clone())
            else {
                return Ok(true);
            };
            let plugin = entry.status.plugin.clone();
            inner.emit(id, &plugin, JobChange::Cancel(CancelPhase::Cooperative));
            drop(book);
            spawn_or_warn(id, stop_running(Arc::clone(inner), id, execution, call_id));
            Ok(true)
        }
    }
}

/// Cancel without asking: a queued or admitted job as [`cancel`] does; a running
/// one's worker is killed at once and left stopped (it starts again on the plugin's
/// next call).
pub(super) fn cancel_now(inner: &Arc<Inner>, id: JobId) -> Result<bool, JobsError> {
    let plugin = {
        let mut book = inner.book.lock();
        let entry = book.jobs.get_mut(&id).ok_or(JobsError::UnknownJob { id })?;
        match entry.status.state {
            state if state.is_final() => return Ok(false),
            JobState::Running
                if entry.execution.is_some()
                    && matches!(
                        entry.cancel_request(),
                        CancelRequest::None | CancelRequest::Asked
                    ) =>
            {
                entry.ask(CancelRequest::Forced);
                let plugin = entry.status.plugin.clone();
                inner.emit(id, &plugin, JobChange::Cancel(CancelPhase::Force));
                plugin
            }
            _ => {
                drop(book);
                return cancel(inner, id);
            }
        }
    };
    let inner = Arc::clone(inner);
    spawn_or_warn(id, async move {
        let forced = force(
            &inner,
            id,
            &plugin,
            "was cancelled at once",
            AfterKill::LeaveStopped,
        )
        .await;
        after_force(&inner, id, &plugin, forced);
    });
    Ok(true)
}

fn spawn_or_warn(id: JobId, work: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(work);
        }
        Err(_) => tracing::warn!("job {id}: cancelled outside an async runtime; left to end"),
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

/// Ask a running job's call to stop; if it has not ended within the cancel timeout
/// (or its worker cannot be asked), kill the worker and start it again.
async fn stop_running(inner: Arc<Inner>, id: JobId, execution: Arc<dyn JobCall>, call_id: String) {
    let plugin = execution.plugin().to_owned();
    // A zero timeout leaves nothing to wait for: no asking, the force at once (a
    // zero-length timer would still cost a tick of tokio's clock).
    let timeout = inner.options.cancel_timeout;
    // The ask and the wait for the job's end share the one cancel timeout: a worker
    // slow to answer the ask (the original 0.0.20 answers nothing while a call runs)
    // does not lengthen it.
    let deadline = tokio::time::Instant::now() + timeout;
    let asked = !timeout.is_zero()
        && tokio::time::timeout_at(deadline, execution.ask_to_cancel(&call_id))
            .await
            .unwrap_or(true);
    if asked {
        let ended = inner
            .book
            .lock()
            .jobs
            .get(&id)
            .map(|entry| entry.outcome.subscribe());
        let Some(mut ended) = ended else { return };
        if tokio::time::timeout_at(deadline, ended.wait_for(Option::is_some))
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
            Some(entry)
                if !entry.status.state.is_final()
                    && entry.cancel_request() == CancelRequest::Asked =>
            {
                entry.ask(CancelRequest::Forced);
                inner.emit(id, &plugin, JobChange::Cancel(CancelPhase::Force));
            }
            _ => return,
        }
    }
    let forced = force(
        &inner,
        id,
        &plugin,
        "was cancelled and did not stop",
        AfterKill::Restart,
    )
    .await;
    after_force(&inner, id, &plugin, forced);
}

async fn force(
    inner: &Arc<Inner>,
    id: JobId,
    plugin: &str,
    why: &str,
    after: AfterKill,
) -> Result<Forced, ManagerError> {
    let still_needed = {
        let inner = Arc::clone(inner);
        Box::new(move || still_running(&inner, id))
    };
    inner
        .host
        .force_stop(plugin, format!("job {id} {why}"), still_needed, after)
        .await
}

/// A killed worker ends the job's call by itself (it ends `Forced`). A worker that is
/// not the host's to kill would keep the job waiting for a call that ignores its
/// cancel: the job's task is told to stop waiting (it drops the call's connection)
/// and ends the job abandoned.
fn after_force(inner: &Inner, id: JobId, plugin: &str, forced: Result<Forced, ManagerError>) {
    match forced {
        Ok(Forced::Replaced | Forced::NotNeeded) => {}
        Ok(Forced::NotOwned) => {
            if let Some(entry) = inner.book.lock().jobs.get_mut(&id) {
                if !entry.status.state.is_final() {
                    entry.ask(CancelRequest::Abandon);
                }
            }
        }
        Err(err) => tracing::warn!("job {id}: forced stop of plugin {plugin}: {err}"),
    }
}
