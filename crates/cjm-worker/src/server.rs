//! The accept loop and the worker's life: serve until the host stops us or dies.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::Plugin;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};

use crate::auth::AccessToken;
use crate::handler::{handle, Worker};
use crate::host::PluginHost;

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
pub enum ServeError {
    Listen { port: u16, source: std::io::Error },
    Runtime(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Listen { port, source } => {
                write!(f, "cannot listen on 127.0.0.1:{port}: {source}")
            }
            ServeError::Runtime(source) => write!(f, "cannot start the async runtime: {source}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Listen { source, .. } | ServeError::Runtime(source) => Some(source),
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
/// One thread runs the event loop for every connection; plugin calls run on a pool of
/// blocking threads, so a long `execute` never delays `/health` or `/stats`.
pub fn serve<P: Plugin>(plugin: P, options: ServeOptions) -> Result<(), ServeError> {
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
        options.access_token.as_deref().map(AccessToken::new),
    ));
    let port = options.port;
    let outcome = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)
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
        if let Ok(address) = listener.local_addr() {
            tracing::info!(
                "worker {} {} (pid {}) serving on http://{address}",
                worker.host.name(),
                worker.host.version(),
                std::process::id()
            );
        }
        let shutdown = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_connection(Arc::clone(&worker), stream));
                    }
                    Err(err) => {
                        // Out of descriptors, typically: back off instead of spinning.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
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

async fn serve_connection(worker: Arc<Worker>, stream: tokio::net::TcpStream) {
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
