use std::fmt;
use std::future::Future;
use std::pin::Pin;

use cjm_metadata::PluginMeta;

use crate::StatsSource;

/// A boxed future, so that schedulers can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an execution was not admitted: what was needed and what was free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub plugin: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "execution of {} not admitted: {}",
            self.plugin, self.reason
        )
    }
}

impl std::error::Error for Refusal {}

/// A policy deciding whether a plugin may execute now.
pub trait ResourceScheduler: Send + Sync + fmt::Debug {
    /// Admit or refuse one execution of `plugin`; may wait (asynchronously) for
    /// resources, depending on the policy.
    fn allocate<'a>(
        &'a self,
        plugin: &'a PluginMeta,
        stats: &'a dyn StatsSource,
    ) -> BoxFuture<'a, Result<(), Refusal>>;

    /// An admitted execution started.
    fn on_execution_start(&self, _plugin: &PluginMeta) {}

    /// An execution ended, successfully or not.
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
    ) -> BoxFuture<'a, Result<(), Refusal>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
