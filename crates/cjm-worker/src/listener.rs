//! The worker's listening socket: inherited from the host when it passed one (see
//! [`wire::LISTEN_FD_ENV`]): loopback TCP, or a Unix-domain socket in a private
//! folder; otherwise bound here, on loopback TCP.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use cjm_interface::wire;

/// A listening socket of either kind, not yet registered with a runtime.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted connection, on its way to the thread that serves it.
#[derive(Debug)]
pub(crate) enum Connection {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
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
                Ok(Connection::Tcp(stream.into_std()?))
            }
            AsyncListener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                wire::widen_send_buffer(stream.as_fd());
                Ok(Connection::Unix(stream.into_std()?))
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

pub(crate) fn open(port: u16) -> io::Result<Listener> {
    let listener = match std::env::var(wire::LISTEN_FD_ENV) {
        Ok(fd_text) => {
            // Our own children must not mistake the variable for an offer of theirs.
            std::env::remove_var(wire::LISTEN_FD_ENV);
            inherited(&fd_text, port)?
        }
        Err(_) => Listener::Tcp(TcpListener::bind(SocketAddr::from((
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

fn inherited(fd_text: &str, port: u16) -> io::Result<Listener> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
    let fd: RawFd = fd_text.parse().map_err(|_| {
        invalid(format!(
            "{}={fd_text:?} is not a file descriptor",
            wire::LISTEN_FD_ENV
        ))
    })?;
    if fd < 3 {
        return Err(invalid(format!(
            "{}={fd} names a standard stream",
            wire::LISTEN_FD_ENV
        )));
    }
    // SAFETY: F_GETFD on any integer is harmless; it tells whether the descriptor is
    // open before we take ownership of it.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(invalid(format!(
            "{}={fd} is not an open descriptor",
            wire::LISTEN_FD_ENV
        )));
    }
    // SAFETY: setting close-on-exec on a descriptor the host handed to us alone; plugin
    // subprocesses must not keep the listener open, or it would outlive the worker.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if socket_family(fd)? == libc::AF_UNIX {
        // SAFETY: the host handed this descriptor to us alone (it was duplicated onto
        // this number in the child before exec), so nothing else in the process owns it.
        return Ok(Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) }));
    }
    // SAFETY: as above.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
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

fn socket_family(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: getsockname writes at most `length` bytes into the zeroed storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a valid pointer to storage of the length given.
    let result = unsafe {
        libc::getsockname(
            fd,
            std::ptr::addr_of_mut!(storage).cast::<libc::sockaddr>(),
            &mut length,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(storage.ss_family))
}
