use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use cjm_interface::wire::JobError;
use cjm_interface::{ErrorCategory, ErrorKind};

/// Everything that can go wrong between the host and one worker. Each variant names
/// the plugin; failures of the worker process carry the end of its log. An I/O cause
/// is the error's [`source`](std::error::Error::source), not repeated in its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The worker could not be placed (attached, or started as a Ray job).
    #[error("plugin {plugin}: cannot place its worker ({placement})")]
    Placement {
        /// The plugin's name.
        plugin: String,
        /// The placement, in words (`attach host:port`, `ray http://head:8265`).
        placement: String,
        /// What went wrong (boxed: Ray's errors are large, and every result of the
        /// proxy carries this type).
        #[source]
        source: Box<PlacementError>,
    },
    /// The worker program could not be started at all (missing, not executable).
    #[error("plugin {plugin}: cannot start {}", program.display())]
    Spawn {
        /// The plugin's name.
        plugin: String,
        /// The program that was to be run.
        program: PathBuf,
        /// Why it could not be run.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be opened or written.
    #[error("plugin {plugin}: cannot open its log file {}", path.display())]
    Log {
        /// The plugin's name.
        plugin: String,
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No secret could be made for the worker (the system's randomness unreadable).
    #[error("plugin {plugin}: cannot make the worker's access secret")]
    Secret {
        /// The plugin's name.
        plugin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket for the worker could not be set up.
    #[error("plugin {plugin}: cannot open a socket for the worker")]
    Socket {
        /// The plugin's name.
        plugin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker exited before it became ready.
    #[error(
        "plugin {plugin}: worker {} before it was ready{}",
        describe_status(status),
        with_log(log_tail)
    )]
    StartFailed {
        /// The plugin's name.
        plugin: String,
        /// How the worker ended, if known.
        status: Option<ExitStatus>,
        /// The end of the worker's log for this start.
        log_tail: String,
    },
    /// The worker did not become ready in time (it has been stopped).
    #[error(
        "plugin {plugin}: worker not ready after {waited:?}, stopped it{}",
        with_log(log_tail)
    )]
    StartTimeout {
        /// The plugin's name.
        plugin: String,
        /// How long the host waited.
        waited: Duration,
        /// The end of the worker's log for this start.
        log_tail: String,
    },
    /// The worker process ended while a call was in flight.
    #[error(
        "plugin {plugin}: worker {} during {endpoint}{}",
        describe_status(status),
        with_log(log_tail)
    )]
    WorkerDied {
        /// The plugin's name.
        plugin: String,
        /// The endpoint of the call in flight.
        endpoint: &'static str,
        /// How the worker ended, if known.
        status: Option<ExitStatus>,
        /// The end of the worker's log for this run.
        log_tail: String,
    },
    /// The worker is not running (it ended earlier, or was stopped).
    #[error("plugin {plugin}: worker is not running")]
    NotRunning {
        /// The plugin's name.
        plugin: String,
    },
    /// The worker answered with an error status; `detail` is its explanation.
    #[error("plugin {plugin}: {endpoint} failed ({status}): {detail}")]
    Http {
        /// The plugin's name.
        plugin: String,
        /// The endpoint that failed.
        endpoint: &'static str,
        /// The HTTP status.
        status: u16,
        /// The worker's explanation (`detail` of its error body).
        detail: String,
        /// The error's class (`kind` of our workers' error bodies).
        kind: Option<String>,
        /// The typed error (`_job_error`) of workers that send one.
        job_error: Option<Box<JobError>>,
    },
    /// The worker serves no adapter for the task, or its adapter has no such method
    /// (`/task` answered 404); `detail` says what it does serve.
    #[error("plugin {plugin}: no task {task:?} method {method:?}: {detail}")]
    UnknownTask {
        /// The plugin's name.
        plugin: String,
        /// The task asked for.
        task: String,
        /// The method asked for.
        method: String,
        /// The worker's explanation, naming what is bound.
        detail: String,
    },
    /// A task call was given positional arguments: task methods take keyword ones.
    #[error("plugin {plugin}: task {task:?} method {method:?} takes keyword arguments only, got {positional} positional")]
    TaskArguments {
        /// The plugin's name.
        plugin: String,
        /// The task.
        task: String,
        /// The method.
        method: String,
        /// How many positional arguments were given.
        positional: usize,
    },
    /// The call was cancelled and stopped (the worker answered 409, or its stream
    /// ended with a cancellation).
    #[error("plugin {plugin}: {endpoint} was cancelled: {detail}")]
    Cancelled {
        /// The plugin's name.
        plugin: String,
        /// The endpoint of the call.
        endpoint: &'static str,
        /// The worker's words.
        detail: String,
    },
    /// A stream failed after it started (its final error line).
    #[error("plugin {plugin}: stream failed: {detail}")]
    Stream {
        /// The plugin's name.
        plugin: String,
        /// The worker's explanation.
        detail: String,
        /// The typed error (`_job_error`) of workers that send one.
        job_error: Option<Box<JobError>>,
    },
    /// The connection to the worker failed.
    #[error("plugin {plugin}: {endpoint}: connection to worker failed: {reason}")]
    Transport {
        /// The plugin's name.
        plugin: String,
        /// The endpoint of the call.
        endpoint: &'static str,
        /// What the connection reported.
        reason: String,
    },
    /// The worker answered something that is not what the protocol says.
    #[error("plugin {plugin}: {endpoint}: invalid answer from worker: {reason}")]
    InvalidResponse {
        /// The plugin's name.
        plugin: String,
        /// The endpoint of the call.
        endpoint: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The call did not finish in the time allowed.
    #[error("plugin {plugin}: {endpoint} did not finish within {after:?}")]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The endpoint of the call.
        endpoint: &'static str,
        /// The limit.
        after: Duration,
    },
    /// A file-backed argument could not be written to its temporary file.
    #[error("plugin {plugin}: cannot write a file-backed argument to {}", path.display())]
    TempFile {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A blocking method was called from inside an async runtime, where it would
    /// stall the runtime; use the async method there.
    #[error("plugin {plugin}: blocking call made inside an async runtime; use the async method")]
    BlockingInAsync {
        /// The plugin's name.
        plugin: String,
    },
}

impl ProxyError {
    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            ProxyError::Spawn { plugin, .. }
            | ProxyError::Placement { plugin, .. }
            | ProxyError::Log { plugin, .. }
            | ProxyError::Socket { plugin, .. }
            | ProxyError::Secret { plugin, .. }
            | ProxyError::StartFailed { plugin, .. }
            | ProxyError::StartTimeout { plugin, .. }
            | ProxyError::WorkerDied { plugin, .. }
            | ProxyError::NotRunning { plugin }
            | ProxyError::Http { plugin, .. }
            | ProxyError::Cancelled { plugin, .. }
            | ProxyError::Stream { plugin, .. }
            | ProxyError::Transport { plugin, .. }
            | ProxyError::InvalidResponse { plugin, .. }
            | ProxyError::Timeout { plugin, .. }
            | ProxyError::TempFile { plugin, .. }
            | ProxyError::UnknownTask { plugin, .. }
            | ProxyError::TaskArguments { plugin, .. }
            | ProxyError::BlockingInAsync { plugin } => plugin,
        }
    }

    /// What kind of failure this is, in the original's categories: the worker's own
    /// word when it sent a typed error; else the caller's mistake for a 400,
    /// `resource` for a worker killed by SIGKILL (the kernel's OOM killer sends it),
    /// `transient` for a broken connection, a timeout or another death, `fatal` for
    /// the rest. `None` for a cancelled call, which is no failure.
    pub fn category(&self) -> Option<ErrorCategory> {
        use std::os::unix::process::ExitStatusExt;
        let typed = |job_error: &Option<Box<JobError>>| {
            job_error
                .as_ref()
                .and_then(|job_error| job_error.category())
        };
        Some(match self {
            ProxyError::Cancelled { .. } => return None,
            ProxyError::Http { job_error, .. } | ProxyError::Stream { job_error, .. }
                if typed(job_error).is_some() =>
            {
                return typed(job_error);
            }
            ProxyError::Http { kind, status, .. } => {
                match kind.as_deref().and_then(ErrorKind::from_name) {
                    Some(kind) => kind.category(),
                    None if (400..500).contains(status) => ErrorCategory::UserInput,
                    None => ErrorCategory::Fatal,
                }
            }
            ProxyError::WorkerDied { status, .. }
                if status.and_then(|status| status.signal()) == Some(9) =>
            {
                ErrorCategory::Resource
            }
            ProxyError::WorkerDied { .. }
            | ProxyError::Transport { .. }
            | ProxyError::Timeout { .. }
            | ProxyError::NotRunning { .. } => ErrorCategory::Transient,
            ProxyError::TempFile { .. } | ProxyError::Log { .. } => ErrorCategory::Resource,
            ProxyError::UnknownTask { .. } | ProxyError::TaskArguments { .. } => {
                ErrorCategory::UserInput
            }
            ProxyError::Placement { source, .. } => match **source {
                // Someone else answering for the dashboard: asking again sends nothing
                // better.
                #[cfg(feature = "ray")]
                PlacementError::Ray(cjm_ray::RayError::Untrusted { .. }) => ErrorCategory::Fatal,
                #[cfg(feature = "ray")]
                PlacementError::Ray(_) => ErrorCategory::Transient,
                PlacementError::Connect(_) => ErrorCategory::Transient,
                _ => ErrorCategory::Fatal,
            },
            ProxyError::Spawn { .. }
            | ProxyError::Secret { .. }
            | ProxyError::Socket { .. }
            | ProxyError::StartFailed { .. }
            | ProxyError::StartTimeout { .. }
            | ProxyError::Stream { .. }
            | ProxyError::InvalidResponse { .. }
            | ProxyError::BlockingInAsync { .. } => ErrorCategory::Fatal,
        })
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

/// Why a worker could not be placed elsewhere than on this host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// The worker's address is not one.
    #[error("{url:?} is not a worker address: {reason}")]
    BadUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bearer secret that cannot be sent as a header.
    #[error("the worker's secret is not a valid header value")]
    BadSecret,
    /// The TLS set-up failed.
    #[error("TLS set-up failed")]
    Tls(#[source] cjm_tls::TlsError),
    /// The worker could not be reached, or presented another certificate.
    #[error("cannot reach the worker")]
    Connect(#[source] cjm_tls::TlsConnectError),
    /// Ray refused or failed.
    #[cfg(feature = "ray")]
    #[error("Ray")]
    Ray(#[source] cjm_ray::RayError),
    /// The plugin's program could not be packaged for shipping.
    #[error("cannot package the plugin's program: {0}")]
    Package(String),
    /// A secret variable would be put where others can read it.
    #[error(
        "its environment variable {name} is a secret, and a Ray job's env_vars can be \
         read by anyone who can read the job; Ray-placed workers take no secrets"
    )]
    SecretInJob {
        /// The variable.
        name: String,
    },
}
