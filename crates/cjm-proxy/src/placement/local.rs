//! The default placement: a child process of this host.

use super::{PlaceFuture, Placed, Placement};
use crate::launch;
use crate::transport::Transport;
use crate::worker::Worker;
use crate::LaunchSpec;

/// Spawns the worker as a child of this host, in its own process group, on a socket
/// only it and the host can use (see [`ListenMode`](crate::ListenMode)).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalSpawn;

impl Placement for LocalSpawn {
    fn describe(&self) -> String {
        String::from("local")
    }

    fn place<'a>(&'a self, spec: &'a LaunchSpec) -> PlaceFuture<'a> {
        Box::pin(async move {
            let spawned = launch::spawn(spec).await?;
            Ok(Placed {
                transport: Transport::new(&spawned.endpoint, spawned.authorization),
                worker: Worker::Local(spawned.process),
                endpoint: spawned.endpoint,
                socket_folder: spawned.socket_folder,
                log_start: spawned.log_start,
                location: String::from("local"),
            })
        })
    }
}
