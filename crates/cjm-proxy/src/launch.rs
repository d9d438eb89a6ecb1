//! Starting a worker process: its command line, environment, log and socket.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::wire;
use hyper::header::HeaderValue;

use crate::endpoint::{self, Endpoint, PrivateFolder, WorkerSocket};
use crate::placement::{LocalSpawn, Placement, Shortfall};
use crate::process::WorkerProcess;
use crate::{log, spawner, ProxyError};

/// A worker's access secret: 256 random bits, as 64 hex digits.
const SECRET_BYTES: usize = 32;

/// The descriptor number an inherited listening socket gets in the worker.
const INHERITED_LISTEN_FD: i32 = 3;

/// Everything needed to start one worker. The proxy appends `--port P --ppid PID`.
/// Made with [`LaunchSpec::new`]; fields may be added in later releases.
///
/// Its `Debug` shows the value of no variable named in
/// [`secret_env`](Self::secret_env), so that a spec can be logged.
#[derive(Clone)]
#[non_exhaustive]
pub struct LaunchSpec {
    /// The plugin's name, for errors and the log header.
    pub plugin: String,
    /// The program to run (never through a shell).
    pub program: PathBuf,
    /// Its arguments, before the `--port` and `--ppid` the proxy adds.
    pub args: Vec<String>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// stdout and stderr of the worker are appended here. They hold the plugin's
    /// output: the file is made (or put back to) mode 0600 and a folder made for it
    /// 0700; an existing folder of this user's is closed to others too, unless it is
    /// shared (sticky, as `/tmp` is).
    pub log_path: PathBuf,
    /// How the worker gets its listening socket.
    pub listen: ListenMode,
    /// How long the worker may take to answer `/health` before it is stopped.
    pub start_timeout: Duration,
    /// Where file-backed arguments are written.
    pub temp_dir: PathBuf,
    /// Where a Unix socket for the worker is made, in a private folder of its own.
    pub socket_dir: PathBuf,
    /// Where the worker runs: [`LocalSpawn`] (the default), [`Attach`](crate::Attach)
    /// or [`RayPlacement`](crate::RayPlacement).
    pub placement: Arc<dyn Placement>,
    /// The names of the variables in `env` that are secret: a placement that would
    /// put them where others can read them refuses to start the worker.
    pub secret_env: Vec<String>,
    /// Called while a placement waits for resources that stopping a worker placed the
    /// same way would free (a Ray job pending for GPU memory), with what is missing
    /// where: the host may stop one idle worker there. Not called again for the same
    /// wait until what that stop freed was seen free.
    pub on_waiting: Option<WaitingHook>,
}

/// What a [`WaitingHook`] returns: the name of the worker it stopped, if any.
pub type WaitingFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

// By hand: `env` holds the secrets' values, and a spec is the kind of value that gets
// logged with `{:?}` when a start fails.
impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Env<'a>(&'a LaunchSpec);
        impl std::fmt::Debug for Env<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut map = f.debug_map();
                for (name, value) in &self.0.env {
                    if self.0.secret_env.iter().any(|secret| secret == name) {
                        map.entry(name, &format_args!("<redacted>"));
                    } else {
                        map.entry(name, value);
                    }
                }
                map.finish()
            }
        }
        f.debug_struct("LaunchSpec")
            .field("plugin", &self.plugin)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &Env(self))
            .field("log_path", &self.log_path)
            .field("listen", &self.listen)
            .field("start_timeout", &self.start_timeout)
            .field("temp_dir", &self.temp_dir)
            .field("socket_dir", &self.socket_dir)
            .field("placement", &self.placement)
            .field("secret_env", &self.secret_env)
            .field("on_waiting", &self.on_waiting)
            .finish()
    }
}

/// See [`LaunchSpec::on_waiting`].
#[derive(Clone)]
// Called only by Ray placement (cargo feature `ray`).
#[cfg_attr(not(feature = "ray"), allow(dead_code))]
pub struct WaitingHook(Arc<dyn Fn(Shortfall) -> WaitingFuture + Send + Sync>);

impl WaitingHook {
    /// A hook calling `hook` with what the placement waits for; its future says which
    /// worker it stopped to free that, if it stopped one. The placement may stop
    /// waiting on it at any time: work that must finish runs on a task of its own.
    pub fn new(hook: impl Fn(Shortfall) -> WaitingFuture + Send + Sync + 'static) -> Self {
        WaitingHook(Arc::new(hook))
    }

    #[cfg(feature = "ray")]
    pub(crate) fn call(&self, shortfall: Shortfall) -> WaitingFuture {
        (self.0)(shortfall)
    }
}

impl std::fmt::Debug for WaitingHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WaitingHook")
    }
}

impl LaunchSpec {
    /// A spec with the defaults: an inherited Unix socket in
    /// [`default_socket_dir`](crate::default_socket_dir), 30 s to start, the system's
    /// temporary folder.
    pub fn new(
        plugin: impl Into<String>,
        program: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> Self {
        LaunchSpec {
            plugin: plugin.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log_path: log_path.into(),
            listen: ListenMode::InheritUnixSocket,
            start_timeout: Duration::from_secs(30),
            temp_dir: std::env::temp_dir(),
            socket_dir: endpoint::default_socket_dir(),
            placement: Arc::new(LocalSpawn),
            secret_env: Vec::new(),
            on_waiting: None,
        }
    }
}

/// How the worker gets its listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenMode {
    /// The host makes a Unix-domain socket in a private folder under the spec's
    /// `socket_dir` and hands it over (native workers): faster than loopback TCP, and no
    /// other local user can connect. Loopback TCP when that folder's path is too long
    /// for a socket.
    InheritUnixSocket,
    /// The host binds `127.0.0.1:0` and hands the socket over: no port race, and the
    /// host can connect before the worker is up.
    InheritSocket,
    /// The worker binds `--port` itself (the original's Python worker before 0.0.46).
    /// The port is chosen free but could be taken before the worker binds it.
    WorkerBinds,
    /// As [`InheritUnixSocket`](Self::InheritUnixSocket), named to the worker with
    /// `--fd 3` instead of `--port` (the original 0.0.46's Python worker, which serves
    /// the socket it is given with uvicorn and checks no secret: the socket's private
    /// folder is what keeps other users out).
    InheritUnixSocketByFdArg,
}

pub(crate) struct Spawned {
    pub(crate) process: WorkerProcess,
    pub(crate) endpoint: Endpoint,
    /// Holds a Unix socket's folder until the proxy is done with the worker.
    pub(crate) socket_folder: Option<PrivateFolder>,
    pub(crate) log_start: u64,
    /// `Bearer <secret>`, for a worker that was given one.
    pub(crate) authorization: Option<HeaderValue>,
}

pub(crate) async fn spawn(spec: &LaunchSpec) -> Result<Spawned, ProxyError> {
    let socket_error = |source| ProxyError::Socket {
        plugin: spec.plugin.clone(),
        source,
    };
    let socket = match spec.listen {
        ListenMode::InheritUnixSocket | ListenMode::InheritUnixSocketByFdArg => {
            endpoint::unix_or_tcp(&spec.socket_dir, &spec.plugin)
        }
        ListenMode::InheritSocket | ListenMode::WorkerBinds => endpoint::tcp(),
    }
    .map_err(socket_error)?;
    let WorkerSocket {
        listener,
        endpoint,
        folder: socket_folder,
    } = socket;
    // Only our own workers check a secret; the original's Python worker binds its
    // own port and would ignore one.
    let (inherited, secret, port) = match (spec.listen, &endpoint) {
        (ListenMode::WorkerBinds, Endpoint::Tcp { port }) => {
            // Free now; the worker binds it itself.
            drop(listener);
            (None, None, *port)
        }
        (_, endpoint) => {
            let secret =
                cjm_interface::random_hex(SECRET_BYTES).map_err(|source| ProxyError::Secret {
                    plugin: spec.plugin.clone(),
                    source,
                })?;
            // A worker on a Unix socket is told port 0: it serves what it inherits.
            let port = match endpoint {
                Endpoint::Tcp { port } | Endpoint::Tls { port, .. } => *port,
                Endpoint::Unix { .. } => 0,
            };
            (Some(listener), Some(secret), port)
        }
    };

    let host_pid = std::process::id();
    let header = format!(
        "starting {} (host pid {host_pid}, on {endpoint}): {} {}",
        spec.plugin,
        spec.program.display(),
        spec.args.join(" ")
    );
    let (log_file, log_start) =
        log::open_for_run(&spec.log_path, &header).map_err(|source| ProxyError::Log {
            plugin: spec.plugin.clone(),
            path: spec.log_path.clone(),
            source,
        })?;
    let log_error = |source| ProxyError::Log {
        plugin: spec.plugin.clone(),
        path: spec.log_path.clone(),
        source,
    };
    let stderr = log_file.try_clone().map_err(log_error)?;

    let mut command = std::process::Command::new(&spec.program);
    command.args(&spec.args);
    if spec.listen == ListenMode::InheritUnixSocketByFdArg {
        command.arg("--fd").arg(INHERITED_LISTEN_FD.to_string());
    } else {
        command.arg("--port").arg(port.to_string());
    }
    command
        .arg("--ppid")
        .arg(host_pid.to_string())
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(stderr))
        // Its own process group, so that stopping the worker stops whatever it started.
        .process_group(0);
    // In the environment, never on the command line, which every local user can read.
    if let Some(secret) = &secret {
        command.env(wire::WORKER_TOKEN_ENV, secret);
    }
    let inherited_fd = inherited.as_ref().map(|listener| listener.as_raw_fd());
    if inherited_fd.is_some() {
        command.env(wire::LISTEN_FD_ENV, INHERITED_LISTEN_FD.to_string());
    }
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (dup2, fcntl, prctl, getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || in_child_before_exec(inherited_fd, host_pid));
    }
    let spawn_error = |source| ProxyError::Spawn {
        plugin: spec.plugin.clone(),
        program: spec.program.clone(),
        source,
    };
    let child = spawner::spawn(command).await.map_err(spawn_error)?;
    // Our copy must go now: once the worker dies, nothing may hold the socket open,
    // so that a pending connection fails at once instead of waiting in the backlog.
    drop(inherited);
    let process = WorkerProcess::follow(child).map_err(spawn_error)?;
    let authorization = secret.and_then(|secret| {
        let mut value =
            HeaderValue::from_str(&format!("{} {secret}", wire::AUTHORIZATION_SCHEME)).ok()?;
        value.set_sensitive(true);
        Some(value)
    });
    Ok(Spawned {
        process,
        endpoint,
        socket_folder,
        log_start,
        authorization,
    })
}

/// In the forked child: hand over the listening socket, and (Linux) ask the kernel to
/// kill the worker when the host dies, even by SIGKILL.
fn in_child_before_exec(inherited_fd: Option<RawFd>, host_pid: u32) -> std::io::Result<()> {
    if let Some(fd) = inherited_fd {
        // dup2 gives the child a copy of the socket without close-on-exec, so the
        // worker, and only the worker, inherits it; the host's own copy stays
        // close-on-exec for every other child. Raw descriptors here: this is a forked
        // child where nothing may be allocated or dropped, and rustix's `dup2` wants
        // an owned target.
        // SAFETY: plain descriptor calls on a descriptor the host keeps open.
        let result = unsafe {
            if fd == INHERITED_LISTEN_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, INHERITED_LISTEN_FD)
            }
        };
        if result < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // The host may have died between fork and prctl; then no signal would come.
    let parent = rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get());
    if parent.and_then(|pid| u32::try_from(pid).ok()) != Some(host_pid) {
        return Err(rustix::io::Errno::SRCH.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret_value() {
        let mut spec = LaunchSpec::new("whisper", "/bin/whisper", "/tmp/whisper.log");
        spec.env = vec![
            (
                String::from("API_KEY"),
                String::from("sk-very-secret-value"),
            ),
            (String::from("MODEL"), String::from("large-v3")),
        ];
        spec.secret_env = vec![String::from("API_KEY")];
        for shown in [format!("{spec:?}"), format!("{spec:#?}")] {
            assert!(!shown.contains("sk-very-secret-value"), "{shown}");
            assert!(shown.contains("API_KEY"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            // Plain variables stay readable: they are what one debugs.
            assert!(shown.contains("large-v3"), "{shown}");
        }
    }
}
