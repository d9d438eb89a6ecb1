//! Requests of other processes, through the journal: `cjm-ctl jobs reorder` writes
//! one, and the host whose queued job it names carries it out and answers. A thread
//! of the host's looks for them, only while it has queued jobs (a reorder applies to
//! nothing else), and stops when the queue is closed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::journal::{open_for_requests, pending_requests, Record, REORDERED};
use super::model::JobId;
use super::verbs::reorder;
use super::Inner;

/// How often the journal is looked at while jobs are queued.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Start the thread that carries out requests for `inner`'s jobs.
pub(super) fn watch(inner: &Arc<Inner>, path: PathBuf) {
    let weak = Arc::downgrade(inner);
    let started = std::thread::Builder::new()
        .name(String::from("cjm-job-requests"))
        .spawn(move || {
            let mut connection = None;
            let mut handled = HashSet::new();
            loop {
                std::thread::sleep(LOOK_EVERY);
                // Gone or closed: nothing to carry out any more.
                let Some(inner) = weak.upgrade() else { return };
                if inner.closed.load(Ordering::SeqCst) {
                    return;
                }
                if inner.book.lock().queue.len() == 0 {
                    continue;
                }
                if connection.is_none() {
                    match open_for_requests(&path) {
                        Ok(opened) => connection = Some(opened),
                        Err(err) => {
                            tracing::warn!("job requests: {err}");
                            continue;
                        }
                    }
                }
                let Some(open) = &connection else { continue };
                let requests = match pending_requests(open, &inner.session) {
                    Ok(requests) => requests,
                    Err(err) => {
                        tracing::warn!("job requests: cannot read them: {err}");
                        continue;
                    }
                };
                for (request, job, priority) in requests {
                    if handled.insert(request) {
                        carry_out(&inner, request, &job, priority);
                    }
                }
            }
        });
    if let Err(err) = started {
        tracing::warn!("cannot start the job requests' thread ({err}): cjm-ctl jobs reorder will get no answer");
    }
}

fn carry_out(inner: &Arc<Inner>, request: i64, job: &str, priority: i32) {
    let number = job
        .strip_prefix(inner.session.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|number| number.parse().ok())
        .map(JobId);
    let answer = match number {
        None => format!("{job} is not a job of this host"),
        Some(id) => match reorder(inner, id, priority) {
            Ok(()) => String::from(REORDERED),
            Err(err) => err.to_string(),
        },
    };
    inner.record(Record::Answered { request, answer });
}
