//! The accept loop and the worker's life: serve until the host stops us or dies.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::Plugin;
use cjm_validation::SchemaError;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::AccessToken;
use crate::config_check::ConfigCheck;
use crate::handler::{handle, Worker};
use crate::host::PluginHost;
use crate::listener::{AsyncListener, Connection};

/// Connections served at once; more wait in the listen backlog. Each has a thread.
const MAX_CONNECTIONS: usize = 512;
/// Plugin code runs on connection threads; give it the stack a main thread would get.
const CONNECTION_STACK_BYTES: usize = 8 * 1024 * 1024;

/// How often the control loop checks whether the worker went idle (and gives freed
/// memory back to the kernel).
const IDLE_MEMORY_CHECK: Duration = Duration::from_secs(1);

/// How long SIGTERM waits for the plugin's cleanup before the worker exits anyway.
const CLEANUP_ON_SIGTERM_LIMIT: Duration = Duration::from_secs(5);

/// Request bodies above this get 413 unless [`ServeOptions::max_body_bytes`] says
/// otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024 * 1024;

/// How a worker serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Port on 127.0.0.1 (or that of the socket the host handed over).
    pub port: u16,
    /// Exit when this process ends.
    pub parent_pid: Option<u32>,
    /// Request bodies above this get 413.
    pub max_body_bytes: usize,
    /// When set, every request must carry `Authorization: Bearer <token>` (401
    /// otherwise); see [`wire::WORKER_TOKEN_ENV`](cjm_interface::wire::WORKER_TOKEN_ENV).
    pub access_token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            port: 0,
            parent_pid: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            access_token: None,
        }
    }
}

// By hand, so that the secret never reaches a log.
impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("port", &self.port)
            .field("parent_pid", &self.parent_pid)
            .field("max_body_bytes", &self.max_body_bytes)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a worker could not serve.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    Listen {
        port: u16,
        source: std::io::Error,
    },
    Runtime(std::io::Error),
    /// The plugin's own `config_schema` cannot be used to check configurations.
    ConfigSchema {
        plugin: String,
        source: SchemaError,
    },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Listen { port, source } => {
                write!(f, "cannot listen on 127.0.0.1:{port}: {source}")
            }
            ServeError::Runtime(source) => write!(f, "cannot start the async runtime: {source}"),
            ServeError::ConfigSchema { plugin, source } => {
                write!(
                    f,
                    "plugin {plugin} cannot serve: its config schema is {source}"
                )
            }
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Listen { source, .. } | ServeError::Runtime(source) => Some(source),
            ServeError::ConfigSchema { source, .. } => Some(source),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Shutdown {
    ParentGone,
    Terminated,
}

/// Serve `plugin` until SIGTERM/SIGINT or the death of `parent_pid`.
///
/// One thread accepts connections and watches the host and signals; every connection
/// is served on a thread of its own, where its plugin calls run.
pub fn serve<P: Plugin>(plugin: P, options: ServeOptions) -> Result<(), ServeError> {
    // Before listening: a plugin whose schema is plainly broken must not look ready.
    let config_check =
        ConfigCheck::new(plugin.config_schema()).map_err(|source| ServeError::ConfigSchema {
            plugin: plugin.name().to_owned(),
            source,
        })?;
    let listener = crate::listener::open(options.port).map_err(|source| ServeError::Listen {
        port: options.port,
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let worker = Arc::new(Worker::new(
        PluginHost::new(Box::new(plugin)),
        options.max_body_bytes,
        config_check,
        options.access_token.as_deref().map(AccessToken::new),
    ));
    let port = options.port;
    let outcome = runtime.block_on(async {
        let listener = listener
            .into_async()
            .map_err(|source| ServeError::Listen { port, source })?;
        let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
        let parent_gone = async {
            match options.parent_pid {
                Some(pid) => crate::parent::exited(pid).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(parent_gone);
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tracing::info!(
            "worker {} {} (pid {}) serving on {}",
            worker.host.name(),
            worker.host.version(),
            std::process::id(),
            listener.describe()
        );
        let mut idle_ticks = tokio::time::interval(IDLE_MEMORY_CHECK);
        idle_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = loop {
            tokio::select! {
                accepted = accept(&listener, &connections) => match accepted {
                    Ok((stream, permit)) => spawn_connection(Arc::clone(&worker), stream, permit),
                    Err(err) => {
                        // Out of descriptors, typically: back off instead of spinning.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = idle_ticks.tick() => crate::allocator::on_idle_tick(),
                () = &mut parent_gone => break Shutdown::ParentGone,
                _ = terminate.recv() => break Shutdown::Terminated,
                _ = interrupt.recv() => break Shutdown::Terminated,
            }
        };
        match shutdown {
            Shutdown::ParentGone => {
                tracing::info!("host process is gone; exiting");
            }
            Shutdown::Terminated => {
                let cleanup_worker = Arc::clone(&worker);
                let cleanup = tokio::task::spawn_blocking(move || cleanup_worker.cleanup_once());
                match tokio::time::timeout(CLEANUP_ON_SIGTERM_LIMIT, cleanup).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(failure))) => tracing::warn!("cleanup failed: {failure}"),
                    Ok(Err(join)) => tracing::warn!("cleanup task failed: {join}"),
                    Err(_) => {
                        tracing::warn!("cleanup did not finish in {CLEANUP_ON_SIGTERM_LIMIT:?}")
                    }
                }
                tracing::info!("terminated; exiting");
            }
        }
        Ok(())
    });
    stop_descendants();
    // Plugin calls still running on blocking threads must not hold the exit up.
    runtime.shutdown_background();
    outcome
}

/// Wait for a connection slot, then for a connection.
async fn accept(
    listener: &AsyncListener,
    connections: &Arc<Semaphore>,
) -> std::io::Result<(Connection, OwnedSemaphorePermit)> {
    let permit = Arc::clone(connections)
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("connection limit closed"))?;
    let connection = listener.accept().await?;
    Ok((connection, permit))
}

/// Serve one connection on a thread of its own, with a runtime of its own.
///
/// Plugin calls then run right on that thread: no hand-over to a pool and back, so a
/// call costs about one loopback round trip. A long call holds up only its own
/// connection; the host opens another for concurrent calls, `/health` or `/stats`.
fn spawn_connection(worker: Arc<Worker>, connection: Connection, permit: OwnedSemaphorePermit) {
    let spawned = std::thread::Builder::new()
        .name(String::from("cjm-connection"))
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || {
            let _permit = permit;
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::warn!("cannot start a connection's runtime: {err}");
                    return;
                }
            };
            runtime.block_on(async move {
                let registered = match connection {
                    Connection::Tcp(stream) => match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => return serve_connection(worker, stream).await,
                        Err(err) => err,
                    },
                    Connection::Unix(stream) => match tokio::net::UnixStream::from_std(stream) {
                        Ok(stream) => return serve_connection(worker, stream).await,
                        Err(err) => err,
                    },
                };
                tracing::warn!("cannot register a connection: {registered}");
            });
        });
    if let Err(err) = spawned {
        tracing::warn!("cannot start a connection thread: {err}");
    }
}

async fn serve_connection<S>(worker: Arc<Worker>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let worker = Arc::clone(&worker);
        async move { Ok::<_, Infallible>(handle(worker, request).await) }
    });
    if let Err(err) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("connection ended with an error: {err}");
    }
}

/// Processes the plugin started must not outlive the worker.
fn stop_descendants() {
    let own_pid = std::process::id();
    for pid in crate::proc_stats::process_tree(own_pid).into_iter().skip(1) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: sending a signal to a pid we just saw among our descendants.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}
