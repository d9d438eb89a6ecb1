//! `sd_notify`: tell systemd (a `Type=notify` unit) that the daemon is ready or
//! stopping, with one datagram to `$NOTIFY_SOCKET`, as its protocol asks. Written
//! here (a few lines) rather than brought in as a crate.

use std::os::unix::net::UnixDatagram;

/// Why systemd could not be told.
#[derive(Debug, thiserror::Error)]
#[error("cannot notify systemd at NOTIFY_SOCKET={socket}: {source}")]
pub struct NotifyError {
    /// The socket named.
    pub socket: String,
    /// The system's error.
    pub source: std::io::Error,
}

/// Send `state` (such as `READY=1`) to `$NOTIFY_SOCKET`; `Ok(false)` when it is not
/// set (not started by systemd, or not as `Type=notify`).
pub fn notify_systemd(state: &str) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let name = socket.to_string_lossy().into_owned();
    let failed = |source| NotifyError {
        socket: name.clone(),
        source,
    };
    let datagram = UnixDatagram::unbound().map_err(failed)?;
    let bytes = socket.as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        // A name in the abstract namespace (systemd uses these in containers).
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name).map_err(failed)?;
        datagram
            .send_to_addr(state.as_bytes(), &addr)
            .map_err(failed)?;
    } else {
        datagram
            .send_to(state.as_bytes(), &socket)
            .map_err(failed)?;
    }
    Ok(true)
}
