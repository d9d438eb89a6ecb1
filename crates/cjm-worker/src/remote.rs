//! A worker reachable from other machines (`--listen ADDR:PORT`): TLS only, with the
//! host's client certificate pinned; a handshake line on stdout once listening; and a
//! lease in place of the parent-death watch, which cannot follow a host elsewhere.
//!
//! Who may call: exactly the holder of the client certificate whose fingerprint the
//! host gave in [`wire::CLIENT_CERT_SHA256_ENV`]; anyone else (plain HTTP, no
//! certificate, another certificate) is refused during the TLS handshake, before any
//! request is read. The bearer secret of local workers ([`wire::WORKER_TOKEN_ENV`]) is
//! not needed on top, and our host does not send one to a remote worker: a placed
//! worker's environment is not private (anyone who can read a Ray job can read its
//! `env_vars`), while a fingerprint may be public. A secret that is given anyway (an
//! operator's choice for an attached worker) is required as well.
//!
//! Before authentication a connection costs little and cannot crowd the host out:
//! its TLS handshake runs as a task, at most [`MAX_PENDING_HANDSHAKES`] at once, each
//! for at most [`TLS_HANDSHAKE_LIMIT`](cjm_tls::TLS_HANDSHAKE_LIMIT); one more drops a
//! pending one, the oldest that has not said a word first (see [`PendingHandshakes`]).
//! Only a connection whose handshake has succeeded, which only the host can make,
//! gets one of the server's connection slots.
//!
//! The lease: with `--lease-secs N`, the worker exits once N seconds pass without a
//! request from its host. Every request counts; `POST /lease` ([`wire::PATH_LEASE`])
//! exists so that a host with nothing to ask can still say it is there.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::remote::{Fingerprint, FingerprintError};
use cjm_interface::wire;
use cjm_tls::{Heard, Lease, PendingHandshakes, ServerTls, TlsError, MAX_PENDING_HANDSHAKES};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use crate::handler::handle;
use crate::listener::{Connection, Listener};
use crate::respond::json_response;
use crate::state::Worker;

/// How a remote worker serves: where it listens, whose client certificate it
/// accepts, and how long it waits for its host. Built with [`RemoteServe::new`] or
/// [`RemoteServe::from_env`], given to
/// [`ServeOptions::remote`](crate::ServeOptions::remote).
#[derive(Debug, Clone)]
pub struct RemoteServe {
    pub(crate) listen: SocketAddr,
    pub(crate) client_cert: Fingerprint,
    pub(crate) lease: Option<Duration>,
}

/// Why a remote worker cannot be set up from its arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteServeError {
    /// `--listen` without the host's fingerprint.
    #[error(
        "--listen needs {}: the SHA-256 fingerprint (hex) of the host's client certificate",
        wire::CLIENT_CERT_SHA256_ENV
    )]
    NoClientFingerprint,
    /// The fingerprint variable is set but is not a fingerprint.
    #[error("{} is not usable", wire::CLIENT_CERT_SHA256_ENV)]
    BadClientFingerprint(#[source] FingerprintError),
    /// A lease of zero seconds would end at once.
    #[error("--lease-secs must be at least 1")]
    ZeroLease,
}

impl RemoteServe {
    /// Listen on `listen` (port 0: any free one) and accept only the client
    /// certificate `client_cert`; no lease.
    pub fn new(listen: SocketAddr, client_cert: Fingerprint) -> Self {
        RemoteServe {
            listen,
            client_cert,
            lease: None,
        }
    }

    /// Exit when `lease` passes without a request from the host.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Listen on `listen`, with the host's fingerprint from
    /// [`wire::CLIENT_CERT_SHA256_ENV`] and a lease of `lease_secs` if given.
    pub fn from_env(listen: SocketAddr, lease_secs: Option<u64>) -> Result<Self, RemoteServeError> {
        let text = std::env::var(wire::CLIENT_CERT_SHA256_ENV)
            .map_err(|_| RemoteServeError::NoClientFingerprint)?;
        let client_cert = text
            .parse()
            .map_err(RemoteServeError::BadClientFingerprint)?;
        let remote = RemoteServe::new(listen, client_cert);
        match lease_secs {
            None => Ok(remote),
            Some(0) => Err(RemoteServeError::ZeroLease),
            Some(secs) => Ok(remote.lease(Duration::from_secs(secs))),
        }
    }
}

/// A remote worker's serving state: its TLS and its lease.
pub(crate) struct Remote {
    pub(crate) listen: SocketAddr,
    tls: ServerTls,
    lease: Arc<Lease>,
    handshakes: Arc<PendingHandshakes>,
}

impl Remote {
    pub(crate) fn new(options: RemoteServe) -> Result<Remote, TlsError> {
        Ok(Remote {
            listen: options.listen,
            tls: ServerTls::new(options.client_cert)?,
            lease: Arc::new(Lease::new(options.lease)),
            handshakes: Arc::new(PendingHandshakes::new(MAX_PENDING_HANDSHAKES)),
        })
    }

    /// The TCP listener on the `--listen` address.
    pub(crate) fn bind(&self) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(self.listen)?;
        listener.set_nonblocking(true)?;
        Ok(Listener::Tcp(listener))
    }

    /// Print the handshake line for a worker listening on `port`. Only once this line
    /// is out does the host connect, so the port is already accepting by then.
    pub(crate) fn announce(&self, port: u16) -> std::io::Result<()> {
        cjm_tls::announce(port, self.tls.fingerprint())
    }

    /// An accepted TCP connection: its TLS handshake runs as a task of the calling
    /// (accepting) runtime, one of the bounded pending ones; once it succeeds, the
    /// connection waits for one of the `slots` and is served by the same task. Must be
    /// called within that runtime.
    pub(crate) fn authenticate(
        &self,
        connection: Connection,
        worker: &Arc<Worker>,
        slots: &Arc<Semaphore>,
    ) {
        let Connection::Tcp(stream) = connection else {
            return;
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| String::from("a client"), |peer| peer.to_string());
        let lease = Arc::clone(&self.lease);
        let worker = Arc::clone(worker);
        let slots = Arc::clone(slots);
        let served = peer.clone();
        self.handshakes.accept(
            &self.tls.acceptor(),
            stream,
            peer,
            move |stream| async move {
                // Authenticated: the host's. It waits for a slot like any of its
                // connections would have.
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                serve_tls(worker, stream, lease, &served).await;
            },
        );
    }

    /// Resolves when the lease has run out (never without one).
    pub(crate) async fn lease_expired(&self) {
        self.lease.expired().await;
    }

    pub(crate) fn lease_limit(&self) -> Option<Duration> {
        self.lease.limit()
    }
}

/// Serve HTTP/1.1 over an authenticated TLS connection; every request renews the
/// lease.
async fn serve_tls(
    worker: Arc<Worker>,
    stream: tokio_rustls::server::TlsStream<Heard<tokio::net::TcpStream>>,
    lease: Arc<Lease>,
    peer: &str,
) {
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        // The TLS layer has authenticated the host: any request is word from it.
        lease.touch();
        let worker = Arc::clone(&worker);
        let renewal = Lease::is_renewal(&request).then(|| lease.renewed());
        async move {
            if let Some(renewed) = renewal {
                return Ok::<_, Infallible>(json_response(StatusCode::OK, &renewed));
            }
            Ok(handle(worker, request).await)
        }
    });
    if let Err(err) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("connection with {peer} ended with an error: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_comes_from_the_environment_only() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // The variable is not set in unit tests.
        assert_eq!(
            RemoteServe::from_env(listen, None).unwrap_err(),
            RemoteServeError::NoClientFingerprint
        );
    }
}
