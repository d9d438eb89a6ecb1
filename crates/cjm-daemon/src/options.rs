//! What a daemon is started with.

use std::path::PathBuf;
use std::time::Duration;

use cjm_manager::jobs::JobOptions;
use cjm_manager::ManagerOptions;

use crate::error::DaemonError;
use crate::listen::Listen;
use crate::tls_listen::TlsSource;

/// Which plugins are loaded when the daemon starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LoadAtStart {
    /// None: the API loads them.
    #[default]
    Nothing,
    /// These, each of which must load or the daemon does not start.
    Named(Vec<String>),
    /// Every plugin discovered; one that fails to load is logged and left out, so
    /// that one broken manifest does not keep the others from being served.
    All,
}

/// A daemon's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DaemonOptions {
    /// The manager's (its home is the daemon's: the lock, the socket, the journal).
    pub manager: ManagerOptions,
    /// The job queue's.
    pub jobs: JobOptions,
    /// Where the API is served.
    pub listen: Listen,
    /// Plugins loaded at start.
    pub load: LoadAtStart,
    /// How long running jobs may go on after SIGTERM before they are cancelled.
    pub grace: Duration,
    /// Events kept for clients that reconnect with `Last-Event-ID`.
    pub event_buffer: usize,
    /// The most bytes a request body may have (413 beyond).
    pub max_body: usize,
    /// The certificate of a [`Listen::Tls`] listener (required there, unused
    /// elsewhere).
    pub tls: Option<TlsSource>,
}

/// A request body's default bound: far above any JSON call, far below what hurts.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

impl DaemonOptions {
    /// Defaults for a manager's options: the Unix socket `daemon.sock` in its home,
    /// nothing loaded, 30 s of grace.
    pub fn new(manager: ManagerOptions) -> Self {
        let socket = manager.home.root().join("daemon.sock");
        DaemonOptions {
            manager,
            jobs: JobOptions::default(),
            listen: Listen::Unix(socket),
            load: LoadAtStart::Nothing,
            grace: Duration::from_secs(30),
            event_buffer: 4096,
            max_body: DEFAULT_MAX_BODY,
            tls: None,
        }
    }

    /// [`new`](Self::new) with the manager's options from the environment (CJM_HOME).
    pub fn from_env() -> Result<Self, DaemonError> {
        Ok(Self::new(ManagerOptions::from_env()?))
    }

    /// The bearer token's file in its home (0600), made at the first start.
    pub fn token_path(&self) -> PathBuf {
        self.manager.home.root().join(crate::token::TOKEN_FILE)
    }

    /// The daemon's lock file in its home.
    pub fn lock_path(&self) -> PathBuf {
        self.manager.home.root().join("daemon.lock")
    }
}
