//! The daemon's life: start (lock, listener, manager, jobs, plugins), serve until a
//! signal, and stop in order (no new work, running jobs given their grace, then
//! cancelled, workers stopped, journal flushed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cjm_manager::jobs::{JobState, Jobs, JournalEntry};
use cjm_manager::PluginManager;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::{Auth, Via};
use crate::error::DaemonError;
use crate::events::{until_closing, EventLog};
use crate::json::job_event;
use crate::listen::{Accepted, Bound, Listen};
use crate::lock::DaemonLock;
use crate::metrics::Metrics;
use crate::notify::notify_systemd;
use crate::options::{DaemonOptions, LoadAtStart};
use crate::state::Shared;
use crate::tls_listen::{TlsServer, HANDSHAKE_LIMIT};
use crate::token::Secret;

/// A started daemon: listening, its plugins loaded. [`run_until_signalled`]
/// serves it.
///
/// [`run_until_signalled`]: Daemon::run_until_signalled
#[derive(Debug)]
pub struct Daemon {
    shared: Arc<Shared>,
    bound: Bound,
    address: Listen,
    grace: Duration,
    terminate: Signal,
    interrupt: Signal,
    /// A TLS listener's.
    tls: Option<TlsServer>,
    /// This start's one-time login secret (TCP only).
    login: Option<Secret>,
    _lock: DaemonLock,
}

/// How long open connections get to finish once the jobs are done.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(5);

impl Daemon {
    /// Take the home's lock, listen, open the job queue (logging the jobs the last
    /// host left interrupted), and load the plugins asked for.
    pub async fn start(options: DaemonOptions) -> Result<Daemon, DaemonError> {
        let home = options.manager.home.root().to_path_buf();
        let lock_path = options.lock_path();
        cjm_interface::private::create_private_parent(&lock_path).map_err(|source| {
            DaemonError::Io {
                what: "cannot make the home folder",
                path: home.clone(),
                source,
            }
        })?;
        let lock = DaemonLock::acquire(&home, &lock_path)?;
        // Before anything starts: a signal during the load is an orderly stop too.
        let terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        // Made at every start, Unix socket or not: a client may read it whenever a
        // daemon has run.
        let token = crate::token::load_or_create(&home)?;
        let tls = match (&options.listen, &options.tls) {
            (Listen::Tls(addr), Some(source)) => Some(TlsServer::load(source, &home, *addr)?),
            (Listen::Tls(_), None) => {
                return Err(DaemonError::NoTlsMaterial {
                    listen: options.listen.to_string(),
                })
            }
            // The variant is public: `Listen::tcp`'s check is made here again, so that
            // no caller serves the network in clear.
            (Listen::Tcp(addr), _) if !addr.ip().is_loopback() => {
                return Err(DaemonError::NotLoopback { addr: *addr })
            }
            _ => None,
        };
        let (auth, login) = Auth::new(token, options.listen.tcp_addr().is_some())?;
        let bound = Bound::bind(&options.listen).await?;
        let address = bound.address();
        let journal = options.jobs.keep_journal.then(|| {
            (options.jobs.journal.clone()).unwrap_or_else(|| options.manager.home.journal_path())
        });
        let manager = PluginManager::new(options.manager);
        manager.discover_manifests();
        for problem in manager.discovery_problems() {
            tracing::warn!("skipped manifest {problem}");
        }
        // The jobs before the workers: a worker started after them knows where its
        // job's log records go.
        let jobs = Jobs::new(manager.clone(), options.jobs).await?;
        report_interrupted(jobs.interrupted());
        // Before the loads at start: they are told on the event stream too.
        let plugin_events = manager.plugin_events();
        if let Err(err) = load_at_start(&manager, &options.load).await {
            manager.shutdown().await;
            return Err(err);
        }
        let (closing, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            events: Arc::new(EventLog::new(jobs.session(), options.event_buffer)),
            manager,
            jobs,
            metrics: Metrics::new(),
            admission: Default::default(),
            arguments: Default::default(),
            max_body: options.max_body,
            auth,
            journal,
            started: Instant::now(),
            draining: AtomicBool::new(false),
            closing,
        });
        tokio::spawn(collect_events(Arc::clone(&shared)));
        tokio::spawn(crate::plugin_events::collect(
            Arc::clone(&shared),
            plugin_events,
        ));
        Ok(Daemon {
            shared,
            bound,
            address,
            grace: options.grace,
            terminate,
            interrupt,
            tls,
            login,
            _lock: lock,
        })
    }

    /// The one-time login link of this start (TCP only): opened in a browser, it
    /// sets the session cookie, once, within 10 minutes. It holds a secret: show it
    /// to the user, never log it.
    pub fn login_url(&self) -> Option<String> {
        let login = self.login.as_ref()?;
        let mut addr = self.address.tcp_addr()?;
        // 0.0.0.0 is no place to browse to; this machine is.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = match self.tls {
            Some(_) => "https",
            None => "http",
        };
        Some(format!("{scheme}://{addr}/login?token={}", login.expose()))
    }

    /// The SHA-256 fingerprint (hex) of a TLS listener's certificate, for clients to
    /// pin.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.tls.as_ref().map(|tls| tls.fingerprint.as_str())
    }

    /// Where it listens.
    pub fn address(&self) -> &Listen {
        &self.address
    }

    /// The jobs the last host on this home left queued or running.
    pub fn interrupted(&self) -> &[JournalEntry] {
        self.shared.jobs.interrupted()
    }

    /// The manager it serves.
    pub fn manager(&self) -> &PluginManager {
        &self.shared.manager
    }

    /// Serve until SIGTERM or SIGINT, then stop in order: no new connections or
    /// jobs, queued jobs cancelled, running ones given the grace period (a second
    /// signal ends it), then cancelled; the workers stopped, the journal flushed.
    pub async fn run_until_signalled(self) -> Result<(), DaemonError> {
        let Daemon {
            shared,
            bound,
            address,
            grace,
            mut terminate,
            mut interrupt,
            tls,
            login: _,
            _lock,
        } = self;
        let mut connections = JoinSet::new();
        let stopped_by = loop {
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                accepted = bound.accept() => match accepted {
                    Ok(Accepted::Unix(stream)) => {
                        connections.spawn(serve_connection(stream, Arc::clone(&shared), Via::Unix));
                    }
                    Ok(Accepted::Tcp(stream)) => match &tls {
                        None => {
                            connections.spawn(serve_connection(stream, Arc::clone(&shared), Via::Http));
                        }
                        Some(tls) => {
                            connections.spawn(serve_tls(stream, tls.clone(), Arc::clone(&shared)));
                        }
                    },
                    Err(err) => {
                        // Out of file descriptors, most likely: wait a moment rather
                        // than spin.
                        tracing::warn!("cannot accept a connection on {address}: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        if let Err(err) = notify_systemd("STOPPING=1") {
            tracing::warn!("{err}");
        }
        // No new connections: the socket goes with the listener.
        drop(bound);
        shared.draining.store(true, Ordering::SeqCst);
        let jobs = &shared.jobs;
        for status in jobs.list() {
            if status.state == JobState::Queued {
                let _ = jobs.cancel(status.id);
            }
        }
        let running = unfinished(jobs);
        tracing::info!(
            "{stopped_by}: stopping; {running} running job(s) have {}s to end",
            grace.as_secs_f64()
        );
        let all_ended = async {
            for status in jobs.list() {
                let _ = jobs.wait(status.id).await;
            }
        };
        tokio::select! {
            _ = all_ended => {}
            _ = tokio::time::sleep(grace) => {
                tracing::warn!("grace period over: cancelling {} job(s)", unfinished(jobs));
            }
            _ = terminate.recv() => tracing::warn!("SIGTERM again: cancelling {} job(s) now", unfinished(jobs)),
            _ = interrupt.recv() => tracing::warn!("SIGINT again: cancelling {} job(s) now", unfinished(jobs)),
        }
        // Cancels what is left (in the queue's phases: asked, then forced), waits for
        // every job to end and for the journal to hold it.
        jobs.shutdown().await;
        shared.manager.shutdown().await;
        jobs.sync_journal().await;
        // The event streams end (after the jobs' last events); open connections get a
        // moment to finish their responses.
        shared.closing.send_replace(true);
        let finishing = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(CONNECTIONS_GRACE, finishing)
            .await
            .is_err()
        {
            // Only connections are left, which hold no job or worker: dropping the
            // set ends them.
            tracing::warn!("{} connection(s) still open: closed", connections.len());
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn unfinished(jobs: &Jobs) -> usize {
    jobs.list()
        .iter()
        .filter(|status| !status.state.is_final())
        .count()
}

fn report_interrupted(interrupted: &[JournalEntry]) {
    if interrupted.is_empty() {
        return;
    }
    let ids: Vec<String> = interrupted
        .iter()
        .map(|job| format!("{} ({}, host pid {})", job.id, job.plugin, job.host_pid))
        .collect();
    tracing::warn!(
        "the last host left {} job(s) interrupted: {}",
        interrupted.len(),
        ids.join(", ")
    );
}

async fn load_at_start(manager: &PluginManager, load: &LoadAtStart) -> Result<(), DaemonError> {
    match load {
        LoadAtStart::Nothing => Ok(()),
        LoadAtStart::Named(names) => {
            for name in names {
                // The manager logs each load.
                manager
                    .load_plugin(name, None)
                    .await
                    .map_err(|source| DaemonError::Load {
                        name: name.clone(),
                        source: Box::new(source),
                    })?;
            }
            Ok(())
        }
        LoadAtStart::All => {
            for found in manager.discovery().plugins {
                let name = found.meta.name;
                match manager.load_plugin(&name, None).await {
                    Ok(()) => {}
                    Err(err) => tracing::error!(
                        "cannot load plugin {name}: {}; serving the others",
                        cjm_interface::ErrorChain(&err)
                    ),
                }
            }
            Ok(())
        }
    }
}

/// Feed the numbered event log and the metrics from the jobs' events, until the jobs
/// are gone or the daemon closes.
async fn collect_events(shared: Arc<Shared>) {
    let mut events = shared.jobs.events();
    let mut closing = shared.closing.subscribe();
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            _ = until_closing(&mut closing) => return,
        };
        match next {
            Some(Ok(event)) => {
                let status = shared.jobs.status(event.job);
                shared.metrics.observe(&event, status.as_ref());
                shared.admission.observe(&event);
                shared.events.push("job", &job_event(&event));
            }
            Some(Err(lagged)) => {
                tracing::warn!("{lagged}");
                shared.metrics.missed(lagged.missed);
                shared.events.push(
                    "lagged",
                    &serde_json::json!({"missed": lagged.missed, "detail": lagged.to_string()}),
                );
            }
            None => return,
        }
    }
}

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// One TLS connection: its handshake (in its own task, so that a slow client holds
/// up no other), then HTTP inside it.
async fn serve_tls(stream: tokio::net::TcpStream, tls: TlsServer, shared: Arc<Shared>) {
    match tokio::time::timeout(HANDSHAKE_LIMIT, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_connection(stream, shared, Via::Https).await,
        Ok(Err(err)) => tracing::debug!("TLS handshake failed: {err}"),
        Err(_) => tracing::debug!(
            "TLS handshake not done in {}s: closed",
            HANDSHAKE_LIMIT.as_secs()
        ),
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, via: Via)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut closing = shared.closing.subscribe();
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |request| crate::api::handle(Arc::clone(&shared), via, request))
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(err) = served {
                tracing::debug!("connection ended: {err}");
            }
        }
        _ = until_closing(&mut closing) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
