//! The worker's listening socket: inherited from the host when it passed one (see
//! [`wire::LISTEN_FD_ENV`]), otherwise bound here, always on loopback.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

use cjm_interface::wire;

pub(crate) fn open(port: u16) -> io::Result<TcpListener> {
    let listener = match std::env::var(wire::LISTEN_FD_ENV) {
        Ok(fd_text) => {
            // Our own children must not mistake the variable for an offer of theirs.
            std::env::remove_var(wire::LISTEN_FD_ENV);
            inherited(&fd_text, port)?
        }
        Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn inherited(fd_text: &str, port: u16) -> io::Result<TcpListener> {
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
    // SAFETY: the host handed this descriptor to us alone (it was duplicated onto this
    // number in the child before exec), so nothing else in the process owns it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    // SAFETY: setting close-on-exec on a descriptor we own; plugin subprocesses must not
    // keep the listener open, or the port would outlive the worker.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
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
    Ok(listener)
}
