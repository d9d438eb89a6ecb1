//! The worker's OS process: when it ended, and signalling its process group without
//! ever signalling a stranger.
//!
//! A pid (and a process group id) may be given to another process once its owner has
//! been reaped. So the worker is followed through a pidfd and reaped by this module
//! alone, and every signal to its group is sent under the same lock as the reaping:
//! while the leader is unreaped (even as a zombie) its pid and group id cannot be
//! reused, and once it is reaped no signal is sent any more. When the leader exits,
//! whatever is left in its group is killed before the leader is reaped, so a worker
//! that dies on its own leaves neither a zombie nor orphans behind.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitIdStatus};

use crate::spawner::SpawnedChild;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

/// A started worker process (the leader of its own process group). Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerProcess {
    inner: Arc<Leader>,
    exit: watch::Receiver<Option<Option<ExitStatus>>>,
}

#[derive(Debug)]
struct Leader {
    pid: Pid,
    /// `Some` until the leader is reaped; held while signalling, so that a signal is
    /// never sent to a group whose leader has been reaped.
    pidfd: Mutex<Option<OwnedFd>>,
}

impl WorkerProcess {
    /// Follow `child`, just spawned. Needs a tokio runtime with I/O. On failure the
    /// child is killed and reaped: never left running unwatched.
    pub(crate) fn follow(child: SpawnedChild) -> io::Result<Self> {
        // Dropped on error, `child` kills its group and reaps it.
        let watched = child.try_clone_pidfd()?;
        let (pid, pidfd) = child.claim();
        let inner = Arc::new(Leader {
            pid,
            pidfd: Mutex::new(pidfd),
        });
        let (sender, exit) = watch::channel(None);
        let reaper = Arc::clone(&inner);
        // SAFETY: the AsyncFd owns `watched`, an OwnedFd, which stays open and refers
        // to the same pidfd until the AsyncFd is dropped.
        match unsafe { AsyncFd::register_with_interest(watched, Interest::READABLE) } {
            Ok(watched) => {
                tokio::spawn(async move {
                    // A pidfd turns readable once its process has exited.
                    let _ = watched.readable().await;
                    let _ = sender.send(Some(reaper.reap()));
                });
            }
            Err(err) => {
                // Without the reactor: a thread blocks until the exit instead.
                tracing::debug!("cannot watch worker {pid:?}'s pidfd ({err}); waiting on a thread");
                let waiting = std::thread::Builder::new()
                    .name(String::from("cjm-reaper"))
                    .spawn(move || {
                        reaper.wait_blocking();
                        let _ = sender.send(Some(reaper.reap()));
                    });
                if let Err(err) = waiting {
                    // Nobody could follow it: it goes now (killed, then reaped).
                    inner.signal_group(Signal::KILL);
                    inner.reap();
                    return Err(err);
                }
            }
        }
        Ok(WorkerProcess { inner, exit })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.inner.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// `Some(status)` once the process has ended (`status` is `None` if it could not
    /// be read).
    pub(crate) fn exit_status(&self) -> Option<Option<ExitStatus>> {
        *self.exit.borrow()
    }

    pub(crate) fn has_exited(&self) -> bool {
        self.exit_status().is_some()
    }

    /// The notice of its end, alone: what `Worker::exit_notice` waits on.
    pub(crate) fn exit_receiver(&self) -> watch::Receiver<Option<Option<ExitStatus>>> {
        self.exit.clone()
    }

    /// Resolves when the process has ended, with its status if known.
    pub(crate) async fn exited(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.flatten(),
            // The reaper is gone (runtime shutting down): treat as ended.
            Err(_) => None,
        };
        status
    }

    /// Send `signal` to the worker's whole process group, unless its leader has
    /// already been reaped (then the group was killed at its exit, and its id may
    /// belong to someone else).
    pub(crate) fn signal_group(&self, signal: Signal) {
        self.inner.signal_group(signal);
    }
}

impl Leader {
    fn signal_group(&self, signal: Signal) {
        let pidfd = self.pidfd.lock();
        if pidfd.is_some() {
            // ESRCH: the group is already empty, the expected end.
            let _ = rustix::process::kill_process_group(self.pid, signal);
        }
    }

    /// After the leader exited: kill what is left of its group, then reap it.
    fn reap(&self) -> Option<ExitStatus> {
        let mut pidfd = self.pidfd.lock();
        let fd = pidfd.take()?;
        let _ = rustix::process::kill_process_group(self.pid, Signal::KILL);
        match rustix::process::waitid(WaitId::PidFd(fd.as_fd()), WaitIdOptions::EXITED) {
            Ok(Some(status)) => Some(exit_status(&status)),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!("cannot reap worker {:?}: {err}", self.pid);
                None
            }
        }
    }

    /// Block until the leader has exited, leaving it unreaped.
    fn wait_blocking(&self) {
        let Some(fd) = self
            .pidfd
            .lock()
            .as_ref()
            .and_then(|fd| fd.try_clone().ok())
        else {
            return;
        };
        loop {
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
            match rustix::process::waitid(WaitId::PidFd(fd.as_fd()), options) {
                Err(rustix::io::Errno::INTR) => continue,
                _ => return,
            }
        }
    }
}

/// The status in the encoding `wait` uses, which `ExitStatus` reads.
fn exit_status(status: &WaitIdStatus) -> ExitStatus {
    if let Some(code) = status.exit_status() {
        return ExitStatus::from_raw((code & 0xff) << 8);
    }
    match status.terminating_signal() {
        Some(signal) if status.dumped() => ExitStatus::from_raw(signal | 0x80),
        Some(signal) => ExitStatus::from_raw(signal),
        None => ExitStatus::from_raw(0),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    use super::*;

    // The WorkerProcess reaps the child, as in the proxy.
    #[allow(clippy::zombie_processes)]
    fn spawn(program: &str, args: &[&str]) -> WorkerProcess {
        let child = std::process::Command::new(program)
            .args(args)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_child(&child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        WorkerProcess::follow(SpawnedChild::adopt(pid, pidfd)).unwrap()
    }

    fn is_zombie_or_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }

    #[tokio::test]
    async fn an_exit_is_reaped_and_reported_with_its_code() {
        let process = spawn("sh", &["-c", "exit 7"]);
        let status = tokio::time::timeout(Duration::from_secs(5), process.exited())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(7));
        // Reaped: no zombie is left, and no signal goes out any more.
        assert!(std::fs::metadata(format!("/proc/{}", process.pid())).is_err());
        process.signal_group(Signal::KILL);
    }

    #[tokio::test]
    async fn a_group_left_behind_by_its_leader_is_killed_before_the_reap() {
        // The leader starts a long sleeper in its group and exits at once.
        let process = spawn("sh", &["-c", "sleep 30 & echo $! > /dev/null; exit 0"]);
        let pgid = process.pid();
        process.exited().await;
        // Nothing of the group survives: kill(-pgid, 0) finds no one.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let members: Vec<u32> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|stat| {
                            let rest = stat.rsplit_once(')')?.1.to_owned();
                            rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                        })
                        == Some(pgid)
                })
                .filter(|pid| !is_zombie_or_gone(*pid))
                .collect();
            if members.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left running: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_signal_reaches_the_group_while_the_leader_lives() {
        let process = spawn("sleep", &["30"]);
        process.signal_group(Signal::TERM);
        let status = tokio::time::timeout(Duration::from_secs(5), process.exited())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
    }

    /// The property that matters: once the leader is reaped, its id may be handed to
    /// another process, which must never get the worker's signals. The pid is made to
    /// be reused on purpose through `ns_last_pid` (root only); elsewhere the test
    /// checks what it can without that.
    #[tokio::test]
    async fn a_reaped_workers_group_id_reused_by_a_stranger_gets_no_signal() {
        let worker = spawn("true", &[]);
        worker.exited().await;
        let old = worker.pid();
        let mut stranger = None;
        for _ in 0..50 {
            if std::fs::write("/proc/sys/kernel/ns_last_pid", (old - 1).to_string()).is_err() {
                break;
            }
            let child = std::process::Command::new("sleep")
                .arg("30")
                .process_group(0)
                .spawn()
                .unwrap();
            if child.id() == old {
                stranger = Some(child);
                break;
            }
            let mut child = child;
            child.kill().unwrap();
            child.wait().unwrap();
        }
        worker.signal_group(Signal::KILL);
        match stranger {
            Some(mut stranger) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert!(
                    stranger.try_wait().unwrap().is_none(),
                    "the stranger holding the old group id {old} was killed"
                );
                stranger.kill().unwrap();
                stranger.wait().unwrap();
            }
            None => {
                eprintln!(
                    "pid {old} could not be reused here (not root?); checked only that \
                           signalling a reaped worker is harmless"
                );
                assert!(worker.has_exited());
            }
        }
    }
}
