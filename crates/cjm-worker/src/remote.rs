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
//! The lease: with `--lease-secs N`, the worker exits once N seconds pass without a
//! request from its host. Every request counts; `POST /lease` ([`wire::PATH_LEASE`])
//! exists so that a host with nothing to ask can still say it is there.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::remote::{Fingerprint, FingerprintError, Handshake, LeaseResponse};
use cjm_interface::wire;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::handler::{handle, Worker};
use crate::listener::{Connection, Listener};
use crate::respond::json_response;
use crate::tls::{server_tls, TlsSetupError};

/// How long a client has to complete the TLS handshake. A connection that says
/// nothing holds a thread and a connection slot; on a network port anyone can open
/// one.
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

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
    acceptor: TlsAcceptor,
    fingerprint: Fingerprint,
    lease: Arc<Lease>,
}

impl Remote {
    pub(crate) fn new(options: RemoteServe) -> Result<Remote, TlsSetupError> {
        let tls = server_tls(options.client_cert)?;
        Ok(Remote {
            listen: options.listen,
            acceptor: TlsAcceptor::from(tls.config),
            fingerprint: tls.fingerprint,
            lease: Arc::new(Lease::new(options.lease)),
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
        use std::io::Write;
        let line = Handshake::new(port, self.fingerprint, std::process::id()).to_line();
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()
    }

    /// An accepted TCP connection, to be served over TLS.
    pub(crate) fn secure(&self, connection: Connection) -> Connection {
        match connection {
            Connection::Tcp(stream) => Connection::Tls(TlsConnection {
                stream,
                acceptor: self.acceptor.clone(),
                lease: Arc::clone(&self.lease),
            }),
            other => other,
        }
    }

    /// Resolves when the lease has run out (never without one).
    pub(crate) async fn lease_expired(&self) {
        self.lease.expired().await;
    }

    pub(crate) fn lease_limit(&self) -> Option<Duration> {
        self.lease.limit
    }
}

/// A TCP connection on its way to its thread, where its TLS handshake runs.
pub(crate) struct TlsConnection {
    stream: std::net::TcpStream,
    acceptor: TlsAcceptor,
    lease: Arc<Lease>,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Complete the TLS handshake, then serve HTTP/1.1 over it; every request renews the
/// lease.
pub(crate) async fn serve_tls(worker: Arc<Worker>, connection: TlsConnection) {
    let TlsConnection {
        stream,
        acceptor,
        lease,
    } = connection;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| String::from("a client"), |peer| peer.to_string());
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!("cannot register a connection: {err}");
            return;
        }
    };
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            // Plain HTTP, no certificate, another certificate: refused here.
            tracing::info!("TLS handshake with {peer} failed: {err}");
            return;
        }
        Err(_) => {
            tracing::info!("{peer} did not complete a TLS handshake in {TLS_HANDSHAKE_LIMIT:?}");
            return;
        }
    };
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        // The TLS layer has authenticated the host: any request is word from it.
        lease.touch();
        let worker = Arc::clone(&worker);
        let renewal = request.method() == Method::POST && request.uri().path() == wire::PATH_LEASE;
        let lease_secs = lease.limit.map(|limit| limit.as_secs());
        async move {
            if renewal {
                return Ok::<_, Infallible>(json_response(
                    StatusCode::OK,
                    &LeaseResponse {
                        status: String::from("renewed"),
                        lease_secs,
                    },
                ));
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

/// When the host was last heard from. Tokio's clock, so that tests can pause it.
struct Lease {
    started: Instant,
    /// Milliseconds after `started`; only ever moves forward.
    last_heard_ms: AtomicU64,
    limit: Option<Duration>,
}

impl Lease {
    fn new(limit: Option<Duration>) -> Self {
        // The lease runs from the start: a host that never connects is gone too.
        Lease {
            started: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            limit,
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heard_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn deadline(&self, limit: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed)) + limit
    }

    async fn expired(&self) {
        let Some(limit) = self.limit else {
            return std::future::pending().await;
        };
        loop {
            let deadline = self.deadline(limit);
            if deadline <= Instant::now() {
                return;
            }
            // Woken at the deadline known now; a request meanwhile moves it on.
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_runs_out_only_after_its_time_without_a_word() {
        let lease = Arc::new(Lease::new(Some(Duration::from_secs(3))));
        let started = tokio::time::Instant::now();
        let watcher = {
            let lease = Arc::clone(&lease);
            tokio::spawn(async move { lease.expired().await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        lease.touch();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!watcher.is_finished(), "renewed at 2 s, so alive at 4 s");
        watcher.await.unwrap();
        // The paused clock moves only as far as needed: 2 s + 3 s.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(5), "{waited:?}");
        assert!(waited < Duration::from_millis(5100), "{waited:?}");
    }

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
