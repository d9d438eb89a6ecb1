//! The host's side of one plugin worker: [`RemotePluginProxy`] starts the worker
//! process from a [`LaunchSpec`], waits until it answers, forwards calls to it over
//! HTTP/JSON on loopback, and stops it (with its whole process group) when done.
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
mod process;
mod proxy;
pub mod ray;
mod secret;
mod spawner;
mod stream;
mod tls;
mod transport;

pub use endpoint::{default_socket_dir, Endpoint};
pub use error::ProxyError;
pub use launch::{LaunchSpec, ListenMode};
pub use lifecycle::HookOutcome;
pub use proxy::RemotePluginProxy;
pub use stream::{BlockingChunks, ChunkStream};
pub use tls::{
    certificate_fingerprint, read_handshake, ClientIdentity, HandshakeReadError, PinnedConnector,
    TlsConnectError, TlsError, TlsStream, DEFAULT_CONNECT_TIMEOUT,
};
