//! The worker as the proxy follows it: a local process (its exit seen through a
//! pidfd, its group signalled) or a remote one (its end reported by whoever placed it,
//! stopped by asking them). The proxy treats both alike; only a local worker is ever
//! signalled, so a remote worker's pid can never hit a process of this machine.

use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::Signal;

use crate::placement::remote::RemoteWorker;
use crate::process::WorkerProcess;

/// A broken connection usually means the worker is dying; the notice of its exit
/// (SIGCHLD, then the reaper task) can trail the socket error by a moment: wait this
/// long for it before taking the connection's failure for the answer.
pub(crate) const EXIT_NOTICE_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub(crate) enum Worker {
    Local(WorkerProcess),
    Remote(RemoteWorker),
}

impl Worker {
    /// The process id on this machine; `None` for a worker elsewhere.
    pub(crate) fn local_pid(&self) -> Option<u32> {
        match self {
            Worker::Local(process) => Some(process.pid()),
            Worker::Remote(_) => None,
        }
    }

    /// Whether the host can stop the worker (see [`RemoteWorker::is_owned`]).
    pub(crate) fn is_owned(&self) -> bool {
        match self {
            Worker::Local(_) => true,
            Worker::Remote(remote) => remote.is_owned(),
        }
    }

    pub(crate) fn has_exited(&self) -> bool {
        match self {
            Worker::Local(process) => process.has_exited(),
            Worker::Remote(remote) => remote.is_gone(),
        }
    }

    /// Resolves when the worker has ended, with its exit status where known (never
    /// for a remote worker).
    pub(crate) async fn exited(&self) -> Option<ExitStatus> {
        match self {
            Worker::Local(process) => process.exited().await,
            Worker::Remote(remote) => {
                remote.gone().await;
                None
            }
        }
    }

    /// A future that resolves when the worker has ended, holding neither the worker
    /// nor anything whose drop would stop it (only the notice of its end).
    pub(crate) fn exit_notice(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let notice = match self {
            Worker::Local(process) => ExitNotice::Local(process.exit_receiver()),
            Worker::Remote(remote) => ExitNotice::Remote(remote.gone_receiver()),
        };
        async move {
            // An error means the sender went with the worker: ended too.
            match notice {
                ExitNotice::Local(mut exit) => {
                    let _ = exit.wait_for(Option::is_some).await;
                }
                ExitNotice::Remote(mut gone) => {
                    let _ = gone.wait_for(Option::is_some).await;
                }
            }
        }
    }

    /// Wait up to `limit` for the end: `Some(status)` if it came.
    pub(crate) async fn exit_within(&self, limit: Duration) -> Option<Option<ExitStatus>> {
        tokio::time::timeout(limit, self.exited()).await.ok()
    }

    /// Wait up to `limit` for the end; whether it came.
    pub(crate) async fn wait_exit(&self, limit: Duration) -> bool {
        self.exit_within(limit).await.is_some()
    }

    /// How the worker ended, as a metric's label: `exited` (with a status),
    /// `signal` (killed by one), `lost` (a remote worker gone); `None` while it runs.
    pub(crate) fn exit_cause(&self) -> Option<&'static str> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Worker::Local(process) => process.exit_status().map(|status| match status {
                Some(status) if status.code().is_some() => "exited",
                Some(status) if status.signal().is_some() => "signal",
                _ => "lost",
            }),
            Worker::Remote(remote) => remote.gone_reason().map(|_| "lost"),
        }
    }

    /// How the worker ended, in words; `None` while it runs.
    pub(crate) fn exit_description(&self) -> Option<String> {
        match self {
            Worker::Local(process) => process
                .exit_status()
                .map(|status| crate::error::describe_status(&status)),
            Worker::Remote(remote) => remote.gone_reason(),
        }
    }

    /// Stop the worker: a signal to a local worker's process group; for a remote one,
    /// `TERM` and `KILL` both ask its placement to stop it (a Ray job is stopped; an
    /// attached worker, which someone else runs, is only let go).
    pub(crate) fn stop(&self, signal: Signal) {
        match self {
            Worker::Local(process) => process.signal_group(signal),
            Worker::Remote(remote) => remote.stop(),
        }
    }
}

enum ExitNotice {
    Local(tokio::sync::watch::Receiver<Option<Option<ExitStatus>>>),
    Remote(tokio::sync::watch::Receiver<Option<String>>),
}
