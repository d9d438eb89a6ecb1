use std::sync::Arc;
use std::time::Duration;

use cjm_metadata::PluginMeta;
use tokio::time::Instant;

use crate::{
    never_admissible, BoxFuture, Demand, Refusal, Reservation, ReservationLedger,
    ResourceScheduler, Shortfall, StatsError, StatsSource,
};

/// Waits up to a timeout for an execution's declared needs to fit, then refuses.
///
/// Fairness: strict FIFO. Requests wait in arrival order and only the oldest is
/// considered; a later request is not admitted before it even when it would fit, so a
/// large request cannot be starved by a stream of small ones. The price is that small
/// requests wait behind a large one. Requests that declare no needs hold nothing and
/// are admitted at once, outside the queue.
///
/// Wake-up: a released reservation wakes the head of the queue at once. Memory freed
/// outside the scheduler (another program exits) is noticed by re-reading the
/// statistics every `poll_interval`.
#[derive(Debug, Clone)]
pub struct QueueScheduler {
    ledger: Arc<ReservationLedger>,
    timeout: Duration,
    poll_interval: Duration,
}

impl Default for QueueScheduler {
    fn default() -> Self {
        QueueScheduler::new(Self::DEFAULT_TIMEOUT)
    }
}

/// What the last look at the machine found, for the refusal message.
enum LastCheck {
    Short(Vec<Shortfall>),
    Unavailable(StatsError),
}

impl QueueScheduler {
    /// How long an execution waits before it is refused, unless told otherwise:
    /// five minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    /// How often the head of the queue re-reads the statistics, unless told
    /// otherwise: every second.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// A queue whose executions wait up to `timeout` for their needs to fit, with a
    /// ledger of its own.
    pub fn new(timeout: Duration) -> Self {
        QueueScheduler {
            ledger: ReservationLedger::new(),
            timeout,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
        }
    }

    /// How often the head of the queue re-reads the statistics for changes made
    /// outside the scheduler. Releases by other executions do not wait for it. At
    /// least a millisecond: a shorter interval is raised to that.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval.max(Duration::from_millis(1));
        self
    }

    /// How long an execution waits before it is refused.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often the head of the queue re-reads the statistics.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// What admitted executions hold now, and how many requests wait.
    pub fn ledger(&self) -> &Arc<ReservationLedger> {
        &self.ledger
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.ledger.waiting()
    }

    async fn wait_for(
        &self,
        plugin: &PluginMeta,
        stats: &dyn StatsSource,
        demand: Demand,
    ) -> Result<Reservation, Refusal> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let ticket = self.ledger.enqueue();
        let mut last = None;
        loop {
            let changed = self.ledger.changed();
            tokio::pin!(changed);
            // Registered before looking, so a release during the look still wakes us.
            changed.as_mut().enable();
            let at_head = ticket.ahead() == 0;
            if at_head {
                match stats.system_stats().await {
                    Ok(snapshot) => {
                        let never = never_admissible(&plugin.resources, &snapshot);
                        if !never.is_empty() {
                            // No release can ever admit it: waiting would be a hang.
                            let refusal = Refusal::never_admissible(&plugin.name, never);
                            tracing::info!("{refusal}");
                            return Err(refusal);
                        }
                        match ticket.try_reserve_at_head(demand, &snapshot) {
                            Some(Ok(reservation)) => return Ok(reservation),
                            Some(Err(short)) => last = Some(LastCheck::Short(short)),
                            None => {}
                        }
                    }
                    Err(error) => last = Some(LastCheck::Unavailable(error)),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wake_at = if at_head {
                deadline.min(now + self.poll_interval)
            } else {
                deadline
            };
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
        let ahead = ticket.ahead();
        drop(ticket);
        let mut refusal = match last {
            Some(LastCheck::Short(short)) => Refusal::new(&plugin.name, short),
            Some(LastCheck::Unavailable(error)) => Refusal::stats_unavailable(&plugin.name, error),
            None => self.describe(plugin, stats, demand).await,
        };
        refusal.queued_ahead = ahead;
        refusal.waited = Some(started.elapsed());
        tracing::info!("{refusal}");
        Err(refusal)
    }

    /// A refusal naming the figures as they are now, for a request that never reached
    /// the head of the queue.
    async fn describe(
        &self,
        plugin: &PluginMeta,
        stats: &dyn StatsSource,
        demand: Demand,
    ) -> Refusal {
        match stats.system_stats().await {
            Ok(snapshot) => Refusal::new(
                &plugin.name,
                demand.shortfalls(&snapshot, self.ledger.reserved()),
            ),
            Err(error) => Refusal::stats_unavailable(&plugin.name, error),
        }
    }
}

impl ResourceScheduler for QueueScheduler {
    fn allocate<'a>(
        &'a self,
        plugin: &'a PluginMeta,
        stats: &'a dyn StatsSource,
    ) -> BoxFuture<'a, Result<Reservation, Refusal>> {
        Box::pin(async move {
            let demand = Demand::of(&plugin.resources);
            if demand.is_nothing() {
                return Ok(Reservation::unreserved());
            }
            self.wait_for(plugin, stats, demand).await
        })
    }

    fn try_allocate<'a>(
        &'a self,
        plugin: &'a PluginMeta,
        stats: &'a dyn StatsSource,
    ) -> BoxFuture<'a, Result<Reservation, Refusal>> {
        Box::pin(async move {
            let demand = Demand::of(&plugin.resources);
            if demand.is_nothing() {
                return Ok(Reservation::unreserved());
            }
            let waiting = self.ledger.waiting();
            if waiting > 0 {
                // Overtaking the queue would break FIFO.
                let mut refusal = Refusal::new(&plugin.name, Vec::new());
                refusal.queued_ahead = waiting;
                return Err(refusal);
            }
            let snapshot = stats
                .system_stats()
                .await
                .map_err(|error| Refusal::stats_unavailable(&plugin.name, error))?;
            self.ledger
                .try_reserve(demand, &snapshot)
                .map_err(|short| Refusal::new(&plugin.name, short))
        })
    }
}
