//! The calls in flight on this worker, by id: what `/cancel` stops and `/progress`
//! reports on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cjm_interface::CallControl;
use parking_lot::Mutex;

#[derive(Debug, Default)]
pub(crate) struct Calls {
    in_flight: Mutex<HashMap<String, CallControl>>,
    /// The call that started last, running or not: what `/progress` without an id
    /// reports on, as the original's plugin-wide progress does.
    latest: Mutex<Option<CallControl>>,
    /// Calls that ended lately, so that a watcher asking just after the end still
    /// gets the last report and learns that the call has ended.
    ended: Mutex<VecDeque<CallControl>>,
    /// For calls sent without an id.
    next_anonymous: AtomicU64,
}

/// Ended calls remembered.
const ENDED_KEPT: usize = 64;

/// A call in flight. Dropping it (however the call ended) marks the call finished
/// and forgets it.
#[derive(Debug)]
pub(crate) struct Running {
    calls: Arc<Calls>,
    control: CallControl,
}

impl Running {
    pub(crate) fn control(&self) -> CallControl {
        self.control.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.control.finish();
        self.calls.in_flight.lock().remove(self.control.id());
        let mut ended = self.calls.ended.lock();
        if ended.len() == ENDED_KEPT {
            ended.pop_front();
        }
        ended.push_back(self.control.clone());
    }
}

/// What `/cancel` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// These calls were asked to stop.
    Calls(usize),
    /// No call with that id is in flight (it may have just ended).
    Unknown(String),
}

impl Calls {
    /// Register a call; `id` is the host's, or one is made up.
    pub(crate) fn start(self: &Arc<Self>, id: Option<String>) -> Running {
        let id = id.filter(|id| !id.is_empty()).unwrap_or_else(|| {
            let n = self.next_anonymous.fetch_add(1, Ordering::Relaxed);
            format!("anonymous-{n}")
        });
        let control = CallControl::new(id.clone());
        self.in_flight.lock().insert(id, control.clone());
        *self.latest.lock() = Some(control.clone());
        Running {
            calls: Arc::clone(self),
            control,
        }
    }

    /// Ask call `id` to stop, or every call in flight when `id` is `None`.
    pub(crate) fn cancel(&self, id: Option<&str>) -> Cancelled {
        let in_flight = self.in_flight.lock();
        let targets: Vec<CallControl> = match id {
            Some(id) => match in_flight.get(id) {
                Some(control) => vec![control.clone()],
                None => return Cancelled::Unknown(id.to_owned()),
            },
            None => in_flight.values().cloned().collect(),
        };
        // Callbacks run outside the registry's lock.
        drop(in_flight);
        let count = targets.len();
        for control in targets {
            control.cancel();
        }
        Cancelled::Calls(count)
    }

    /// The call `id` if it is in flight or ended lately, else (no id) the latest
    /// call.
    pub(crate) fn find(&self, id: Option<&str>) -> Option<CallControl> {
        let Some(id) = id else {
            return self.latest.lock().clone();
        };
        if let Some(control) = self.in_flight.lock().get(id) {
            return Some(control.clone());
        }
        self.ended
            .lock()
            .iter()
            .rev()
            .find(|control| control.id() == id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_cancelled_one_by_one_or_all_together() {
        let calls = Arc::new(Calls::default());
        let first = calls.start(Some(String::from("a")));
        let second = calls.start(None);
        assert!(second.control().id().starts_with("anonymous-"));
        assert_eq!(calls.cancel(Some("a")), Cancelled::Calls(1));
        assert!(first.control().is_cancelled());
        assert!(!second.control().is_cancelled());
        assert_eq!(
            calls.cancel(Some("zz")),
            Cancelled::Unknown(String::from("zz"))
        );
        assert_eq!(calls.cancel(None), Cancelled::Calls(2));
        assert!(second.control().is_cancelled());
        drop(first);
        // Ended: still found for a while, as ended.
        assert!(calls
            .find(Some("a"))
            .is_some_and(|control| control.progress().finished));
        assert_eq!(
            calls.cancel(Some("a")),
            Cancelled::Unknown(String::from("a"))
        );
        assert!(calls.find(Some("never")).is_none());
        // The latest call is still reported on after it ended.
        drop(second);
        assert!(calls
            .find(None)
            .is_some_and(|control| control.progress().finished));
    }
}
