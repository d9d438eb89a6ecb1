//! What the server sees of remote serving in a build without it (cargo feature
//! `remote` off): a [`Remote`] that cannot be made, so that the server's code is the
//! same in both builds and every remote branch is known dead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::listener::{Connection, Listener};
use crate::state::Worker;

/// No value of this type exists.
pub(crate) struct Remote {
    pub(crate) listen: SocketAddr,
    never: Infallible,
}

impl Remote {
    pub(crate) fn bind(&self) -> std::io::Result<Listener> {
        match self.never {}
    }

    pub(crate) fn announce(&self, _port: u16) -> std::io::Result<()> {
        match self.never {}
    }

    pub(crate) fn authenticate(
        &self,
        _connection: Connection,
        _worker: &Arc<Worker>,
        _slots: &Arc<Semaphore>,
    ) {
        match self.never {}
    }

    pub(crate) async fn lease_expired(&self) {
        match self.never {}
    }

    pub(crate) fn lease_limit(&self) -> Option<Duration> {
        match self.never {}
    }
}
