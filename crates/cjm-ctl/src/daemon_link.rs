//! Whether a command goes through a daemon: one serving this home (its socket
//! `$CJM_HOME/daemon.sock` answers `/api/health`) takes the work, so that plugins stay
//! loaded between commands and every terminal sees the same jobs. Without one (no
//! socket, or the file a killed daemon left), the command runs in-process, as with
//! `--local`.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use cjm_daemon::DaemonClient;
use cjm_metadata::CjmHome;

/// How long a daemon has to answer its health check before it counts as absent: a
/// live one answers in milliseconds.
const HEALTH_LIMIT: Duration = Duration::from_secs(3);

/// The daemon serving this home, unless `local` or none answers.
pub(crate) fn find(local: bool) -> Result<Option<DaemonClient>> {
    if local {
        return Ok(None);
    }
    let socket = CjmHome::from_env()?.root().join("daemon.sock");
    if !socket.exists() {
        return Ok(None);
    }
    let client = DaemonClient::new(socket);
    let health = block_on(client.health(HEALTH_LIMIT))?;
    match health {
        Ok(_) => Ok(Some(client)),
        Err(err) => {
            // A stale socket (the daemon was killed), or a daemon that is stopping:
            // the work is done here instead, as it was before there were daemons.
            tracing::debug!(
                "no daemon serves {} ({}): running in-process",
                client.socket().display(),
                cjm_interface::ErrorChain(&err)
            );
            Ok(None)
        }
    }
}

/// `future` run to its end on a runtime of its own.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}
