//! Connections in their TLS handshake, before anyone knows whether they are the
//! host's: bounded apart from served ones, each for a short time, the silent ones
//! dropped first, so that a flood of connections costs a remote worker little and
//! cannot crowd its host out.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete the TLS handshake: the host needs one round
/// trip and a few milliseconds of signing; this leaves room for a slow link and
/// none for a connection that only sits there.
pub const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(3);

/// Connections in their TLS handshake at once. The host opens a handful at a time;
/// anyone on the network can open many more, and each one past this drops one still
/// pending (see [`PendingHandshakes`]).
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// The connections in their TLS handshake, oldest first: at most `limit`. One more
/// drops the oldest that has not sent a byte yet, else the oldest. So a flood of
/// connections that never speak (the cheap attack: no bandwidth, no crypto) cannot
/// crowd the host out: its connection sends its hello at once and is never the one
/// dropped for them; and a newcomer always gets in, so that holding every pending
/// place (until the deadline) is no attack either. Pending handshakes are tasks, not
/// threads: the bound is on descriptors and memory. Begin one with
/// [`accept`](Self::accept).
pub struct PendingHandshakes {
    limit: usize,
    state: Mutex<HandshakesState>,
}

impl std::fmt::Debug for PendingHandshakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingHandshakes")
            .field("limit", &self.limit)
            .field("pending", &self.state.lock().pending.len())
            .finish()
    }
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

impl PendingHandshakes {
    /// At most `limit` (at least 1) at once.
    pub fn new(limit: usize) -> Self {
        PendingHandshakes {
            limit: limit.max(1),
            state: Mutex::new(HandshakesState {
                next_id: 0,
                pending: VecDeque::new(),
                dropped: 0,
                reported: None,
            }),
        }
    }

    /// Run the TLS handshake of `stream` (from `peer`) as a task of the current
    /// runtime, one of the bounded pending ones, for at most [`TLS_HANDSHAKE_LIMIT`];
    /// once it succeeds, which only the holder of the pinned client certificate can
    /// make happen, `then` serves the session in that same task. Must be called
    /// within a tokio runtime.
    pub fn accept<S, F, Fut>(
        self: &Arc<Self>,
        acceptor: &TlsAcceptor,
        stream: S,
        peer: String,
        then: F,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(TlsStream<Heard<S>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.next_id();
        let heard = Arc::new(AtomicBool::new(false));
        let socket = Heard {
            inner: stream,
            heard: Arc::clone(&heard),
        };
        let pending = Arc::clone(self);
        let acceptor = acceptor.clone();
        let task = tokio::spawn(async move {
            let outcome = tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(socket)).await;
            pending.finished(id);
            match outcome {
                Ok(Ok(stream)) => then(stream).await,
                // Plain HTTP, no certificate, another certificate: refused here.
                Ok(Err(err)) => tracing::info!("TLS handshake with {peer} failed: {err}"),
                Err(_) => tracing::debug!(
                    "{peer} did not complete a TLS handshake in {TLS_HANDSHAKE_LIMIT:?}"
                ),
            }
        });
        self.started(id, task.abort_handle(), heard);
    }

    fn next_id(&self) -> u64 {
        let mut state = self.state.lock();
        state.next_id += 1;
        state.next_id
    }

    /// Handshake `id` has begun, in the task `task`; `heard` turns true once its
    /// client has sent something. One pending handshake is dropped first if there
    /// are `limit` already.
    fn started(&self, id: u64, task: AbortHandle, heard: Arc<AtomicBool>) {
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
    fn finished(&self, id: u64) {
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

/// A stream that notes when its first byte comes in: a client that has said
/// something (a host's hello) is not dropped for one that has not.
#[derive(Debug)]
pub struct Heard<S> {
    inner: S,
    heard: Arc<AtomicBool>,
}

impl<S> Heard<S> {
    /// The stream within.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream within.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.heard.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_limit_a_silent_handshake_is_dropped_before_one_that_spoke() {
        let handshakes = PendingHandshakes::new(3);
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
}
