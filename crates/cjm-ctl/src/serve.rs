use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_daemon::{notify_systemd, Daemon, DaemonOptions, Listen, LoadAtStart, TlsSource};

use crate::out::outln;

/// Run a long-lived host in the foreground: plugins stay loaded between jobs, served
/// over HTTP/JSON on $CJM_HOME/daemon.sock (or TCP, with the token in
/// $CJM_HOME/daemon.token; TLS beyond loopback); SSE events at /api/events,
/// Prometheus metrics at /metrics. SIGTERM or Ctrl-C stops it in order. Says `ready`
/// on stdout (and READY=1 to systemd) once it serves; over TCP then `tls-sha256:`
/// (TLS) and `login: URL`, a one-time link for a browser.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeCommand {
    /// load this plugin at start (repeatable); one that fails stops the start
    #[argh(option)]
    load: Vec<String>,
    /// load every discovered plugin at start (one that fails is logged and skipped)
    #[argh(switch)]
    all: bool,
    /// listen on this TCP address instead of the Unix socket: loopback (127.0.0.1:PORT)
    /// as plain HTTP, any other only with TLS (--tls-cert and --tls-key, or
    /// --tls-self-signed); a bearer token either way
    #[argh(option)]
    listen: Option<String>,
    /// the TLS certificate chain (PEM) for --listen
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// the TLS certificate's private key (PEM) for --listen
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// serve --listen over TLS with a self-signed certificate kept in
    /// $CJM_HOME/daemon-tls/ (made at the first start; its fingerprint is printed)
    #[argh(switch)]
    tls_self_signed: bool,
    /// seconds running jobs get to end after SIGTERM before they are cancelled
    /// (default 30)
    #[argh(option, default = "30")]
    grace_secs: u64,
    /// restart a worker that dies up to this many times between loads, the first
    /// after 100 ms, then twice as long each time (default 0: a dead worker stays
    /// dead until reloaded)
    #[argh(option, default = "0")]
    restarts: u32,
}

pub fn run(command: ServeCommand) -> Result<ExitCode> {
    let mut options = DaemonOptions::from_env()?;
    options.load = match (command.all, command.load.is_empty()) {
        (true, false) => bail!("--all and --load: give one or the other"),
        (true, true) => LoadAtStart::All,
        (false, false) => LoadAtStart::Named(command.load),
        (false, true) => LoadAtStart::Nothing,
    };
    let tls = match (command.tls_cert, command.tls_key, command.tls_self_signed) {
        (None, None, false) => None,
        (Some(cert), Some(key), false) => Some(TlsSource::Files { cert, key }),
        (None, None, true) => Some(TlsSource::SelfSigned),
        (_, _, true) => bail!("--tls-self-signed and --tls-cert/--tls-key: give one or the other"),
        _ => bail!("--tls-cert and --tls-key go together: a certificate and its key"),
    };
    match (&command.listen, tls) {
        (Some(text), tls) => {
            let addr: SocketAddr = text.parse().with_context(|| {
                format!("--listen {text}: expected an address such as 127.0.0.1:8765")
            })?;
            options.listen = match tls {
                Some(_) => Listen::tls(addr),
                None => Listen::tcp(addr)?,
            };
            options.tls = tls;
        }
        (None, Some(_)) => bail!("--tls-cert, --tls-key and --tls-self-signed need --listen"),
        (None, None) => {}
    }
    options.grace = Duration::from_secs(command.grace_secs);
    options.manager.fault_policy.restart =
        cjm_manager::RestartPolicy::up_to(command.restarts, Duration::from_millis(100));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(options).await?;
        // A line of its own, on stdout, for whoever started it (a script, a test)
        // to wait for; systemd is told the same through NOTIFY_SOCKET.
        outln!(
            "ready: serving on {} (pid {})",
            daemon.address(),
            std::process::id()
        )?;
        if let Some(fingerprint) = daemon.tls_fingerprint() {
            outln!("tls-sha256: {fingerprint}")?;
        }
        // The one place the one-time secret is shown: the user's terminal, never a log.
        if let Some(url) = daemon.login_url() {
            outln!("login: {url}")?;
        }
        if let Err(err) = notify_systemd("READY=1") {
            tracing::warn!("{err}");
        }
        daemon.run_until_signalled().await?;
        Ok(ExitCode::SUCCESS)
    })
}
