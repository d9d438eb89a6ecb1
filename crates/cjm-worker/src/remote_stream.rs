//! An authenticated remote connection on its way from the accepting thread to the
//! thread that serves it, and the socket under its TLS session. Apart from
//! `remote.rs`, so that the listener's `Connection` can carry one without the
//! listener and the remote server importing each other.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cjm_tls::{Heard, Lease};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An authenticated TLS connection on its way to its thread.
pub(crate) struct TlsConnection {
    pub(crate) stream: tokio_rustls::server::TlsStream<Heard<MovableTcp>>,
    pub(crate) lease: Arc<Lease>,
    pub(crate) peer: String,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The TCP socket under a TLS session, movable from one runtime to another: the
/// handshake runs on the accepting thread's runtime, the session on its connection
/// thread's. A tokio socket belongs to the runtime it was registered with, so it is
/// taken out of the one ([`detach`](Self::detach)) and put into the other
/// ([`attach`](Self::attach)) with the TLS state kept around it.
pub(crate) struct MovableTcp {
    socket: Socket,
}

enum Socket {
    Registered(tokio::net::TcpStream),
    Detached(std::net::TcpStream),
    /// Only while moving, or after a failed move.
    Gone,
}

impl MovableTcp {
    /// `stream`, registered with the current runtime.
    pub(crate) fn new(stream: tokio::net::TcpStream) -> Self {
        MovableTcp {
            socket: Socket::Registered(stream),
        }
    }

    /// Out of the current runtime, for another thread to [`attach`](Self::attach).
    pub(crate) fn detach(&mut self) -> io::Result<()> {
        self.socket = match std::mem::replace(&mut self.socket, Socket::Gone) {
            Socket::Registered(stream) => Socket::Detached(stream.into_std()?),
            other => other,
        };
        Ok(())
    }

    /// Into the current runtime.
    pub(crate) fn attach(&mut self) -> io::Result<()> {
        self.socket = match std::mem::replace(&mut self.socket, Socket::Gone) {
            Socket::Detached(stream) => {
                Socket::Registered(tokio::net::TcpStream::from_std(stream)?)
            }
            other => other,
        };
        Ok(())
    }

    fn registered(&mut self) -> io::Result<Pin<&mut tokio::net::TcpStream>> {
        match &mut self.socket {
            Socket::Registered(stream) => Ok(Pin::new(stream)),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket is not registered with this thread's runtime",
            )),
        }
    }
}

impl std::fmt::Debug for MovableTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.socket {
            Socket::Registered(_) => "registered",
            Socket::Detached(_) => "detached",
            Socket::Gone => "gone",
        };
        f.debug_struct("MovableTcp")
            .field("socket", &state)
            .finish()
    }
}

impl AsyncRead for MovableTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().registered() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl AsyncWrite for MovableTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().registered() {
            Ok(stream) => stream.poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().registered() {
            Ok(stream) => stream.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().registered() {
            Ok(stream) => stream.poll_shutdown(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().registered() {
            Ok(stream) => stream.poll_write_vectored(cx, bufs),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}
