use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cjm_proxy::ProxyError;
use cjm_scheduling::{Refusal, StatsError};
use cjm_validation::InvalidConfig;

/// What went wrong in a manager operation; every variant names the plugin.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// No discovered manifest has this name.
    NotDiscovered { name: String, known: Vec<String> },
    /// The plugin is not loaded (never was, was unloaded, or failed to load).
    NotLoaded { name: String },
    /// A worker for this plugin is running or starting already.
    AlreadyLoaded { name: String },
    /// Another load, unload or reload of this plugin is under way.
    Busy { name: String },
    /// The plugin is disabled; enable it first.
    Disabled { name: String },
    /// The configuration breaks the plugin's config schema; nothing was started or
    /// sent. `errors` holds every violation.
    InvalidConfig { name: String, errors: InvalidConfig },
    /// The scheduler did not admit the execution.
    Refused(Refusal),
    /// Refused for GPU memory, and restarting idle GPU plugins (least recently used
    /// first) did not free enough.
    NotEnoughGpuMemory {
        refusal: Box<Refusal>,
        /// Plugins restarted to free memory, in the order they were.
        evicted: Vec<String>,
        /// GPU plugins left alone because they were executing.
        busy: Vec<String>,
    },
    /// The plugin's worker is dead and the restart policy does not (or no longer)
    /// bring it back; reload it.
    NotRunning {
        name: String,
        /// How it died, such as "was killed by signal 9".
        reason: String,
        restarts: u32,
        max_restarts: u32,
    },
    /// An execution took longer than its timeout.
    Timeout {
        name: String,
        after: Duration,
        /// Whether the worker was killed for it (see [`OnTimeout`](crate::OnTimeout)).
        worker_killed: bool,
    },
    /// Talking to the worker failed.
    Plugin(ProxyError),
    /// The plugin's log could not be read.
    Log {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// System statistics could not be read.
    Stats(StatsError),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::NotDiscovered { name, known } if known.is_empty() => {
                write!(
                    f,
                    "plugin {name} not found: no plugin manifests were discovered"
                )
            }
            ManagerError::NotDiscovered { name, known } => {
                write!(
                    f,
                    "plugin {name} not found; discovered: {}",
                    known.join(", ")
                )
            }
            ManagerError::NotLoaded { name } => write!(f, "plugin {name} is not loaded"),
            ManagerError::AlreadyLoaded { name } => write!(f, "plugin {name} is already loaded"),
            ManagerError::Busy { name } => {
                write!(
                    f,
                    "plugin {name} is being loaded, unloaded or reloaded; try again"
                )
            }
            ManagerError::Disabled { name } => write!(f, "plugin {name} is disabled"),
            ManagerError::InvalidConfig { name, errors } => write!(f, "plugin {name}: {errors}"),
            ManagerError::Refused(refusal) => write!(f, "{refusal}"),
            ManagerError::NotEnoughGpuMemory {
                refusal,
                evicted,
                busy,
            } => {
                write!(f, "{refusal}; ")?;
                if evicted.is_empty() {
                    write!(f, "no idle GPU plugin could be evicted")?;
                } else {
                    write!(
                        f,
                        "evicting idle GPU plugins {} did not free enough",
                        evicted.join(", ")
                    )?;
                }
                if !busy.is_empty() {
                    write!(f, " (executing, not evicted: {})", busy.join(", "))?;
                }
                Ok(())
            }
            ManagerError::NotRunning {
                name,
                reason,
                restarts,
                max_restarts,
            } => {
                write!(f, "plugin {name}: worker is not running (it {reason}); ")?;
                if *max_restarts == 0 {
                    write!(f, "reload it, or set a restart policy")
                } else {
                    write!(
                        f,
                        "gave up after {restarts} of {max_restarts} restarts; reload it"
                    )
                }
            }
            ManagerError::Timeout {
                name,
                after,
                worker_killed,
            } => {
                write!(
                    f,
                    "plugin {name}: execution did not finish within {after:?}"
                )?;
                if *worker_killed {
                    write!(f, "; its worker was killed")?;
                }
                Ok(())
            }
            ManagerError::Plugin(err) => write!(f, "{err}"),
            ManagerError::Log { name, path, source } => {
                write!(
                    f,
                    "plugin {name}: cannot read log {}: {source}",
                    path.display()
                )
            }
            ManagerError::Stats(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Wrapped errors are displayed in full above, so the chain continues with
        // their causes, not with them again.
        match self {
            ManagerError::InvalidConfig { errors, .. } => Some(errors),
            ManagerError::Plugin(err) => err.source(),
            ManagerError::Log { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ProxyError> for ManagerError {
    fn from(err: ProxyError) -> Self {
        ManagerError::Plugin(err)
    }
}

impl From<Refusal> for ManagerError {
    fn from(refusal: Refusal) -> Self {
        ManagerError::Refused(refusal)
    }
}
