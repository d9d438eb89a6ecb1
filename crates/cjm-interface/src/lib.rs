//! The plugin contract of cjm-plugin-system.
//!
//! A plugin is a type implementing [`Plugin`]; a worker process (crate `cjm-worker`)
//! serves one plugin instance over the HTTP/JSON protocol whose message types live in
//! [`wire`]. Host-side callers describe a call with [`CallArgs`], whose arguments may
//! be [`FileBacked`]: those travel as a temporary file and only its path crosses the
//! process boundary.

#![warn(missing_docs)]

mod args;
pub mod body;
mod chain;
mod control;
pub mod envelope;
mod error;
mod file_backed;
pub mod json;
pub mod log_line;
mod plugin;
pub mod private;
mod random;
pub mod remote;
pub mod substrate;
pub mod wire;

pub use args::{Arg, Call, CallArgs};
pub use chain::ErrorChain;
pub use control::{CallControl, Progress};
pub use error::{ErrorCategory, ErrorKind, PluginError};
pub use file_backed::FileBacked;
pub use plugin::{ChunkIter, Plugin};
pub use random::random_hex;

/// A plugin's configuration: a JSON object, as it travels on the wire.
pub type ConfigMap = serde_json::Map<String, serde_json::Value>;
