//! The host's side of one plugin worker: [`RemotePluginProxy`] has the worker placed
//! from a [`LaunchSpec`] (a local process by default; attached or placed by Ray, see
//! [`Placement`]), waits until it answers, forwards calls to it over HTTP/JSON, and
//! stops it (a local one with its whole process group) when done.
//!
//! The proxy knows nothing of manifests: the manager turns a manifest into a
//! [`LaunchSpec`].
#![warn(missing_docs)]

mod buffers;
mod endpoint;
mod error;
mod files;
mod launch;
mod lifecycle;
mod log;
mod placement;
mod process;
mod proxy;
mod spawner;
mod stream;
mod transport;
mod worker;

/// The client of Ray's Jobs API that [`RayPlacement`] places workers through (crate
/// `cjm-ray`; cargo feature `ray`).
#[cfg(feature = "ray")]
pub use cjm_ray as ray;
/// Pinned TLS (crate `cjm-tls`): the host's identity and the connector to a remote
/// worker, as the proxy uses them.
pub use cjm_tls::{
    certificate_fingerprint, read_handshake, ClientIdentity, HandshakeReadError, PinnedConnector,
    TlsConnectError, TlsError, TlsStream, DEFAULT_CONNECT_TIMEOUT,
};
pub use endpoint::{default_socket_dir, Endpoint};
pub use error::{PlacementError, ProxyError};
pub use launch::{LaunchSpec, ListenMode, WaitingFuture, WaitingHook};
pub use lifecycle::HookOutcome;
#[cfg(feature = "ray")]
pub use placement::RayPlacement;
pub use placement::{
    Attach, LocalSpawn, PlaceFuture, Placed, Placement, RayOptions, RelayShip, Shortfall,
};
pub use proxy::{Answered, CallMetrics, CallTarget, PythonRuntime, RemotePluginProxy};
pub use stream::{BlockingChunks, ChunkStream};
