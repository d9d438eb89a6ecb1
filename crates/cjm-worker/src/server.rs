//! The accept loop and the worker's life: serve until the host stops us or dies.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::substrate::SubstrateVersion;
use cjm_interface::Plugin;
use cjm_validation::SchemaError;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::AccessToken;
use crate::config_check::ConfigCheck;
use crate::handler::handle;
use crate::handover::HandOver;
use crate::host::PluginHost;
use crate::listener::{AsyncListener, Connection};
#[cfg(not(feature = "remote"))]
use crate::no_remote::Remote;
use crate::offload::{MAX_CONNECTIONS, MAX_PLUGIN_THREADS, PLUGIN_STACK_BYTES};
#[cfg(feature = "remote")]
use crate::remote::{Remote, RemoteServe};
use crate::state::Worker;
#[cfg(feature = "remote")]
use crate::TlsSetupError;

/// How often the control loop checks whether the worker went idle (and gives freed
/// memory back to the kernel).
const IDLE_MEMORY_CHECK: Duration = Duration::from_secs(1);

/// How long SIGTERM waits for the plugin's cleanup before the worker exits anyway.
const CLEANUP_ON_SIGTERM_LIMIT: Duration = Duration::from_secs(5);

/// Request bodies above this get 413 unless [`ServeOptions::max_body_bytes`] says
/// otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024 * 1024;

/// How a worker serves: [`ServeOptions::new`], then the setters. Fields may be added
/// in later releases without breaking callers.
#[derive(Debug)]
pub struct ServeOptions {
    port: u16,
    parent_pid: Option<u32>,
    max_body_bytes: usize,
    hand_over: HandOver,
    #[cfg(feature = "remote")]
    remote: Option<RemoteServe>,
    adapters: crate::TaskAdapters,
    substrate: Option<SubstrateVersion>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            port: 0,
            parent_pid: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            hand_over: HandOver::default(),
            #[cfg(feature = "remote")]
            remote: None,
            adapters: crate::TaskAdapters::default(),
            substrate: None,
        }
    }
}

impl ServeOptions {
    /// Serve on an ephemeral loopback port, follow no parent, accept bodies up to
    /// [`DEFAULT_MAX_BODY_BYTES`], require no secret.
    pub fn new() -> Self {
        ServeOptions::default()
    }

    /// The loopback port to bind when no socket is handed over (0: any free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Exit when this process ends (the host).
    pub fn parent_pid(mut self, parent_pid: Option<u32>) -> Self {
        self.parent_pid = parent_pid;
        self
    }

    /// Request bodies above this many bytes get 413.
    pub fn max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The socket to serve on and the secret every request must carry, as the host
    /// handed them over (see [`HandOver::take`]).
    pub fn hand_over(mut self, hand_over: HandOver) -> Self {
        self.hand_over = hand_over;
        self
    }

    /// Serve these task adapters on `/task` (see [`TaskAdapter`](crate::TaskAdapter));
    /// [`serve`] refuses adapters written for another plugin type.
    pub fn task_adapters(mut self, adapters: crate::TaskAdapters) -> Self {
        self.adapters = adapters;
        self
    }

    /// Answer the successor's host of this release: `/health` names it as its
    /// `substrate_version` (see [`cjm_interface::substrate`]). `None`: answer as the
    /// original 0.0.46's workers do. `main` takes it from
    /// [`SUBSTRATE_VERSION_ENV`](cjm_interface::substrate::SUBSTRATE_VERSION_ENV).
    pub fn answer_substrate(mut self, version: Option<SubstrateVersion>) -> Self {
        self.substrate = version;
        self
    }

    /// Serve TLS on a network address instead, for a host elsewhere (see
    /// [`RemoteServe`]). A socket handed over is then refused. Cargo feature `remote`.
    #[cfg(feature = "remote")]
    pub fn remote(mut self, remote: RemoteServe) -> Self {
        self.remote = Some(remote);
        self
    }
}

/// Why a worker could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening socket could not be opened or used.
    #[error("cannot listen on {on}")]
    Listen {
        /// Where: `127.0.0.1:<port>` or the socket the host handed over.
        on: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime (or its signal handling) could not be started.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The plugin's own `config_schema` cannot be used to check configurations.
    #[error("plugin {plugin} cannot serve: its config schema is broken")]
    ConfigSchema {
        /// The plugin's name.
        plugin: String,
        /// What is wrong with the schema.
        #[source]
        source: SchemaError,
    },
    /// A remote worker's TLS could not be set up.
    #[cfg(feature = "remote")]
    #[error("cannot set up TLS")]
    Tls(#[source] TlsSetupError),
    /// A remote worker was also handed a socket: which one to serve on?
    #[error("--listen cannot be combined with a socket handed over (--fd, CJM_LISTEN_FD)")]
    ListenConflict,
    /// Task adapters that cannot be served (see [`TaskAdapterError`](crate::TaskAdapterError)).
    #[error("plugin {plugin} cannot serve its task adapters")]
    TaskAdapters {
        /// The plugin's name.
        plugin: String,
        /// What is wrong with them.
        #[source]
        source: crate::TaskAdapterError,
    },
    /// A remote worker could not print its handshake line.
    #[error("cannot print the handshake line")]
    Announce(#[source] std::io::Error),
}

#[derive(Debug, Clone, Copy)]
enum Shutdown {
    ParentGone,
    LeaseExpired,
    Terminated,
}

/// Serve `plugin` until SIGTERM/SIGINT or the death of `parent_pid`.
///
/// The main thread accepts connections and watches the host and signals; one worker
/// thread serves every connection's I/O, as a bare hyper server does; the plugin's
/// code runs off that path (see `offload.rs`).
pub fn serve<P: Plugin>(plugin: P, options: ServeOptions) -> Result<(), ServeError> {
    // Before listening: a plugin whose schema is plainly broken must not look ready.
    let config_check =
        ConfigCheck::new(plugin.config_schema()).map_err(|source| ServeError::ConfigSchema {
            plugin: plugin.name().to_owned(),
            source,
        })?;
    options
        .adapters
        .check_for::<P>()
        .map_err(|source| ServeError::TaskAdapters {
            plugin: plugin.name().to_owned(),
            source,
        })?;
    let HandOver {
        listener: inherited,
        access_token,
    } = options.hand_over;
    #[cfg(not(feature = "remote"))]
    let remote: Option<Remote> = None;
    #[cfg(feature = "remote")]
    let remote = match options.remote {
        Some(_) if inherited.is_some() => return Err(ServeError::ListenConflict),
        Some(remote) => Some(Remote::new(remote).map_err(ServeError::Tls)?),
        None => None,
    };
    let listening_on = match (&remote, &inherited) {
        (Some(remote), _) => remote.listen.to_string(),
        (None, Some(_)) => String::from("the socket the host handed over"),
        (None, None) => format!("127.0.0.1:{}", options.port),
    };
    let listener = match &remote {
        Some(remote) => remote.bind(),
        None => crate::listener::open(options.port, inherited),
    }
    .map_err(|source| ServeError::Listen {
        on: listening_on.clone(),
        source,
    })?;
    // Multi-threaded, with one worker thread for the connections: `block_in_place`
    // (see `offload.rs`) needs a runtime that can hand its I/O to another thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .max_blocking_threads(MAX_PLUGIN_THREADS)
        .thread_stack_size(PLUGIN_STACK_BYTES)
        .thread_name("cjm-plugin")
        .build()
        .map_err(ServeError::Runtime)?;
    let worker = Arc::new(Worker::new(
        PluginHost::new(Box::new(plugin)),
        options.max_body_bytes,
        config_check,
        access_token.as_deref().map(AccessToken::new),
        options.adapters,
        options.substrate,
    ));
    let outcome = runtime.block_on(async {
        let listener = listener.into_async().map_err(|source| ServeError::Listen {
            on: listening_on,
            source,
        })?;
        if let (Some(remote), AsyncListener::Tcp(tcp)) = (&remote, &listener) {
            let port = tcp.local_addr().map_err(|source| ServeError::Listen {
                on: remote.listen.to_string(),
                source,
            })?;
            remote.announce(port.port()).map_err(ServeError::Announce)?;
        }
        let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
        let parent_gone = async {
            match options.parent_pid {
                Some(pid) => crate::parent::exited(pid).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(parent_gone);
        let lease_expired = async {
            match &remote {
                Some(remote) => remote.lease_expired().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lease_expired);
        // A remote worker counts only authenticated connections here: those still in
        // their TLS handshake are bounded apart (`remote.rs`), so that nobody without
        // the host's certificate can fill these slots.
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let serving_on = match &remote {
            Some(_) => format!(
                "{} (TLS)",
                listener.describe().replacen("http:", "https:", 1)
            ),
            None => listener.describe(),
        };
        tracing::info!(
            "worker {} {} (pid {}) serving on {serving_on}",
            worker.host.name(),
            worker.host.version(),
            std::process::id(),
        );
        // The first tick a whole period from now: a worker just started is not idle.
        let mut idle_ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + IDLE_MEMORY_CHECK,
            IDLE_MEMORY_CHECK,
        );
        idle_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = loop {
            tokio::select! {
                accepted = accept(&listener, &connections, remote.is_none()) => match accepted {
                    Ok((stream, permit)) => match (&remote, permit) {
                        // A slot once its handshake has shown it is the host's.
                        (Some(remote), _) => remote.authenticate(stream, &worker, &connections),
                        (None, Some(permit)) => {
                            spawn_connection(Arc::clone(&worker), stream, permit)
                        }
                        (None, None) => {}
                    },
                    Err(err) => {
                        // Out of descriptors, typically: back off instead of spinning.
                        tracing::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = idle_ticks.tick() => crate::allocator::on_idle_tick(),
                () = &mut parent_gone => break Shutdown::ParentGone,
                () = &mut lease_expired => break Shutdown::LeaseExpired,
                _ = terminate.recv() => break Shutdown::Terminated,
                _ = interrupt.recv() => break Shutdown::Terminated,
            }
        };
        match shutdown {
            Shutdown::ParentGone => {
                tracing::info!("host process is gone; exiting");
            }
            Shutdown::LeaseExpired => {
                let lease = remote.as_ref().and_then(Remote::lease_limit);
                tracing::info!("no word from the host for {lease:?} (the lease); exiting");
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

/// Wait for a connection slot if `slot_first`, then for a connection.
async fn accept(
    listener: &AsyncListener,
    connections: &Arc<Semaphore>,
    slot_first: bool,
) -> std::io::Result<(Connection, Option<OwnedSemaphorePermit>)> {
    let permit = if slot_first {
        let permit = Arc::clone(connections)
            .acquire_owned()
            .await
            .map_err(|_| std::io::Error::other("connection limit closed"))?;
        Some(permit)
    } else {
        None
    };
    let connection = listener.accept().await?;
    Ok((connection, permit))
}

/// Serve one connection as a task of the accepting runtime (see `offload.rs` for where
/// its plugin calls run). Must be called within that runtime.
fn spawn_connection(worker: Arc<Worker>, connection: Connection, permit: OwnedSemaphorePermit) {
    tokio::spawn(async move {
        let _permit = permit;
        match connection {
            Connection::Tcp(stream) => serve_connection(worker, stream).await,
            Connection::Unix(stream) => serve_connection(worker, stream).await,
        }
    });
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
///
/// Each descendant found in `/proc` is opened as a pidfd first and checked to be a
/// descendant still (its parent among the tree) before it is signalled through that
/// pidfd: a pid seen in the scan may have been reused by a stranger since.
fn stop_descendants() {
    let own_pid = std::process::id();
    let tree = crate::proc_stats::process_tree(own_pid);
    for &pid in &tree[1..] {
        let Some(process) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        let Ok(pidfd) = rustix::process::pidfd_open(process, rustix::process::PidfdFlags::empty())
        else {
            continue; // gone already
        };
        let parent = crate::proc_stats::stat(pid).and_then(|stat| u32::try_from(stat.ppid).ok());
        if parent.is_some_and(|parent| tree.contains(&parent)) {
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::TERM);
        }
    }
}
