//! A running call's progress: followed while the call runs, as events and in the
//! job's status.

use std::sync::Arc;
use std::time::Duration;

use cjm_interface::wire::ProgressResponse;
use cjm_proxy::ProxyError;
use tokio::sync::watch;

use super::host::{JobCall, Progress};
use super::model::{JobChange, JobId};
use super::Inner;

/// How long one `/progress` request waits for a report from our workers.
const PROGRESS_WAIT: Duration = Duration::from_secs(25);
/// A watcher that asks before the worker has the call, or while it dies, tries again
/// after this.
const PROGRESS_RETRY: Duration = Duration::from_millis(10);

/// The call a progress watcher follows.
pub(super) struct Watched {
    pub(super) id: JobId,
    pub(super) plugin: String,
    pub(super) call_id: String,
    /// Turns true when the call has returned: one last look, then stop. Closed when
    /// the call was dropped (abandoned): stop at once.
    pub(super) call_ended: watch::Receiver<bool>,
}

/// Follow the call's progress until it ends, as events and in its status.
pub(super) async fn watch_progress(
    inner: Arc<Inner>,
    execution: Arc<dyn JobCall>,
    watched: Watched,
) {
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
        // The call gone (its job abandoned) ends the watch, long poll or not: nobody
        // waits for the reports, and the execution it holds must go.
        let mut task_alive = call_ended.clone();
        let answer = tokio::select! {
            answer = execution.progress(&call_id, after, wait) => answer,
            () = async { while task_alive.changed().await.is_ok() {} } => return,
        };
        match answer {
            Ok(Progress {
                seq,
                fraction,
                message,
                finished,
            }) => {
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
                        poll_pause(PROGRESS_RETRY, &call_ended).await;
                        continue;
                    }
                    None if finished => false,
                    // The original's: plugin-wide, unnumbered; new when it changed.
                    None => last.as_ref() != Some(&(fraction, message.clone())),
                };
                if news {
                    last = Some((fraction, message.clone()));
                    if !apply(&inner, id, &plugin, fraction, message) {
                        return;
                    }
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

/// A report, into the job's status and out as an event, under the lock, unless the
/// job has ended; whether it had not.
fn apply(inner: &Inner, id: JobId, plugin: &str, fraction: f64, message: String) -> bool {
    let mut book = inner.book.lock();
    match book.jobs.get_mut(&id) {
        Some(entry) if !entry.status.state.is_final() => {
            entry.status.progress = Some((fraction, message.clone()));
            inner.emit(id, plugin, JobChange::Progress { fraction, message });
            true
        }
        _ => false,
    }
}

/// The report that came with the call's answer, if the watcher had not seen it.
pub(super) fn report_last(inner: &Inner, id: JobId, plugin: &str, last: ProgressResponse) {
    let mut book = inner.book.lock();
    let Some(entry) = book.jobs.get_mut(&id) else {
        return;
    };
    if entry.status.state.is_final() {
        return;
    }
    let known = entry.status.progress.as_ref();
    let news = known
        .is_none_or(|(fraction, message)| *fraction != last.progress || *message != last.message);
    if news {
        entry.status.progress = Some((last.progress, last.message.clone()));
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
