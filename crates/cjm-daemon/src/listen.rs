//! Where the API is served: a Unix socket in a folder only its owner may enter (by
//! default), a loopback TCP address (plain HTTP, with the token), or any TCP address
//! over TLS (with the token).

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::error::DaemonError;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket; its folder is made (or kept) 0700.
    Unix(PathBuf),
    /// A loopback TCP address, plain HTTP (see [`Listen::tcp`]).
    Tcp(SocketAddr),
    /// A TCP address served over TLS (see [`Listen::tls`] and `DaemonOptions::tls`).
    Tls(SocketAddr),
}

impl Listen {
    /// A TCP address for plain HTTP, refused unless it is loopback: anything else
    /// would send the token, and the API that runs code as this user, over the
    /// network in clear ([`Listen::tls`] serves it).
    pub fn tcp(addr: SocketAddr) -> Result<Listen, DaemonError> {
        if addr.ip().is_loopback() {
            Ok(Listen::Tcp(addr))
        } else {
            Err(DaemonError::NotLoopback { addr })
        }
    }

    /// A TCP address served over TLS, any address (`DaemonOptions::tls` must say
    /// where the certificate comes from).
    pub fn tls(addr: SocketAddr) -> Listen {
        Listen::Tls(addr)
    }

    /// The TCP address, if it is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listen::Unix(_) => None,
            Listen::Tcp(addr) | Listen::Tls(addr) => Some(*addr),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Tls(addr) => write!(f, "https://{addr}"),
        }
    }
}

/// A bound listener. A Unix socket's file is removed when it is dropped.
#[derive(Debug)]
pub(crate) enum Bound {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
    Tls(TcpListener),
}

impl Bound {
    /// Bind `listen`. For a Unix socket the caller holds the daemon's lock, so that a
    /// socket file already there is a dead daemon's and may be replaced.
    pub(crate) async fn bind(listen: &Listen) -> Result<Bound, DaemonError> {
        match listen {
            Listen::Tcp(addr) | Listen::Tls(addr) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| DaemonError::Bind {
                            addr: *addr,
                            source,
                        })?;
                Ok(match listen {
                    Listen::Tls(_) => Bound::Tls(listener),
                    _ => Bound::Tcp(listener),
                })
            }
            Listen::Unix(path) => bind_unix(path),
        }
    }

    /// Where it listens, as the ready line says it (the port a `:0` was given).
    pub(crate) fn address(&self) -> Listen {
        match self {
            Bound::Unix { path, .. } => Listen::Unix(path.clone()),
            Bound::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => Listen::Tcp(addr),
                Err(_) => Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            },
            Bound::Tls(listener) => match listener.local_addr() {
                Ok(addr) => Listen::Tls(addr),
                Err(_) => Listen::Tls(SocketAddr::from(([0, 0, 0, 0], 0))),
            },
        }
    }
}

/// A connection taken.
#[derive(Debug)]
pub(crate) enum Accepted {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Bound {
    pub(crate) async fn accept(&self) -> std::io::Result<Accepted> {
        Ok(match self {
            Bound::Unix { listener, .. } => Accepted::Unix(listener.accept().await?.0),
            Bound::Tcp(listener) | Bound::Tls(listener) => {
                Accepted::Tcp(listener.accept().await?.0)
            }
        })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Bound::Unix { path, .. } = self {
            // Gone with the daemon: a client finding no socket knows none serves.
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_unix(path: &Path) -> Result<Bound, DaemonError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DaemonError::Io { what, path, source }
    };
    cjm_interface::private::create_private_parent(path)
        .map_err(io("cannot make the socket's folder", path))?;
    let folder = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mode = std::fs::metadata(folder)
        .map_err(io("cannot read the socket's folder", folder))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        // Whoever may connect runs plugins as this user: the folder is what keeps
        // others out (a socket's own mode is not honoured everywhere). CJM_HOME holds
        // the secret store and the journal too, which others have no business reading.
        tracing::warn!(
            "{} was {:o}, open to others; made 0700: it holds the daemon's socket",
            folder.display(),
            mode & 0o777
        );
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(mode & 0o7700))
            .map_err(io("cannot make private", folder))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A daemon that was killed left it; the lock says none serves now.
            std::fs::remove_file(path).map_err(io("cannot remove the stale socket", path))?;
        }
        Ok(_) => {
            return Err(DaemonError::Io {
                what: "will not replace what is not a socket at",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io("cannot listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot make private", path))?;
    Ok(Bound::Unix {
        listener,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_loopback_is_served_over_tcp() {
        assert!(Listen::tcp("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(Listen::tcp("[::1]:8080".parse().unwrap()).is_ok());
        let refused = Listen::tcp("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains("0.0.0.0:8080") && text.contains("TLS") && text.contains("--tls-cert"),
            "{text}"
        );
        assert_eq!(
            Listen::tls("0.0.0.0:8080".parse().unwrap()).to_string(),
            "https://0.0.0.0:8080"
        );
    }
}
