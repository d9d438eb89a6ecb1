use std::path::PathBuf;
use std::time::Duration;

use cjm_interface::ErrorCategory;
use cjm_proxy::ProxyError;
use cjm_scheduling::{Refusal, StatsError};
use cjm_validation::InvalidConfig;

/// What went wrong in a manager operation; every variant names the plugin. Each cause
/// is either part of the message or its [`source`](std::error::Error::source), never
/// both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No discovered manifest has this name.
    #[error("plugin {name} not found{}", known_plugins(known))]
    NotDiscovered {
        /// The name asked for.
        name: String,
        /// The names that were discovered.
        known: Vec<String>,
    },
    /// The plugin is not loaded (never was, was unloaded, or failed to load).
    #[error("plugin {name} is not loaded")]
    NotLoaded {
        /// The plugin's name.
        name: String,
    },
    /// A worker for this plugin is running or starting already.
    #[error("plugin {name} is already loaded")]
    AlreadyLoaded {
        /// The plugin's name.
        name: String,
    },
    /// Another load of this plugin is under way.
    #[error("plugin {name} is being loaded; try again")]
    Busy {
        /// The plugin's name.
        name: String,
    },
    /// The plugin is disabled; enable it first.
    #[error("plugin {name} is disabled")]
    Disabled {
        /// The plugin's name.
        name: String,
    },
    /// The configuration breaks the plugin's config schema; nothing was started or
    /// sent. `errors` holds every violation.
    #[error("plugin {name}: {errors}")]
    InvalidConfig {
        /// The plugin's name.
        name: String,
        /// Every violation.
        errors: InvalidConfig,
    },
    /// An instance name that cannot be used.
    #[error("plugin {plugin}: cannot load it as instance {instance:?}: {reason}")]
    BadInstance {
        /// The plugin.
        plugin: String,
        /// The instance name asked for.
        instance: String,
        /// Why not.
        reason: String,
    },
    /// The scheduler did not admit the execution.
    #[error(transparent)]
    Refused(Refusal),
    /// Refused for GPU memory, and stopping idle GPU plugins (least recently used
    /// first) did not free enough.
    #[error("{refusal}; {}", eviction_summary(evicted, busy))]
    NotEnoughGpuMemory {
        /// The scheduler's last refusal.
        refusal: Box<Refusal>,
        /// Plugins stopped to free memory, in the order they were.
        evicted: Vec<String>,
        /// GPU plugins left alone because they were executing.
        busy: Vec<String>,
    },
    /// The plugin's worker is dead and the restart policy does not (or no longer)
    /// bring it back; reload it.
    #[error("plugin {name}: worker is not running (it {reason}); {}", restart_advice(*restarts, *max_restarts))]
    NotRunning {
        /// The plugin's name.
        name: String,
        /// How it died, such as "was killed by signal 9".
        reason: String,
        /// Restarts since the last load or reload.
        restarts: u32,
        /// The restart policy's limit.
        max_restarts: u32,
    },
    /// An execution took longer than its timeout.
    #[error("plugin {name}: execution did not finish within {after:?}{}", if *worker_killed { "; its worker was killed" } else { "" })]
    Timeout {
        /// The plugin's name.
        name: String,
        /// The limit.
        after: Duration,
        /// Whether the worker was killed for it (see [`OnTimeout`](crate::OnTimeout)).
        worker_killed: bool,
    },
    /// Talking to the worker failed.
    #[error(transparent)]
    Plugin(#[from] ProxyError),
    /// Where the plugin's worker runs could not be set up (its manifest's `attach` or
    /// `placement`).
    #[error("plugin {name}: cannot set up where its worker runs")]
    Placement {
        /// The plugin's name.
        name: String,
        /// Why (boxed: it may carry a large Ray error).
        #[source]
        source: Box<crate::launch::PlacementSetupError>,
    },
    /// The plugin's declared worker environment could not be given to it (a required
    /// variable or secret missing, an unreadable secret store).
    #[error("plugin {name}")]
    WorkerEnv {
        /// The plugin's name.
        name: String,
        /// Why.
        #[source]
        source: Box<crate::launch::WorkerEnvError>,
    },
    /// The plugin's log could not be read.
    #[error("plugin {name}: cannot read its log {}", path.display())]
    Log {
        /// The plugin's name.
        name: String,
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// System statistics could not be read.
    #[error(transparent)]
    Stats(StatsError),
    /// A prefetch's progress did not change for its stall time: its worker was
    /// killed and started again.
    #[error("plugin {name}: prefetch made no progress for {after:?}; its worker was restarted")]
    PrefetchStalled {
        /// The plugin's name.
        name: String,
        /// The stall time.
        after: Duration,
    },
    /// The plugin's prefetch hook failed.
    #[error("plugin {name}: prefetch failed: {reason}")]
    PrefetchFailed {
        /// The plugin's name.
        name: String,
        /// What the worker said.
        reason: String,
    },
    /// The host store (kept configurations, learned profiles) or a file imported into
    /// it could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ManagerError {
    /// The failure's category, in the original's words; `None` for a cancelled call,
    /// which is no failure. What a host does about it: fix the input (`user_input`),
    /// try again (`transient`), free resources or wait (`resource`), or give up
    /// (`fatal`). A worker killed by SIGKILL (the kernel's OOM killer sends it) is
    /// `resource`; a scheduler's refusal is `resource`; an invalid configuration or
    /// an unknown plugin is `user_input`.
    pub fn category(&self) -> Option<ErrorCategory> {
        Some(match self {
            ManagerError::Plugin(err) => return err.category(),
            ManagerError::NotDiscovered { .. }
            | ManagerError::NotLoaded { .. }
            | ManagerError::Disabled { .. }
            | ManagerError::InvalidConfig { .. }
            | ManagerError::Placement { .. }
            | ManagerError::WorkerEnv { .. }
            | ManagerError::BadInstance { .. }
            | ManagerError::AlreadyLoaded { .. } => ErrorCategory::UserInput,
            ManagerError::Busy { .. } | ManagerError::Timeout { .. } => ErrorCategory::Transient,
            ManagerError::Refused(_)
            | ManagerError::NotEnoughGpuMemory { .. }
            | ManagerError::Stats(_) => ErrorCategory::Resource,
            ManagerError::PrefetchStalled { .. } => ErrorCategory::Transient,
            ManagerError::NotRunning { .. }
            | ManagerError::Log { .. }
            | ManagerError::Store(_)
            | ManagerError::PrefetchFailed { .. } => ErrorCategory::Fatal,
        })
    }

    /// Whether trying again may help: the worker's own word when it sent a typed
    /// error, else the original's default for the category (all but `fatal`).
    pub fn retriable(&self) -> bool {
        if let ManagerError::Plugin(ProxyError::Http {
            job_error: Some(job_error),
            ..
        }) = self
        {
            return job_error.retriable;
        }
        // More than the machine has in all, or than the plugin's limit: never.
        if let ManagerError::Refused(refusal) = self {
            if refusal.is_never_admissible() {
                return false;
            }
        }
        self.category()
            .is_some_and(ErrorCategory::retriable_by_default)
    }

    /// Whether the call was cancelled (and stopped), rather than failed.
    pub fn is_cancellation(&self) -> bool {
        matches!(self, ManagerError::Plugin(ProxyError::Cancelled { .. }))
    }
}

fn known_plugins(known: &[String]) -> String {
    if known.is_empty() {
        String::from(": no plugin manifests were discovered")
    } else {
        format!("; discovered: {}", known.join(", "))
    }
}

fn eviction_summary(evicted: &[String], busy: &[String]) -> String {
    let mut text = if evicted.is_empty() {
        String::from("no idle GPU plugin could be evicted")
    } else {
        format!(
            "evicting idle GPU plugins {} did not free enough",
            evicted.join(", ")
        )
    };
    if !busy.is_empty() {
        text.push_str(&format!(" (executing, not evicted: {})", busy.join(", ")));
    }
    text
}

fn restart_advice(restarts: u32, max_restarts: u32) -> String {
    if max_restarts == 0 {
        String::from("reload it, or set a restart policy")
    } else {
        format!("gave up after {restarts} of {max_restarts} restarts; reload it")
    }
}

impl From<Refusal> for ManagerError {
    fn from(refusal: Refusal) -> Self {
        ManagerError::Refused(refusal)
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn assert_said_once(err: &(dyn std::error::Error + 'static)) -> String {
        let chain = cjm_interface::ErrorChain(err);
        assert_eq!(chain.repeated_clause(), None, "in {chain}");
        chain.to_string()
    }

    #[test]
    fn every_cause_is_said_once() {
        let missing = || io::Error::new(io::ErrorKind::NotFound, "No such file or directory");
        let errors = [
            ManagerError::Log {
                name: "echo".into(),
                path: "/x/echo.log".into(),
                source: missing(),
            },
            ManagerError::Plugin(ProxyError::Spawn {
                plugin: "echo".into(),
                program: "/bin/echo-plugin".into(),
                source: missing(),
            }),
            ManagerError::Plugin(ProxyError::TempFile {
                plugin: "echo".into(),
                path: "/tmp/x".into(),
                source: missing(),
            }),
            ManagerError::NotRunning {
                name: "echo".into(),
                reason: "was killed by signal 9".into(),
                restarts: 1,
                max_restarts: 1,
            },
        ];
        for err in &errors {
            assert_said_once(err);
        }
        // The I/O cause is reachable for callers that look for it.
        assert!(std::error::Error::source(&errors[0]).is_some());
        assert_eq!(
            cjm_interface::ErrorChain(&errors[1]).to_string(),
            "plugin echo: cannot start /bin/echo-plugin: No such file or directory"
        );
    }
}
