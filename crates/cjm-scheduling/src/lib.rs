//! Admission of plugin executions against the machine's resources.
//!
//! A [`ResourceScheduler`] decides, before each execution, whether a plugin may run,
//! from its declared [`ResourceRequirements`](cjm_metadata::ResourceRequirements) and
//! the [`SystemStats`] a [`StatsSource`] reports.

mod monitor;
mod scheduler;
mod stats;

pub use monitor::LocalMonitor;
pub use scheduler::{BoxFuture, PermissiveScheduler, Refusal, ResourceScheduler};
pub use stats::{StatsError, StatsSource, SystemStats};
