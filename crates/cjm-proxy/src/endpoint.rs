//! Where a worker listens, and the socket the host makes for it.
//!
//! A native worker gets a Unix-domain socket in a folder only this user can enter:
//! the kernel moves data between the two processes faster than through loopback TCP
//! (no TCP/IP stack; 10 MiB each way ~2.8 ms instead of ~4.6 ms on the 2-core
//! machine of the benchmarks), and no other local user can even connect. The
//! original's Python worker binds a TCP port of its own choosing; a native worker can
//! be given a loopback TCP socket too.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;

/// How to reach a running worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `127.0.0.1:<port>`.
    Tcp {
        /// The port.
        port: u16,
    },
    /// A Unix-domain stream socket at this path.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
    /// TLS over TCP to a worker elsewhere (`--listen`), its certificate pinned.
    Tls {
        /// Its host: a name, an IPv4 address or a bracketed IPv6 one.
        host: String,
        /// Its port.
        port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { port } => write!(f, "127.0.0.1:{port}"),
            Endpoint::Unix { path } => write!(f, "unix:{}", path.display()),
            Endpoint::Tls { host, port } => write!(f, "https://{host}:{port}"),
        }
    }
}

/// `$XDG_RUNTIME_DIR` (a folder of the user's own, usually in memory), else the
/// system's temporary folder.
pub fn default_socket_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The longest socket path the kernel takes (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A listening socket made for one worker, and the folder it lives in (removed, with
/// the socket, when this is dropped).
#[derive(Debug)]
pub(crate) struct WorkerSocket {
    pub(crate) listener: OwnedFd,
    pub(crate) endpoint: Endpoint,
    pub(crate) folder: Option<PrivateFolder>,
}

/// A loopback TCP socket on a free port.
pub(crate) fn tcp() -> io::Result<WorkerSocket> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let port = listener.local_addr()?.port();
    Ok(WorkerSocket {
        listener: listener.into(),
        endpoint: Endpoint::Tcp { port },
        folder: None,
    })
}

/// A Unix-domain socket in a fresh private folder under `parent`; a loopback TCP
/// socket when `parent` is too deep for a socket path.
pub(crate) fn unix_or_tcp(parent: &Path, plugin: &str) -> io::Result<WorkerSocket> {
    sweep_once(parent);
    // 16 hex digits: a name nobody can guess, for a folder only we may enter.
    let name = format!("{FOLDER_PREFIX}{}", cjm_interface::random_hex(8)?);
    let folder = parent.join(name);
    let path = folder.join(SOCKET_NAME);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        tracing::debug!(
            "plugin {plugin}: {} is too long for a Unix socket; using loopback TCP",
            path.display()
        );
        return tcp();
    }
    let at = |place: &Path| {
        let place = place.display().to_string();
        move |err: io::Error| io::Error::new(err.kind(), format!("{place}: {err}"))
    };
    std::fs::create_dir_all(parent).map_err(at(parent))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&folder)
        .map_err(at(&folder))?;
    let folder = PrivateFolder(folder);
    let listener = UnixListener::bind(&path).map_err(at(&path))?;
    Ok(WorkerSocket {
        listener: listener.into(),
        endpoint: Endpoint::Unix { path },
        folder: Some(folder),
    })
}

const FOLDER_PREFIX: &str = "cjm-";
const SOCKET_NAME: &str = "worker.sock";
/// A folder without its socket this long after it was made was abandoned while
/// being set up.
const SETUP_GRACE: Duration = Duration::from_secs(60);

/// Remove, once per folder and process, the socket folders of workers that are gone:
/// a host killed outright (SIGKILL, power loss) cannot remove its own.
fn sweep_once(parent: &Path) {
    static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock();
        if swept.iter().any(|done| done == parent) {
            return;
        }
        swept.push(parent.to_owned());
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_ours = name
            .to_str()
            .and_then(|name| name.strip_prefix(FOLDER_PREFIX))
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_ours && is_abandoned(&entry.path()) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::debug!(
                    "removed {}, left by a worker that is gone",
                    entry.path().display()
                ),
                Err(err) => tracing::debug!("cannot remove {}: {err}", entry.path().display()),
            }
        }
    }
}

/// Nobody listens on its socket any more (or it never got one), and it is older than
/// any setup takes. The age matters for a refused connection too: another host's
/// socket is bound a moment before it listens (two system calls), and a host that
/// sweeps in between would take a worker's folder from under it (seen with four
/// `cjm-ctl exec` started at once: the host then waited for a socket that was gone).
fn is_abandoned(folder: &Path) -> bool {
    let socket = folder.join(SOCKET_NAME);
    let nobody_listens = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => false,
        Err(err) => matches!(
            err.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
        ),
        // Not ours to enter, or busy: leave it.
    };
    nobody_listens
        && std::fs::metadata(folder)
            .and_then(|meta| meta.modified())
            .is_ok_and(|made| made.elapsed().is_ok_and(|age| age > SETUP_GRACE))
}

/// A folder removed with what is in it when dropped.
#[derive(Debug)]
pub(crate) struct PrivateFolder(PathBuf);

impl Drop for PrivateFolder {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {err}", self.0.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_unix_socket_lives_in_a_private_folder_removed_with_it() {
        let parent = tempfile::tempdir().unwrap();
        let socket = unix_or_tcp(parent.path(), "echo").unwrap();
        let Endpoint::Unix { path } = &socket.endpoint else {
            panic!("expected a Unix socket, got {}", socket.endpoint);
        };
        let folder = path.parent().unwrap().to_owned();
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(std::os::unix::net::UnixStream::connect(path).is_ok());
        drop(socket);
        assert!(!folder.exists());
    }

    #[test]
    fn folders_of_workers_that_are_gone_are_swept_once() {
        let parent = tempfile::tempdir().unwrap();
        let made = |name: &str, listening: bool| {
            let folder = parent.path().join(name);
            std::fs::create_dir(&folder).unwrap();
            let listener = UnixListener::bind(folder.join(SOCKET_NAME)).unwrap();
            (folder, listening.then_some(listener))
        };
        let (dead, _) = made("cjm-00000000000000aa", false);
        let (alive, _listener) = made("cjm-00000000000000bb", true);
        let (not_ours, _) = made("cjm-other", false);
        let setting_up = parent.path().join("cjm-00000000000000cc");
        std::fs::create_dir(&setting_up).unwrap();
        // Bound and not listening yet, as another host's socket is for a moment.
        let (binding, _) = made("cjm-00000000000000ee", false);
        let (alive_old, _old_listener) = made("cjm-00000000000000ff", true);
        for old in [&dead, &alive_old, &not_ours] {
            made_long_ago(old);
        }

        let socket = unix_or_tcp(parent.path(), "echo").unwrap();
        assert!(!dead.exists(), "nobody listens there, and for long");
        assert!(alive.exists() && alive_old.exists() && not_ours.exists());
        assert!(
            setting_up.exists() && binding.exists(),
            "still being set up"
        );
        drop(socket);

        // Once per folder and process: a second host start does not scan again.
        let (dead_later, _) = made("cjm-00000000000000dd", false);
        made_long_ago(&dead_later);
        drop(unix_or_tcp(parent.path(), "echo").unwrap());
        assert!(dead_later.exists());
    }

    /// Make `folder` look as if it was made before any setup's grace ran out.
    fn made_long_ago(folder: &Path) {
        let long_ago = std::time::SystemTime::now() - SETUP_GRACE * 2;
        std::fs::File::open(folder)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(long_ago))
            .unwrap();
    }

    #[test]
    fn an_unusable_socket_folder_is_named_in_the_error() {
        let parent = tempfile::tempdir().unwrap();
        let blocked = parent.path().join("not-a-folder");
        std::fs::write(&blocked, "").unwrap();
        let err = unix_or_tcp(&blocked, "echo").unwrap_err();
        assert!(err.to_string().contains("not-a-folder"), "{err}");
    }

    #[test]
    fn a_folder_too_deep_for_a_socket_path_gets_tcp() {
        let parent = tempfile::tempdir().unwrap();
        let deep = parent.path().join("d".repeat(100));
        let socket = unix_or_tcp(&deep, "echo").unwrap();
        assert!(matches!(socket.endpoint, Endpoint::Tcp { port } if port > 0));
        assert!(
            !deep.exists(),
            "nothing made for a socket that was not made"
        );
    }
}
