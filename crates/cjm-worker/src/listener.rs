//! The worker's listening socket: inherited from the host when it passed one (see
//! [`wire::LISTEN_FD_ENV`]): loopback TCP, or a Unix-domain socket in a private
//! folder; otherwise bound here, on loopback TCP.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;

use cjm_interface::wire;
use rustix::net::AddressFamily;

/// A listening socket of either kind, not yet registered with a runtime.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted connection, registered with the accepting runtime.
#[derive(Debug)]
pub(crate) enum Connection {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The listener registered with the accepting runtime.
#[derive(Debug)]
pub(crate) enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    pub(crate) fn into_async(self) -> io::Result<AsyncListener> {
        Ok(match self {
            Listener::Tcp(listener) => {
                AsyncListener::Tcp(tokio::net::TcpListener::from_std(listener)?)
            }
            Listener::Unix(listener) => {
                AsyncListener::Unix(tokio::net::UnixListener::from_std(listener)?)
            }
        })
    }
}

impl AsyncListener {
    pub(crate) async fn accept(&self) -> io::Result<Connection> {
        match self {
            AsyncListener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                // Small answers go out at once instead of waiting for more to send.
                let _ = stream.set_nodelay(true);
                Ok(Connection::Tcp(stream))
            }
            AsyncListener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                wire::widen_send_buffer(stream.as_fd());
                Ok(Connection::Unix(stream))
            }
        }
    }

    /// Where it listens, for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            AsyncListener::Tcp(listener) => listener.local_addr().map_or_else(
                |err| format!("tcp ({err})"),
                |address| format!("http://{address}"),
            ),
            AsyncListener::Unix(listener) => listener.local_addr().map_or_else(
                |err| format!("a Unix socket ({err})"),
                |address| match address.as_pathname() {
                    Some(path) => format!("unix:{}", path.display()),
                    None => String::from("an unnamed Unix socket"),
                },
            ),
        }
    }
}

/// The socket the host handed over, or else one bound here on `127.0.0.1:port`.
pub(crate) fn open(port: u16, inherited: Option<OwnedFd>) -> io::Result<Listener> {
    let listener = match inherited {
        Some(socket) => adopt(socket, port)?,
        None => Listener::Tcp(TcpListener::bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            port,
        )))?),
    };
    match &listener {
        Listener::Tcp(listener) => listener.set_nonblocking(true)?,
        Listener::Unix(listener) => listener.set_nonblocking(true)?,
    }
    Ok(listener)
}

fn adopt(socket: OwnedFd, port: u16) -> io::Result<Listener> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
    let address = rustix::net::getsockname(&socket)
        .map_err(|err| invalid(format!("the inherited descriptor is not a socket: {err}")))?;
    if address.address_family() == AddressFamily::UNIX {
        return Ok(Listener::Unix(UnixListener::from(socket)));
    }
    let listener = TcpListener::from(socket);
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() {
        return Err(invalid(format!(
            "inherited socket is bound to {address}, not to loopback"
        )));
    }
    if port != 0 && address.port() != port {
        return Err(invalid(format!(
            "inherited socket is bound to port {}, but --port says {port}",
            address.port()
        )));
    }
    Ok(Listener::Tcp(listener))
}
