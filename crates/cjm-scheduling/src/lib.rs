//! Admission of plugin executions against the machine's resources.
//!
//! A [`ResourceScheduler`] decides, before each execution, whether a plugin may run,
//! from its declared [`ResourceRequirements`](cjm_metadata::ResourceRequirements)
//! (turned into a [`Demand`]) and the [`SystemStats`] a [`StatsSource`] reports.
//!
//! # Policies
//!
//! - [`PermissiveScheduler`] admits everything without looking (the default).
//! - [`SafetyScheduler`] admits what fits now and refuses the rest at once; the
//!   [`Refusal`] names each resource that was short, what was needed and what was free.
//! - [`QueueScheduler`] waits up to a timeout for the needs to fit, then refuses.
//!
//! An execution that needs more than the machine has in all, or more than its
//! plugin's declared limit, is refused at once by the waiting policies
//! ([`never_admissible`]; the manager refuses it before any policy, the permissive
//! one included): no release could ever admit it.
//!
//! # The successor's rules
//!
//! cjm-substrate 0.0.74's scheduling rules, as pure functions the manager applies:
//! [`plan_eviction`] (idle GPU workers, largest first, until [`EVICTION_MARGIN`]
//! times the shortfall is freed, none measured under [`HOLLOW_BELOW_MB`]),
//! [`never_admissible`], and [`credit_held_gpu_memory`] (a worker's own GPU memory
//! counts as available to its own next admission).
//!
//! # Reservations
//!
//! Admission returns a [`Reservation`] that holds the plugin's declared needs until it
//! is dropped. Those needs are subtracted from the free figures the source reports
//! (a [`ReservationLedger`]), and the check and the reservation happen under one
//! lock, so concurrent admissions never oversubscribe: two executions that each need
//! 6 GB on 8 GB free cannot both run. This is conservative: memory an execution
//! really uses shows in the reported figures and is subtracted again.
//!
//! # Waiting and fairness
//!
//! The queue policy is strict FIFO: only the oldest waiting request is considered,
//! so a large request is never starved by small ones arriving after it (the small
//! ones wait behind it instead). Requests that declare no needs skip the queue. A
//! release wakes the head of the queue at once (event-driven, no poll tick); the
//! statistics are also re-read every poll interval, for memory freed outside the
//! scheduler.
//!
//! # Telemetry keys
//!
//! `memory_available_mb`, `memory_total_mb`, `cpu_percent`, `gpu_free_memory_mb` and
//! `gpu_total_memory_mb` (the GPU with the most free memory), and `gpus` (per device:
//! `index`, `name`, `free_memory_mb`, `total_memory_mb`, `used_memory_mb`,
//! `utilization_percent`). A figure that cannot be measured is absent.

#![warn(missing_docs)]

mod credit;
mod demand;
mod eviction;
mod feasibility;
mod gpu;
mod ledger;
mod monitor;
mod queue;
mod safety;
mod scheduler;
mod stats;

pub use credit::credit_held_gpu_memory;
pub use demand::{Demand, Refusal, Resource, Shortfall};
pub use eviction::{
    plan_eviction, EvictionCandidate, EvictionPlan, EVICTION_MARGIN, HOLLOW_BELOW_MB,
};
pub use feasibility::{never_admissible, Bound, Impossible};
pub use ledger::{Reservation, ReservationLedger};
pub use monitor::LocalMonitor;
pub use queue::QueueScheduler;
pub use safety::SafetyScheduler;
pub use scheduler::{BoxFuture, PermissiveScheduler, ResourceScheduler};
pub use stats::{GpuProcess, GpuStats, ManualStats, StatsError, StatsSource, SystemStats};
