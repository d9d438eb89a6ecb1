//! Reservations: what admitted executions hold, and the queue of those waiting.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::{Demand, Shortfall, SystemStats};

/// The needs of admitted, unfinished executions, subtracted from the free figures a
/// stats source reports, so that two admissions can never both count the same free
/// memory. A check and the reservation it leads to happen under one lock.
#[derive(Default)]
pub struct ReservationLedger {
    state: Mutex<LedgerState>,
    /// Woken on every release and whenever the head of the queue changes.
    changed: Notify,
}

#[derive(Debug, Default)]
struct LedgerState {
    reserved: Demand,
    holders: usize,
    /// Tickets of waiting requests, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

impl fmt::Debug for ReservationLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("ReservationLedger")
            .field("reserved", &state.reserved)
            .field("holders", &state.holders)
            .field("waiting", &state.queue.len())
            .finish()
    }
}

impl ReservationLedger {
    /// An empty ledger, shared: every [`Reservation`] holds on to it.
    pub fn new() -> Arc<Self> {
        Arc::new(ReservationLedger::default())
    }

    /// The sum of the needs of the reservations held now.
    pub fn reserved(&self) -> Demand {
        self.lock().reserved
    }

    /// Reservations held now.
    pub fn holders(&self) -> usize {
        self.lock().holders
    }

    /// Requests waiting in the queue now.
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Reserve `demand` if it fits in `stats` less what is reserved already; else what
    /// is short.
    pub fn try_reserve(
        self: &Arc<Self>,
        demand: Demand,
        stats: &SystemStats,
    ) -> Result<Reservation, Vec<Shortfall>> {
        let mut state = self.lock();
        self.reserve_locked(&mut state, demand, stats)
    }

    fn reserve_locked(
        self: &Arc<Self>,
        state: &mut LedgerState,
        demand: Demand,
        stats: &SystemStats,
    ) -> Result<Reservation, Vec<Shortfall>> {
        let short = demand.shortfalls(stats, state.reserved);
        if !short.is_empty() {
            return Err(short);
        }
        state.reserved.add(demand);
        state.holders += 1;
        Ok(Reservation {
            ledger: Some(Arc::clone(self)),
            demand,
        })
    }

    /// Join the end of the queue.
    pub(crate) fn enqueue(self: &Arc<Self>) -> QueueTicket {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        QueueTicket {
            ledger: Arc::clone(self),
            ticket,
        }
    }

    /// A future that completes at the next release or queue change. Created before
    /// the state is checked, so that a change in between is not missed.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn release(&self, demand: Demand) {
        {
            let mut state = self.lock();
            state.reserved.subtract(demand);
            state.holders = state.holders.saturating_sub(1);
        }
        self.changed.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock()
    }
}

/// A place in the queue. Leaving it (admitted, refused, or the caller gave up and
/// dropped the future) lets the next request be served.
#[derive(Debug)]
pub(crate) struct QueueTicket {
    ledger: Arc<ReservationLedger>,
    ticket: u64,
}

impl QueueTicket {
    /// Requests ahead of this one.
    pub(crate) fn ahead(&self) -> usize {
        let state = self.ledger.lock();
        state
            .queue
            .iter()
            .position(|&ticket| ticket == self.ticket)
            .unwrap_or(0)
    }

    /// Reserve only if this ticket is at the head of the queue; leaving the queue on
    /// success.
    pub(crate) fn try_reserve_at_head(
        &self,
        demand: Demand,
        stats: &SystemStats,
    ) -> Option<Result<Reservation, Vec<Shortfall>>> {
        let mut state = self.ledger.lock();
        if state.queue.front() != Some(&self.ticket) {
            return None;
        }
        Some(self.ledger.reserve_locked(&mut state, demand, stats))
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        let was_head = {
            let mut state = self.ledger.lock();
            let position = state.queue.iter().position(|&t| t == self.ticket);
            if let Some(position) = position {
                state.queue.remove(position);
            }
            position == Some(0)
        };
        if was_head {
            self.ledger.changed.notify_waiters();
        }
    }
}

/// What an admitted execution holds. Dropping it, however the execution ended,
/// returns its share to the ledger and wakes waiting requests at once.
#[must_use = "dropping a reservation releases it"]
pub struct Reservation {
    ledger: Option<Arc<ReservationLedger>>,
    demand: Demand,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("demand", &self.demand)
            .field("held", &self.ledger.is_some())
            .finish()
    }
}

impl Reservation {
    /// An admission that holds nothing (the permissive policy, or no declared needs).
    pub fn unreserved() -> Self {
        Reservation {
            ledger: None,
            demand: Demand::default(),
        }
    }

    /// What this reservation holds.
    pub fn demand(&self) -> Demand {
        self.demand
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ledger) = self.ledger.take() {
            ledger.release(self.demand);
        }
    }
}
