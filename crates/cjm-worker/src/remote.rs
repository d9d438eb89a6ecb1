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
//! for at most [`TLS_HANDSHAKE_LIMIT`]; one more drops a pending one, the oldest that
//! has not said a word first (see [`Handshakes`]). Only a connection whose handshake
//! has succeeded, which only the host can make, gets one of the server's connection
//! slots.
//!
//! The lease: with `--lease-secs N`, the worker exits once N seconds pass without a
//! request from its host. Every request counts; `POST /lease` ([`wire::PATH_LEASE`])
//! exists so that a host with nothing to ask can still say it is there.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cjm_interface::remote::{Fingerprint, FingerprintError, Handshake, LeaseResponse};
use cjm_interface::wire;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::handler::handle;
use crate::listener::{Connection, Listener};
use crate::respond::json_response;
use crate::state::Worker;
use crate::tls::{server_tls, TlsSetupError};

/// How long a client has to complete the TLS handshake: the host needs one round
/// trip and a few milliseconds of signing; this leaves room for a slow link and
/// none for a connection that only sits there.
pub(crate) const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(3);

/// Connections in their TLS handshake at once. The host opens a handful at a time;
/// anyone on the network can open many more, and each one past this drops one still
/// pending (see [`Handshakes`]).
pub(crate) const MAX_PENDING_HANDSHAKES: usize = 64;

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
    handshakes: Arc<Handshakes>,
}

impl Remote {
    pub(crate) fn new(options: RemoteServe) -> Result<Remote, TlsSetupError> {
        let tls = server_tls(options.client_cert)?;
        Ok(Remote {
            listen: options.listen,
            acceptor: TlsAcceptor::from(tls.config),
            fingerprint: tls.fingerprint,
            lease: Arc::new(Lease::new(options.lease)),
            handshakes: Arc::new(Handshakes::new(MAX_PENDING_HANDSHAKES)),
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
        let id = self.handshakes.next_id();
        let heard = Arc::new(AtomicBool::new(false));
        let socket = HeardTcp::new(stream, Arc::clone(&heard));
        let handshakes = Arc::clone(&self.handshakes);
        let acceptor = self.acceptor.clone();
        let lease = Arc::clone(&self.lease);
        let worker = Arc::clone(worker);
        let slots = Arc::clone(slots);
        let task = tokio::spawn(async move {
            let handshake = acceptor.accept(socket);
            let outcome = tokio::time::timeout(TLS_HANDSHAKE_LIMIT, handshake).await;
            handshakes.finished(id);
            let stream = match outcome {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    // Plain HTTP, no certificate, another certificate: refused here.
                    tracing::info!("TLS handshake with {peer} failed: {err}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(
                        "{peer} did not complete a TLS handshake in {TLS_HANDSHAKE_LIMIT:?}"
                    );
                    return;
                }
            };
            // Authenticated: the host's. It waits for a slot like any of its
            // connections would have.
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            serve_tls(worker, stream, lease, &peer).await;
        });
        self.handshakes.started(id, task.abort_handle(), heard);
    }

    /// Resolves when the lease has run out (never without one).
    pub(crate) async fn lease_expired(&self) {
        self.lease.expired().await;
    }

    pub(crate) fn lease_limit(&self) -> Option<Duration> {
        self.lease.limit
    }
}

/// Serve HTTP/1.1 over an authenticated TLS connection; every request renews the
/// lease.
async fn serve_tls(
    worker: Arc<Worker>,
    stream: tokio_rustls::server::TlsStream<HeardTcp>,
    lease: Arc<Lease>,
    peer: &str,
) {
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

/// The connections in their TLS handshake, oldest first: at most `limit`. One more
/// drops the oldest that has not sent a byte yet, else the oldest. So a flood of
/// connections that never speak (the cheap attack: no bandwidth, no crypto) cannot
/// crowd the host out: its connection sends its hello at once and is never the one
/// dropped for them; and a newcomer always gets in, so that holding every pending
/// place (until the deadline) is no attack either. Pending handshakes are tasks, not
/// threads: the bound is on descriptors and memory.
pub(crate) struct Handshakes {
    limit: usize,
    state: Mutex<HandshakesState>,
}

struct Pending {
    id: u64,
    task: AbortHandle,
    /// Whether the client has sent anything.
    heard: Arc<AtomicBool>,
}

struct HandshakesState {
    next_id: u64,
    pending: VecDeque<Pending>,
    dropped: u64,
    /// When a flood was last reported, so that it is said once a minute at most.
    reported: Option<Instant>,
}

/// How often a flood of unauthenticated connections is reported in the log.
const FLOOD_REPORT_EVERY: Duration = Duration::from_secs(60);

impl Handshakes {
    pub(crate) fn new(limit: usize) -> Self {
        Handshakes {
            limit: limit.max(1),
            state: Mutex::new(HandshakesState {
                next_id: 0,
                pending: VecDeque::new(),
                dropped: 0,
                reported: None,
            }),
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        let mut state = self.state.lock();
        state.next_id += 1;
        state.next_id
    }

    /// Handshake `id` has begun, in the task `task`; `heard` turns true once its
    /// client has sent something. One pending handshake is dropped first if there
    /// are `limit` already.
    pub(crate) fn started(&self, id: u64, task: AbortHandle, heard: Arc<AtomicBool>) {
        let mut state = self.state.lock();
        // A task that ended before it was recorded here counts for nothing.
        state.pending.retain(|pending| !pending.task.is_finished());
        while state.pending.len() >= self.limit {
            let silent = state
                .pending
                .iter()
                .position(|pending| !pending.heard.load(Ordering::Relaxed));
            let Some(dropped) = state.pending.remove(silent.unwrap_or(0)) else {
                break;
            };
            dropped.task.abort();
            state.dropped += 1;
            let due = state
                .reported
                .is_none_or(|at| at.elapsed() >= FLOOD_REPORT_EVERY);
            if due {
                state.reported = Some(Instant::now());
                tracing::warn!(
                    "more than {} connections at once have not completed their TLS \
                     handshake; the oldest are dropped ({} so far): is someone flooding \
                     this port?",
                    self.limit,
                    state.dropped
                );
            }
        }
        state.pending.push_back(Pending { id, task, heard });
    }

    /// Handshake `id` has ended, whichever way.
    pub(crate) fn finished(&self, id: u64) {
        self.state.lock().pending.retain(|pending| pending.id != id);
    }

    #[cfg(test)]
    fn pending(&self) -> Vec<u64> {
        self.state
            .lock()
            .pending
            .iter()
            .map(|pending| pending.id)
            .collect()
    }
}

/// The TCP socket under a TLS session, noting whether the client has sent anything
/// (see [`Handshakes`]: a connection that never speaks is the first one dropped).
pub(crate) struct HeardTcp {
    stream: tokio::net::TcpStream,
    /// Set once anything has been read.
    heard: Arc<AtomicBool>,
}

impl HeardTcp {
    pub(crate) fn new(stream: tokio::net::TcpStream, heard: Arc<AtomicBool>) -> Self {
        HeardTcp { stream, heard }
    }
}

impl std::fmt::Debug for HeardTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeardTcp")
            .field("heard", &self.heard.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HeardTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.heard.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for HeardTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
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

    #[tokio::test]
    async fn past_the_limit_a_silent_handshake_is_dropped_before_one_that_spoke() {
        let handshakes = Handshakes::new(3);
        let mut tasks = Vec::new();
        let mut heard = Vec::new();
        for _ in 0..3 {
            let id = handshakes.next_id();
            let task = tokio::spawn(std::future::pending::<()>());
            let flag = Arc::new(AtomicBool::new(false));
            handshakes.started(id, task.abort_handle(), Arc::clone(&flag));
            tasks.push(task);
            heard.push(flag);
        }
        // The oldest has said something (a host's hello): the next silent one goes.
        heard[0].store(true, Ordering::Relaxed);
        let fourth = handshakes.next_id();
        let task = tokio::spawn(std::future::pending::<()>());
        let flag = Arc::new(AtomicBool::new(false));
        handshakes.started(fourth, task.abort_handle(), Arc::clone(&flag));
        tasks.push(task);
        heard.push(flag);
        assert_eq!(handshakes.pending(), [1, 3, 4]);
        let mut tasks = tasks.into_iter();
        let first = tasks.next().unwrap();
        let second = tasks.next().unwrap();
        assert!(second.await.unwrap_err().is_cancelled());
        assert!(!first.is_finished());

        // All of them heard from: the oldest goes.
        for flag in &heard {
            flag.store(true, Ordering::Relaxed);
        }
        handshakes.started(
            handshakes.next_id(),
            tokio::spawn(std::future::pending::<()>()).abort_handle(),
            Arc::new(AtomicBool::new(true)),
        );
        assert_eq!(handshakes.pending(), [3, 4, 5]);
        assert!(first.await.unwrap_err().is_cancelled());

        // An ended handshake leaves its place.
        handshakes.finished(fourth);
        assert!(!handshakes.pending().contains(&fourth));
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
