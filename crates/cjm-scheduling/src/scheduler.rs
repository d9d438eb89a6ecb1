use std::fmt;
use std::future::Future;
use std::pin::Pin;

use cjm_metadata::PluginMeta;

use crate::{Refusal, Reservation, StatsSource};

/// A boxed future, so that schedulers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A policy deciding whether a plugin may execute now.
///
/// Admission and reservation are one step: the [`Reservation`] an admission returns
/// holds the plugin's declared needs until it is dropped, so that concurrent
/// admissions cannot count the same free memory twice.
pub trait ResourceScheduler: Send + Sync + fmt::Debug {
    /// Admit or refuse one execution of `plugin`; may wait (asynchronously) for
    /// resources, depending on the policy. Hold the reservation for the whole
    /// execution.
    fn allocate<'a>(
        &'a self,
        plugin: &'a PluginMeta,
        stats: &'a dyn StatsSource,
    ) -> BoxFuture<'a, Result<Reservation, Refusal>>;

    /// Admit now or refuse, never waiting. The manager uses it to find out whether
    /// evicting idle plugins would help before it lets a waiting policy wait.
    fn try_allocate<'a>(
        &'a self,
        plugin: &'a PluginMeta,
        stats: &'a dyn StatsSource,
    ) -> BoxFuture<'a, Result<Reservation, Refusal>> {
        self.allocate(plugin, stats)
    }

    /// An admitted execution started.
    fn on_execution_start(&self, _plugin: &PluginMeta) {}

    /// An execution ended, successfully or not (its reservation is released right
    /// after).
    fn on_execution_finish(&self, _plugin: &PluginMeta) {}
}

/// Admits everything without looking at the machine: the default, and dev mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct PermissiveScheduler;

impl ResourceScheduler for PermissiveScheduler {
    fn allocate<'a>(
        &'a self,
        _plugin: &'a PluginMeta,
        _stats: &'a dyn StatsSource,
    ) -> BoxFuture<'a, Result<Reservation, Refusal>> {
        Box::pin(std::future::ready(Ok(Reservation::unreserved())))
    }
}
