//! What the host knows about a plugin before and after starting it: the [`Manifest`]
//! read from a JSON file, the [`PluginMeta`] kept for every discovered or loaded
//! plugin, and the [`ResourceRequirements`] the scheduler admits executions against.

#![warn(missing_docs)]

mod adapter;
mod error;
mod home;
mod manifest;
mod meta;
mod name;
mod observability;
mod placement;
mod resources;
mod secrets;
mod worker_env;
mod workspace;

pub use adapter::{
    match_protocol_against_surface, AdapterManifest, ParamMismatch, SurfaceMatch, ADAPTER_UNIT,
    NO_SURFACE_REASON,
};
/// Owner-only files and folders (`cjm_interface::private`, where the crates that keep
/// such files below this one reach it too).
pub use cjm_interface::private;
pub use error::{ManifestError, ManifestErrorKind};
pub use home::{CjmHome, HomeError};
pub use manifest::{Launch, Manifest};
pub use meta::PluginMeta;
pub use name::{validate_name, NameError};
pub use observability::{Observability, UnknownObservability};
pub use placement::{AttachSpec, RaySpec, WorkerPlacement};
pub use resources::ResourceRequirements;
pub use secrets::{Secret, SecretStore, SecretStoreError};
pub use worker_env::{
    expand as expand_worker_env, EnvVarSpec, PLACEHOLDERS as WORKER_ENV_PLACEHOLDERS,
};
pub use workspace::{Workspace, WorkspaceError, WORKSPACE_ENV, WORKSPACE_MARKER};
