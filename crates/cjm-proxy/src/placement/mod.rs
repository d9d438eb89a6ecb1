//! Where a worker runs: one trait, [`Placement`], with three implementations. The
//! proxy asks a placement for a worker and gets back a way to reach it and to follow
//! it; everything above the proxy (the manager, jobs, scheduling) sees only a
//! [`RemotePluginProxy`](crate::RemotePluginProxy), wherever its worker is.
//!
//! - [`LocalSpawn`]: a child process of this host on a private socket (the default).
//! - [`Attach`]: a worker someone else runs (a Kubernetes pod, a systemd unit), reached
//!   over TLS with both certificates pinned. Never stopped by the host: it is let go.
//! - [`RayPlacement`]: a worker started as a Ray job, shipped as a package, reached
//!   over pinned TLS at its node's address, kept alive by a lease and stopped by
//!   stopping its job.

mod attach;
mod local;
#[cfg(feature = "ray")]
mod ray;
mod ray_options;
pub(crate) mod remote;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use attach::Attach;
pub use local::LocalSpawn;
#[cfg(feature = "ray")]
pub use ray::RayPlacement;
pub use ray_options::{RayOptions, RelayShip};

use crate::endpoint::{Endpoint, PrivateFolder};
use crate::transport::Transport;
use crate::worker::Worker;
use crate::{LaunchSpec, ProxyError};

/// What [`Placement::place`] returns.
pub type PlaceFuture<'a> = Pin<Box<dyn Future<Output = Result<Placed, ProxyError>> + Send + 'a>>;

/// Starts (or finds) the worker for a [`LaunchSpec`]. Implemented by [`LocalSpawn`],
/// [`Attach`] and [`RayPlacement`]; the proxy waits for the placed worker's `/health`
/// itself, so `place` returns as soon as the worker can be addressed.
///
/// Sealed: only this crate implements it. The kinds of placement are a closed set
/// that the manager chooses from a manifest's `placement` (`cjm-manager`'s
/// `launch.rs`), and a [`Placed`] worker carries this crate's process, transport and
/// socket-folder handling, which it does not expose. Outside code uses a placement
/// through a [`LaunchSpec`] and [`describe`](Self::describe); a new kind is added in
/// this module, beside the others.
///
/// ```compile_fail,E0277
/// use cjm_proxy::{LaunchSpec, PlaceFuture, Placement};
///
/// #[derive(Debug)]
/// struct Elsewhere;
///
/// impl Placement for Elsewhere {
///     fn describe(&self) -> String {
///         String::from("elsewhere")
///     }
///     fn place<'a>(&'a self, _spec: &'a LaunchSpec) -> PlaceFuture<'a> {
///         unimplemented!()
///     }
/// }
/// ```
pub trait Placement: sealed::Sealed + Send + Sync + fmt::Debug {
    /// Where workers of this placement run, in words, for listings (`local`,
    /// `attach host:port`, `ray http://head:8265`).
    fn describe(&self) -> String;

    /// Start the worker `spec` describes, or reach it.
    fn place<'a>(&'a self, spec: &'a LaunchSpec) -> PlaceFuture<'a>;
}

/// A placed worker: how to reach it and how to follow it. Made only by this crate's
/// placements ([`Placement`] is sealed), so its parts stay private.
pub struct Placed {
    pub(crate) worker: Worker,
    pub(crate) endpoint: Endpoint,
    pub(crate) transport: Transport,
    /// Holds a Unix socket's folder until the proxy is done with the worker.
    pub(crate) socket_folder: Option<PrivateFolder>,
    /// Where this run's part of the local log begins.
    pub(crate) log_start: u64,
    /// Where the worker runs, in words (`local`, `ray job X on node Y`, ..).
    pub(crate) location: String,
}

/// Keeps [`Placement`] to this crate: the supertrait is public in a private module,
/// so no other crate can name it to implement it.
mod sealed {
    pub trait Sealed {}

    impl Sealed for super::LocalSpawn {}
    impl Sealed for super::Attach {}
    #[cfg(feature = "ray")]
    impl Sealed for super::RayPlacement {}
}

impl fmt::Debug for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placed")
            .field("endpoint", &self.endpoint)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// What a placement waits for that stopping a worker placed the same way would give
/// back: by node, how much of which resource is missing there. Given to a
/// [`WaitingHook`](crate::WaitingHook).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Shortfall {
    /// By node address (the host of a worker's [`Endpoint::Tls`] placed there), the
    /// amounts missing, by resource name (Ray's: `GPU`, `gpu_vram_mb`). Only nodes
    /// where nothing else is missing are named.
    pub nodes: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Shortfall {
    /// What is missing on each node.
    pub fn new(nodes: BTreeMap<String, BTreeMap<String, f64>>) -> Self {
        Shortfall { nodes }
    }

    /// Whether freeing `freed` (by resource name) on node `node` gives all that is
    /// missing there.
    pub fn covered_by(&self, node: &str, freed: &BTreeMap<String, f64>) -> bool {
        self.nodes.get(node).is_some_and(|missing| {
            missing.iter().all(|(name, amount)| {
                // Ray keeps 4 decimal places.
                freed.get(name).copied().unwrap_or(0.0) + 0.5e-4 >= *amount
            })
        })
    }
}
