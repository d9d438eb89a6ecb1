use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong between the host and one worker. Each variant names
/// the plugin; failures of the worker process carry the end of its log.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// The worker program could not be started at all (missing, not executable).
    Spawn {
        plugin: String,
        program: PathBuf,
        source: std::io::Error,
    },
    /// The log file could not be opened or written.
    Log {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// No secret could be made for the worker (the kernel's randomness unreadable).
    Secret {
        plugin: String,
        source: std::io::Error,
    },
    /// The listening socket for the worker could not be set up.
    Socket {
        plugin: String,
        source: std::io::Error,
    },
    /// The worker exited before it became ready.
    StartFailed {
        plugin: String,
        status: Option<ExitStatus>,
        log_tail: String,
    },
    /// The worker did not become ready in time (it has been stopped).
    StartTimeout {
        plugin: String,
        waited: Duration,
        log_tail: String,
    },
    /// The worker process ended while a call was in flight.
    WorkerDied {
        plugin: String,
        endpoint: &'static str,
        status: Option<ExitStatus>,
        log_tail: String,
    },
    /// The worker is not running (it ended earlier, or was stopped).
    NotRunning { plugin: String },
    /// The worker answered with an error status; `detail` is its explanation.
    Http {
        plugin: String,
        endpoint: &'static str,
        status: u16,
        detail: String,
        kind: Option<String>,
    },
    /// A stream failed after it started (its final `{"error": ..}` line).
    Stream { plugin: String, detail: String },
    /// The connection to the worker failed.
    Transport {
        plugin: String,
        endpoint: &'static str,
        reason: String,
    },
    /// The worker answered something that is not what the protocol says.
    InvalidResponse {
        plugin: String,
        endpoint: &'static str,
        reason: String,
    },
    /// The call did not finish in the time allowed.
    Timeout {
        plugin: String,
        endpoint: &'static str,
        after: Duration,
    },
    /// A file-backed argument could not be written to its temporary file.
    TempFile {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A blocking method was called from inside an async runtime, where it would
    /// stall the runtime; use the async method there.
    BlockingInAsync { plugin: String },
}

impl ProxyError {
    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            ProxyError::Spawn { plugin, .. }
            | ProxyError::Log { plugin, .. }
            | ProxyError::Socket { plugin, .. }
            | ProxyError::Secret { plugin, .. }
            | ProxyError::StartFailed { plugin, .. }
            | ProxyError::StartTimeout { plugin, .. }
            | ProxyError::WorkerDied { plugin, .. }
            | ProxyError::NotRunning { plugin }
            | ProxyError::Http { plugin, .. }
            | ProxyError::Stream { plugin, .. }
            | ProxyError::Transport { plugin, .. }
            | ProxyError::InvalidResponse { plugin, .. }
            | ProxyError::Timeout { plugin, .. }
            | ProxyError::TempFile { plugin, .. }
            | ProxyError::BlockingInAsync { plugin } => plugin,
        }
    }

    /// Whether the worker process is gone (so the plugin needs a restart).
    pub fn is_worker_gone(&self) -> bool {
        matches!(
            self,
            ProxyError::WorkerDied { .. }
                | ProxyError::NotRunning { .. }
                | ProxyError::StartFailed { .. }
        )
    }
}

pub(crate) fn describe_status(status: &Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => format!("ended ({status})"),
        },
        None => String::from("ended"),
    }
}

fn with_log(log_tail: &str) -> String {
    if log_tail.trim().is_empty() {
        String::from(" (its log is empty)")
    } else {
        format!("; last lines of its log:\n{log_tail}")
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Spawn {
                plugin,
                program,
                source,
            } => {
                write!(
                    f,
                    "plugin {plugin}: cannot start {}: {source}",
                    program.display()
                )
            }
            ProxyError::Log {
                plugin,
                path,
                source,
            } => {
                write!(f, "plugin {plugin}: log file {}: {source}", path.display())
            }
            ProxyError::Socket { plugin, source } => {
                write!(
                    f,
                    "plugin {plugin}: cannot open a socket for the worker: {source}"
                )
            }
            ProxyError::Secret { plugin, source } => write!(
                f,
                "plugin {plugin}: cannot read /dev/urandom for the worker's access secret: {source}"
            ),
            ProxyError::StartFailed {
                plugin,
                status,
                log_tail,
            } => write!(
                f,
                "plugin {plugin}: worker {} before it was ready{}",
                describe_status(status),
                with_log(log_tail)
            ),
            ProxyError::StartTimeout {
                plugin,
                waited,
                log_tail,
            } => write!(
                f,
                "plugin {plugin}: worker not ready after {waited:?}, stopped it{}",
                with_log(log_tail)
            ),
            ProxyError::WorkerDied {
                plugin,
                endpoint,
                status,
                log_tail,
            } => write!(
                f,
                "plugin {plugin}: worker {} during {endpoint}{}",
                describe_status(status),
                with_log(log_tail)
            ),
            ProxyError::NotRunning { plugin } => {
                write!(f, "plugin {plugin}: worker is not running")
            }
            ProxyError::Http {
                plugin,
                endpoint,
                status,
                detail,
                ..
            } => {
                write!(f, "plugin {plugin}: {endpoint} failed ({status}): {detail}")
            }
            ProxyError::Stream { plugin, detail } => {
                write!(f, "plugin {plugin}: stream failed: {detail}")
            }
            ProxyError::Transport {
                plugin,
                endpoint,
                reason,
            } => {
                write!(
                    f,
                    "plugin {plugin}: {endpoint}: connection to worker failed: {reason}"
                )
            }
            ProxyError::InvalidResponse {
                plugin,
                endpoint,
                reason,
            } => {
                write!(
                    f,
                    "plugin {plugin}: {endpoint}: invalid answer from worker: {reason}"
                )
            }
            ProxyError::Timeout {
                plugin,
                endpoint,
                after,
            } => {
                write!(
                    f,
                    "plugin {plugin}: {endpoint} did not finish within {after:?}"
                )
            }
            ProxyError::TempFile {
                plugin,
                path,
                source,
            } => write!(
                f,
                "plugin {plugin}: cannot write file-backed argument to {}: {source}",
                path.display()
            ),
            ProxyError::BlockingInAsync { plugin } => write!(
                f,
                "plugin {plugin}: blocking call made inside an async runtime; use the async method"
            ),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Spawn { source, .. }
            | ProxyError::Log { source, .. }
            | ProxyError::Socket { source, .. }
            | ProxyError::Secret { source, .. }
            | ProxyError::TempFile { source, .. } => Some(source),
            _ => None,
        }
    }
}
