//! What a running call shares with the worker that runs it: its id, how far it has
//! got, and whether it was asked to stop.
//!
//! A plugin reaches its call's [`CallControl`] through [`Call`](crate::Call)
//! (`call.report_progress(..)`, `call.check_cancelled()?`, `call.control()` for a
//! handle to move into threads). Several calls may run on one worker at once, so
//! each has a control of its own; the host names calls by id.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::envelope::{Account, CallEnvelope};
use crate::PluginError;

/// How far a call has got, as it last reported.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// 0.0 to 1.0; negative for "cannot tell" (the original's -1.0).
    pub fraction: f64,
    /// What the call is doing now.
    pub message: String,
    /// Reports so far: 0 before the first. Grows by one with each report, so a
    /// watcher can ask for what came after the last one it saw.
    pub seq: u64,
    /// The call has ended (whatever its outcome).
    pub finished: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            fraction: 0.0,
            message: String::new(),
            seq: 0,
            finished: false,
        }
    }
}

type Callback = Box<dyn FnOnce() + Send>;

struct State {
    progress: Progress,
    cancelled: bool,
    on_cancel: Vec<Callback>,
}

struct Inner {
    id: String,
    /// Who the call is for, as the host said.
    envelope: Option<CallEnvelope>,
    /// What the plugin recorded for the host, until the answer takes them.
    accounts: Mutex<Vec<Account>>,
    state: Mutex<State>,
    /// Woken on every report, on cancellation and at the end.
    changed: Condvar,
}

/// The shared state of one call. Cheap to clone: clones are the same call.
#[derive(Clone)]
pub struct CallControl {
    inner: Arc<Inner>,
}

impl fmt::Debug for CallControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("CallControl")
            .field("id", &self.inner.id)
            .field("progress", &state.progress)
            .field("cancelled", &state.cancelled)
            .finish()
    }
}

impl Default for CallControl {
    /// A control no host watches: reports go nowhere, nothing cancels it.
    fn default() -> Self {
        CallControl::new(String::new())
    }
}

impl CallControl {
    /// The control of call `id` (chosen by the host; empty when it chose none).
    pub fn new(id: impl Into<String>) -> Self {
        CallControl::with_envelope(id, None)
    }

    /// The control of call `id`, made for the job (and the rest) `envelope` names.
    pub fn with_envelope(id: impl Into<String>, envelope: Option<CallEnvelope>) -> Self {
        CallControl {
            inner: Arc::new(Inner {
                id: id.into(),
                envelope,
                accounts: Mutex::new(Vec::new()),
                state: Mutex::new(State {
                    progress: Progress::default(),
                    cancelled: false,
                    on_cancel: Vec::new(),
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// The call's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Who the call is for, as the host sent it (the original 0.0.46's envelope);
    /// `None` for a call without one (a direct call, an old host).
    pub fn envelope(&self) -> Option<&CallEnvelope> {
        self.inner.envelope.as_ref()
    }

    /// The job the call runs for, when the host runs it as a job: the id its journal
    /// keeps it under. The worker also puts it on a `tracing` span (`job_id`) around
    /// the call, so that the plugin's log records carry it.
    pub fn job_id(&self) -> Option<&str> {
        self.inner.envelope.as_ref()?.job_id.as_deref()
    }

    /// Record an account for the host (the original's `record_account`): it goes
    /// back on the call's answer (success or failure) and the host keeps it with the
    /// job. `payload` holds references and hashes, never content.
    pub fn record_account(&self, event_type: impl Into<String>, payload: crate::ConfigMap) {
        self.inner
            .accounts
            .lock()
            .push(Account::new(event_type, payload));
    }

    /// The accounts recorded so far, taken: each goes back once.
    pub fn take_accounts(&self) -> Vec<Account> {
        std::mem::take(&mut *self.inner.accounts.lock())
    }

    /// Report how far the call has got: `fraction` from 0.0 to 1.0 (clamped; a
    /// negative value or NaN means "cannot tell"), and what it is doing.
    pub fn report_progress(&self, fraction: f64, message: impl Into<String>) {
        let fraction = if fraction.is_nan() || fraction < 0.0 {
            -1.0
        } else {
            fraction.min(1.0)
        };
        let mut state = self.inner.state.lock();
        state.progress.fraction = fraction;
        state.progress.message = message.into();
        state.progress.seq += 1;
        drop(state);
        self.inner.changed.notify_all();
    }

    /// The latest report.
    pub fn progress(&self) -> Progress {
        self.inner.state.lock().progress.clone()
    }

    /// Wait up to `limit` for a report after number `after`, or for the end of the
    /// call; the latest state either way.
    pub fn progress_after(&self, after: u64, limit: Duration) -> Progress {
        let deadline = deadline_after(limit);
        let mut state = self.inner.state.lock();
        while state.progress.seq <= after && !state.progress.finished {
            if self.wait(&mut state, deadline) {
                break;
            }
        }
        state.progress.clone()
    }

    /// Whether the call was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.state.lock().cancelled
    }

    /// `Err` with a "cancelled" [`PluginError`] once the call was asked to stop: call
    /// it at points where stopping is safe and propagate it with `?`.
    pub fn check_cancelled(&self) -> Result<(), PluginError> {
        if self.is_cancelled() {
            return Err(PluginError::cancelled(self.cancelled_message()));
        }
        Ok(())
    }

    /// Wait up to `limit` for the call to be asked to stop; whether it was. For a
    /// call that sleeps or polls something of its own between steps.
    pub fn wait_cancelled(&self, limit: Duration) -> bool {
        let deadline = deadline_after(limit);
        let mut state = self.inner.state.lock();
        while !state.cancelled {
            if self.wait(&mut state, deadline) {
                break;
            }
        }
        state.cancelled
    }

    /// Wait for the next change, until `deadline` (`None`: no end); whether the
    /// deadline passed.
    fn wait(&self, state: &mut MutexGuard<'_, State>, deadline: Option<Instant>) -> bool {
        match deadline {
            Some(deadline) => self.inner.changed.wait_until(state, deadline).timed_out(),
            None => {
                self.inner.changed.wait(state);
                false
            }
        }
    }

    /// Run `callback` when the call is asked to stop (at once if it already was):
    /// for work the plugin cannot interrupt at a check, such as a child process to
    /// signal. The callback runs on the thread that cancels; keep it short.
    pub fn on_cancel(&self, callback: impl FnOnce() + Send + 'static) {
        let mut state = self.inner.state.lock();
        if state.cancelled {
            drop(state);
            callback();
            return;
        }
        state.on_cancel.push(Box::new(callback));
    }

    /// Ask the call to stop (the worker does, on `/cancel`); whether it was running
    /// and not asked before.
    pub fn cancel(&self) -> bool {
        let mut state = self.inner.state.lock();
        if state.cancelled || state.progress.finished {
            return false;
        }
        state.cancelled = true;
        let callbacks = std::mem::take(&mut state.on_cancel);
        drop(state);
        self.inner.changed.notify_all();
        for callback in callbacks {
            callback();
        }
        true
    }

    /// Mark the call ended (the worker does, however it ended); wakes watchers.
    pub fn finish(&self) {
        let mut state = self.inner.state.lock();
        state.progress.finished = true;
        state.on_cancel.clear();
        drop(state);
        self.inner.changed.notify_all();
    }

    fn cancelled_message(&self) -> String {
        if self.inner.id.is_empty() {
            String::from("the call was cancelled")
        } else {
            format!("call {} was cancelled", self.inner.id)
        }
    }
}

/// When a wait of `limit` from now ends; `None` when that is too far to tell
/// (`Duration::MAX`, or anything past what `Instant` holds): a wait without end.
fn deadline_after(limit: Duration) -> Option<Instant> {
    Instant::now().checked_add(limit)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::ErrorKind;

    #[test]
    fn reports_are_numbered_and_clamped() {
        let control = CallControl::new("c1");
        assert_eq!(control.progress().seq, 0);
        control.report_progress(0.5, "half");
        control.report_progress(7.0, "over");
        control.report_progress(f64::NAN, "unknown");
        let progress = control.progress();
        assert_eq!((progress.seq, progress.fraction), (3, -1.0));
        assert_eq!(progress.message, "unknown");
    }

    #[test]
    fn a_watcher_wakes_at_the_next_report_not_before() {
        let control = CallControl::new("c1");
        let reporter = control.clone();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            reporter.report_progress(0.25, "a quarter");
        });
        let progress = control.progress_after(0, Duration::from_secs(5));
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!((progress.seq, progress.message.as_str()), (1, "a quarter"));
        thread.join().unwrap();
        // Nothing new: the wait ends at its limit with the same state.
        let same = control.progress_after(1, Duration::from_millis(20));
        assert_eq!(same.seq, 1);
    }

    #[test]
    fn cancelling_wakes_waiters_runs_callbacks_once_and_fails_checks() {
        let control = CallControl::new("c7");
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fired);
        control.on_cancel(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert!(control.check_cancelled().is_ok());
        let waiter = control.clone();
        let thread = std::thread::spawn(move || waiter.wait_cancelled(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(control.cancel());
        assert!(!control.cancel(), "a second cancel is no news");
        assert!(thread.join().unwrap());
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        let err = control.check_cancelled().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(err.message().contains("c7"), "{err}");
        // Registered after the fact: runs at once.
        let late = Arc::clone(&fired);
        control.on_cancel(move || {
            late.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(fired.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_finished_call_cannot_be_cancelled_and_ends_waits() {
        let control = CallControl::new("c2");
        control.finish();
        assert!(!control.cancel());
        let progress = control.progress_after(0, Duration::from_secs(5));
        assert!(progress.finished);
    }

    /// `Duration::MAX` (or any limit past what an `Instant` holds) waits without end
    /// rather than panicking on the overflow.
    #[test]
    fn a_limit_too_long_to_add_waits_without_end() {
        for limit in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let control = CallControl::new("c3");
            let (reporter, canceller) = (control.clone(), control.clone());
            let reports = std::thread::spawn(move || reporter.progress_after(0, limit));
            let cancels = std::thread::spawn(move || canceller.wait_cancelled(limit));
            control.report_progress(0.5, "half");
            assert_eq!(reports.join().expect("no panic").seq, 1);
            control.cancel();
            assert!(cancels.join().expect("no panic"));
            // Already true: no wait at all.
            assert!(control.wait_cancelled(limit));
            control.finish();
            assert!(control.progress_after(1, limit).finished);
        }
    }
}
