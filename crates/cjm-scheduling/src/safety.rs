use std::sync::Arc;

use cjm_metadata::PluginMeta;

use crate::{
    never_admissible, BoxFuture, Demand, Refusal, Reservation, ReservationLedger,
    ResourceScheduler, StatsSource,
};

/// Admits an execution only if its declared needs fit in what is free now (reported
/// free less what running executions reserved); refuses at once otherwise, naming
/// what was needed and what was free.
#[derive(Debug, Clone, Default)]
pub struct SafetyScheduler {
    ledger: Arc<ReservationLedger>,
}

impl SafetyScheduler {
    /// A policy with a ledger of its own: executions admitted by other schedulers
    /// are not counted.
    pub fn new() -> Self {
        SafetyScheduler::default()
    }

    /// What admitted executions hold now.
    pub fn ledger(&self) -> &Arc<ReservationLedger> {
        &self.ledger
    }
}

impl ResourceScheduler for SafetyScheduler {
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
            let stats = stats
                .system_stats()
                .await
                .map_err(|error| Refusal::stats_unavailable(&plugin.name, error))?;
            let never = never_admissible(&plugin.resources, &stats);
            if !never.is_empty() {
                return Err(Refusal::never_admissible(&plugin.name, never));
            }
            self.ledger.try_reserve(demand, &stats).map_err(|short| {
                let refusal = Refusal::new(&plugin.name, short);
                tracing::info!("{refusal}");
                refusal
            })
        })
    }
}
