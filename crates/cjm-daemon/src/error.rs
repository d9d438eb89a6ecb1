//! Why the daemon could not start or serve.

use std::net::SocketAddr;
use std::path::PathBuf;

use cjm_manager::jobs::JobsError;
use cjm_manager::ManagerError;

/// Why the daemon could not start, or stopped serving before it was asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Another daemon serves this home.
    #[error("another daemon serves {home} already: {holder} holds its lock {lock}")]
    AlreadyRunning {
        /// The home.
        home: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as far as its file says (`pid 1234`).
        holder: String,
    },
    /// A file or folder of the daemon's could not be made or used.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// With which file or folder.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A TCP address other than loopback was asked for without TLS.
    #[error(
        "--listen {addr}: an address other than loopback (127.0.0.1, ::1) is served \
         only over TLS: give --tls-cert PEM and --tls-key PEM, or --tls-self-signed \
         to make a certificate in $CJM_HOME/daemon-tls/"
    )]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A TLS listener was asked for with no certificate to serve.
    #[error("{listen}: TLS needs a certificate and its key (DaemonOptions::tls)")]
    NoTlsMaterial {
        /// Where it was to listen.
        listen: String,
    },
    /// The TLS certificate or key could not be read, made or used.
    #[error("TLS: {what} {}: {detail}", path.display())]
    Tls {
        /// What was being done.
        what: &'static str,
        /// With which file or folder.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The token file holds something other than a token.
    #[error(
        "{}: not a daemon token (64 or more hex digits); delete it to have a new one \
         made at the next start",
        path.display()
    )]
    BadToken {
        /// The file.
        path: PathBuf,
    },
    /// The system's random numbers could not be read.
    #[error("cannot read random bytes for a token: {0}")]
    Random(std::io::Error),
    /// The TCP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The home could not be found (CJM_HOME, HOME).
    #[error(transparent)]
    Home(#[from] cjm_metadata::HomeError),
    /// The job queue could not be opened (its journal).
    #[error("cannot open the job queue: {0}")]
    Jobs(Box<JobsError>),
    /// A plugin named with `--load` could not be loaded.
    #[error("cannot load plugin {name}: {source}")]
    Load {
        /// The plugin.
        name: String,
        /// Why (boxed: the manager's errors are large, and this one is rare).
        source: Box<ManagerError>,
    },
    /// The signal handlers could not be installed.
    #[error("cannot watch for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
}

impl From<JobsError> for DaemonError {
    fn from(err: JobsError) -> Self {
        DaemonError::Jobs(Box::new(err))
    }
}
