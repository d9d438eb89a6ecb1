//! The host side of cjm-plugin-system: [`PluginManager`] discovers plugins through
//! their manifests, starts each in its own worker process, admits executions through a
//! [`ResourceScheduler`], forwards calls and stops
//! every worker it started.
//!
//! The API is async (tokio); [`BlockingPluginManager`] offers the same for code
//! without a runtime.
#![warn(missing_docs)]

mod blocking;
mod discovery;
mod error;
pub mod jobs;
mod launch;
mod loaded;
mod manager;
mod options;
mod policy;
mod sqlite_file;
mod store;
mod stream;

pub use blocking::{BlockingPluginManager, BlockingStream};
pub use discovery::{DiscoveredAdapter, DiscoveredPlugin, Discovery, ManifestProblem, Shadowed};
pub use error::ManagerError;
pub use launch::{host_tls_fingerprint, PlacementSetupError, WorkerEnvError};
pub use manager::{
    ConfigDrift, PluginChange, PluginConfig, PluginEvent, PluginManager, TaskServer, WorkerInfo,
};
pub use options::ManagerOptions;
pub use policy::{FaultPolicy, OnTimeout, PluginState, PluginStatus, RestartPolicy, RetryPolicy};
pub use store::{Aggregate, KeptConfig, ResourceProfile, StoreError};
pub use stream::PluginStream;

pub use cjm_interface::wire::{CallOutput, TypedResult};
pub use cjm_interface::{Arg, CallArgs, ConfigMap, ErrorCategory, FileBacked};
pub use cjm_metadata::{
    AdapterManifest, CjmHome, Manifest, Observability, PluginMeta, SurfaceMatch,
};
pub use cjm_proxy::{Endpoint, ProxyError};
pub use cjm_scheduling::{
    GpuStats, LocalMonitor, ManualStats, PermissiveScheduler, QueueScheduler, Refusal,
    ResourceScheduler, SafetyScheduler, StatsSource, SystemStats,
};
pub use cjm_validation::{ConfigValidator, InvalidConfig, Violation};
