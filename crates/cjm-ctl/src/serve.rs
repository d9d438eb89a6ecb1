use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_daemon::{notify_systemd, Daemon, DaemonOptions, Listen, LoadAtStart};

use crate::out::outln;

/// Run a long-lived host in the foreground: plugins stay loaded between jobs, served
/// over HTTP/JSON on $CJM_HOME/daemon.sock (or loopback TCP); SSE events at
/// /api/events, Prometheus metrics at /metrics. SIGTERM or Ctrl-C stops it in order.
/// Says `ready` on stdout (and READY=1 to systemd) once it serves.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeCommand {
    /// load this plugin at start (repeatable); one that fails stops the start
    #[argh(option)]
    load: Vec<String>,
    /// load every discovered plugin at start (one that fails is logged and skipped)
    #[argh(switch)]
    all: bool,
    /// listen on this loopback address (127.0.0.1:PORT) instead of the Unix socket
    #[argh(option)]
    listen: Option<String>,
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
    if let Some(text) = &command.listen {
        let addr: SocketAddr = text.parse().with_context(|| {
            format!("--listen {text}: expected an address such as 127.0.0.1:8765")
        })?;
        options.listen = Listen::tcp(addr)?;
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
        if let Err(err) = notify_systemd("READY=1") {
            tracing::warn!("{err}");
        }
        daemon.run_until_signalled().await?;
        Ok(ExitCode::SUCCESS)
    })
}
