//! The calls in flight on this worker, by id: what `/cancel` stops and `/progress`
//! reports on.
//!
//! A host may send `/cancel` for a call whose `/execute` has not reached the worker
//! yet (it sends both at once, on separate connections). Such an id is remembered,
//! for a while and in bounded number, so that the call is refused as cancelled the
//! moment it arrives instead of running to the end while its host waits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cjm_interface::envelope::CallEnvelope;
use cjm_interface::CallControl;
use parking_lot::Mutex;

/// Ended calls remembered.
const ENDED_KEPT: usize = 64;
/// Ids cancelled before their call arrived, remembered at most: past it, the oldest
/// is forgotten. Bounds what a host (or a confused one) can make the worker hold.
pub(crate) const EARLY_CANCELS_KEPT: usize = 1024;
/// How long an id cancelled before its call arrived is remembered: far longer than a
/// request takes to cross a connection, short enough that ids are not held forever.
pub(crate) const EARLY_CANCEL_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Calls {
    /// One lock for all of it: a cancel and the start of its call must see each
    /// other's effect, or a cancel could be remembered just after its call started
    /// (and lost) or the call start just after the cancel looked (and run).
    registry: Mutex<Registry>,
    /// For calls sent without an id.
    next_anonymous: AtomicU64,
}

#[derive(Debug)]
struct Registry {
    in_flight: HashMap<String, CallControl>,
    /// The call that started last, running or not: what `/progress` without an id
    /// reports on, as the original's plugin-wide progress does.
    latest: Option<CallControl>,
    /// Calls that ended lately, so that a watcher asking just after the end still
    /// gets the last report and learns that the call has ended.
    ended: VecDeque<CallControl>,
    /// Ids cancelled before their call arrived, oldest first.
    early_cancels: EarlyCancels,
}

impl Default for Calls {
    fn default() -> Self {
        Calls::with_early_cancels(EARLY_CANCELS_KEPT, EARLY_CANCEL_TTL)
    }
}

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
        let mut registry = self.calls.registry.lock();
        // The entry is this call's own: `start` refuses an id already in flight.
        registry.in_flight.remove(self.control.id());
        if registry.ended.len() == ENDED_KEPT {
            registry.ended.pop_front();
        }
        registry.ended.push_back(self.control.clone());
    }
}

/// What `/cancel` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// These calls were asked to stop.
    Calls(usize),
    /// The call ended lately: nothing left to stop.
    Ended(String),
    /// No call with that id has been seen: it is remembered, and refused as
    /// cancelled if it arrives within [`EARLY_CANCEL_TTL`].
    Remembered(String),
}

/// Why a call was not started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its id was cancelled before it arrived.
    Cancelled(String),
    /// A call with that id is in flight. Refused rather than registered beside it:
    /// an id names one call for `/cancel` and `/progress`, and two calls under one
    /// id would leave one of them out of reach.
    InUse(String),
}

impl Calls {
    fn with_early_cancels(capacity: usize, ttl: Duration) -> Self {
        Calls {
            registry: Mutex::new(Registry {
                in_flight: HashMap::new(),
                latest: None,
                ended: VecDeque::with_capacity(ENDED_KEPT),
                early_cancels: EarlyCancels {
                    ids: VecDeque::new(),
                    capacity,
                    ttl,
                },
            }),
            next_anonymous: AtomicU64::new(0),
        }
    }

    /// Register a call; `id` is the host's, or one is made up.
    pub(crate) fn start(self: &Arc<Self>, id: Option<String>) -> Result<Running, Refused> {
        self.start_with(id, None)
    }

    /// [`start`](Self::start) a call that came with the host's envelope: its control
    /// carries it (the job id, for the plugin and its log records).
    pub(crate) fn start_with(
        self: &Arc<Self>,
        id: Option<String>,
        envelope: Option<CallEnvelope>,
    ) -> Result<Running, Refused> {
        self.start_at(id, envelope, Instant::now())
    }

    fn start_at(
        self: &Arc<Self>,
        id: Option<String>,
        envelope: Option<CallEnvelope>,
        now: Instant,
    ) -> Result<Running, Refused> {
        let mut registry = self.registry.lock();
        let id = match id.filter(|id| !id.is_empty()) {
            Some(id) if registry.in_flight.contains_key(&id) => return Err(Refused::InUse(id)),
            Some(id) if registry.early_cancels.take(&id, now) => {
                return Err(Refused::Cancelled(id))
            }
            Some(id) => id,
            // A host may name its own calls `anonymous-N` too.
            None => loop {
                let n = self.next_anonymous.fetch_add(1, Ordering::Relaxed);
                let id = format!("anonymous-{n}");
                if !registry.in_flight.contains_key(&id) {
                    break id;
                }
            },
        };
        let control = CallControl::with_envelope(id.clone(), envelope);
        registry.in_flight.insert(id, control.clone());
        registry.latest = Some(control.clone());
        Ok(Running {
            calls: Arc::clone(self),
            control,
        })
    }

    /// Ask call `id` to stop, or every call in flight when `id` is `None`.
    pub(crate) fn cancel(&self, id: Option<&str>) -> Cancelled {
        self.cancel_at(id, Instant::now())
    }

    fn cancel_at(&self, id: Option<&str>, now: Instant) -> Cancelled {
        let mut registry = self.registry.lock();
        let targets: Vec<CallControl> = match id {
            Some(id) => match registry.in_flight.get(id) {
                Some(control) => vec![control.clone()],
                None if registry.ended.iter().any(|control| control.id() == id) => {
                    return Cancelled::Ended(id.to_owned())
                }
                None => {
                    registry.early_cancels.remember(id, now);
                    return Cancelled::Remembered(id.to_owned());
                }
            },
            None => registry.in_flight.values().cloned().collect(),
        };
        // Callbacks run outside the registry's lock.
        drop(registry);
        let count = targets.len();
        for control in targets {
            control.cancel();
        }
        Cancelled::Calls(count)
    }

    /// The call `id` if it is in flight or ended lately, else (no id) the latest
    /// call.
    pub(crate) fn find(&self, id: Option<&str>) -> Option<CallControl> {
        let registry = self.registry.lock();
        let Some(id) = id else {
            return registry.latest.clone();
        };
        if let Some(control) = registry.in_flight.get(id) {
            return Some(control.clone());
        }
        registry
            .ended
            .iter()
            .rev()
            .find(|control| control.id() == id)
            .cloned()
    }
}

/// Ids cancelled before their call arrived, in the order they were cancelled. A
/// short list: a lookup walks it, which costs nothing while it is empty (always, but
/// for a cancel that overtook its call) and little at its bound.
#[derive(Debug)]
struct EarlyCancels {
    ids: VecDeque<(Instant, String)>,
    capacity: usize,
    ttl: Duration,
}

impl EarlyCancels {
    fn remember(&mut self, id: &str, now: Instant) {
        self.forget_expired(now);
        // Cancelled again: remembered from now.
        if let Some(at) = self.ids.iter().position(|(_, known)| known == id) {
            self.ids.remove(at);
        }
        if self.ids.len() >= self.capacity {
            if let Some((_, dropped)) = self.ids.pop_front() {
                tracing::debug!("forgetting the early cancel of call {dropped}: too many");
            }
        }
        if self.capacity > 0 {
            self.ids.push_back((now, id.to_owned()));
        }
    }

    /// Whether `id` was cancelled before it arrived; forgets it either way.
    fn take(&mut self, id: &str, now: Instant) -> bool {
        self.forget_expired(now);
        match self.ids.iter().position(|(_, known)| known == id) {
            Some(at) => {
                self.ids.remove(at);
                true
            }
            None => false,
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        while self
            .ids
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.ttl)
        {
            self.ids.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_cancelled_one_by_one_or_all_together() {
        let calls = Arc::new(Calls::default());
        let first = calls.start(Some(String::from("a"))).unwrap();
        let second = calls.start(None).unwrap();
        assert!(second.control().id().starts_with("anonymous-"));
        assert_eq!(calls.cancel(Some("a")), Cancelled::Calls(1));
        assert!(first.control().is_cancelled());
        assert!(!second.control().is_cancelled());
        assert_eq!(
            calls.cancel(Some("zz")),
            Cancelled::Remembered(String::from("zz"))
        );
        assert_eq!(calls.cancel(None), Cancelled::Calls(2));
        assert!(second.control().is_cancelled());
        drop(first);
        // Ended: still found for a while, as ended, and not remembered as cancelled.
        assert!(calls
            .find(Some("a"))
            .is_some_and(|control| control.progress().finished));
        assert_eq!(calls.cancel(Some("a")), Cancelled::Ended(String::from("a")));
        assert!(calls.find(Some("never")).is_none());
        // The latest call is still reported on after it ended.
        drop(second);
        assert!(calls
            .find(None)
            .is_some_and(|control| control.progress().finished));
    }

    #[test]
    fn a_call_cancelled_before_it_arrives_is_refused_once() {
        let calls = Arc::new(Calls::default());
        assert_eq!(
            calls.cancel(Some("early")),
            Cancelled::Remembered(String::from("early"))
        );
        assert_eq!(
            calls.start(Some(String::from("early"))).unwrap_err(),
            Refused::Cancelled(String::from("early"))
        );
        // Refused once: the id is free again (a host never sends it twice, but an
        // id must not stay poisoned).
        let again = calls.start(Some(String::from("early"))).unwrap();
        assert!(!again.control().is_cancelled());
    }

    #[test]
    fn early_cancels_are_forgotten_after_a_while_and_past_the_bound() {
        let calls = Arc::new(Calls::with_early_cancels(3, Duration::from_secs(60)));
        let start = Instant::now();
        for (n, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            calls.cancel_at(Some(id), start + Duration::from_secs(n as u64));
        }
        let later = start + Duration::from_secs(10);
        // "a", the oldest, made way for "d".
        assert!(calls.start_at(Some(String::from("a")), None, later).is_ok());
        for id in ["b", "c", "d"] {
            assert_eq!(
                calls
                    .start_at(Some(id.to_owned()), None, later)
                    .unwrap_err(),
                Refused::Cancelled(id.to_owned())
            );
        }
        // Past its time, an early cancel is gone.
        calls.cancel_at(Some("e"), later);
        let expired = later + Duration::from_secs(60);
        assert!(calls
            .start_at(Some(String::from("e")), None, expired)
            .is_ok());
    }

    #[test]
    fn an_id_in_flight_is_refused_and_the_first_call_keeps_it() {
        let calls = Arc::new(Calls::default());
        let first = calls.start(Some(String::from("x"))).unwrap();
        assert_eq!(
            calls.start(Some(String::from("x"))).unwrap_err(),
            Refused::InUse(String::from("x"))
        );
        // The refused attempt took nothing from the first: it is still reachable.
        assert_eq!(calls.cancel(Some("x")), Cancelled::Calls(1));
        assert!(first.control().is_cancelled());
        drop(first);
        // Ended, the id may be used again.
        assert!(calls.start(Some(String::from("x"))).is_ok());
    }
}
