//! The worker's OS process: when it ended, and signalling its process group.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::watch;

use crate::ProxyError;

/// A started worker process. A task reaps it the moment it exits (no zombies) and
/// publishes its exit status.
#[derive(Debug, Clone)]
pub(crate) struct WorkerProcess {
    pid: u32,
    exit: watch::Receiver<Option<Option<ExitStatus>>>,
}

impl WorkerProcess {
    pub(crate) fn watch(mut child: tokio::process::Child) -> Result<Self, ProxyError> {
        let pid = child.id().unwrap_or(0);
        let (sender, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = sender.send(Some(status));
        });
        Ok(WorkerProcess { pid, exit })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the process has ended (`status` is `None` if it could not
    /// be read).
    pub(crate) fn exit_status(&self) -> Option<Option<ExitStatus>> {
        *self.exit.borrow()
    }

    pub(crate) fn has_exited(&self) -> bool {
        self.exit_status().is_some()
    }

    /// Resolves when the process has ended, with its status if known.
    pub(crate) async fn exited(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.flatten(),
            // The watcher task is gone (runtime shutting down): treat as ended.
            Err(_) => None,
        };
        status
    }

    /// Wait up to `limit` for the process to end: `Some(status)` if it did.
    pub(crate) async fn exit_within(&self, limit: Duration) -> Option<Option<ExitStatus>> {
        tokio::time::timeout(limit, self.exited()).await.ok()
    }

    /// Wait up to `limit` for the process to end; whether it did.
    pub(crate) async fn wait_exit(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.exited()).await.is_ok()
    }

    /// Send `signal` to the worker's whole process group (it leads its own group).
    pub(crate) fn signal_group(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        if pgid <= 1 {
            return;
        }
        // SAFETY: killpg with the group id of a group our child leads. ESRCH (group
        // already empty) is the expected outcome once everything has exited.
        unsafe { libc::killpg(pgid, signal) };
    }
}
