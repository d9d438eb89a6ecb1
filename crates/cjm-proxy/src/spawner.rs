//! Workers are forked from one long-lived thread. `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child exits, not the process: forked from a runtime
//! worker or a short-lived blocking thread, a worker would be killed the moment that
//! thread ended. One dedicated thread that never exits makes the signal mean what it
//! should: the host is gone.
//!
//! The caller may give up (its start future dropped: a timeout, a `select!`, an
//! aborted task) after its request reached the thread. The child it would have been
//! given is then nobody's: [`SpawnedChild`] kills its group and reaps it on drop,
//! wherever it is dropped (in the spawner thread when the reply finds no one, in the
//! reply channel when the waiter went away before reading it).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::mpsc;
use std::sync::OnceLock;

use rustix::process::{pidfd_open, Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use tokio::sync::oneshot;

type Spawned = io::Result<SpawnedChild>;

/// A child just spawned (the leader of its own process group), unreaped. Until
/// [`claim`](Self::claim)ed, dropping it kills its group and reaps it.
#[derive(Debug)]
pub(crate) struct SpawnedChild {
    pid: Pid,
    /// `None` once claimed.
    pidfd: Option<OwnedFd>,
}

impl SpawnedChild {
    /// Take charge of `pid`, an unreaped child of this process that nothing else
    /// waits for, which `pidfd` refers to.
    #[cfg(test)]
    pub(crate) fn adopt(pid: Pid, pidfd: OwnedFd) -> Self {
        SpawnedChild {
            pid,
            pidfd: Some(pidfd),
        }
    }

    /// A second descriptor of the child's pidfd.
    pub(crate) fn try_clone_pidfd(&self) -> io::Result<OwnedFd> {
        match &self.pidfd {
            Some(pidfd) => pidfd.try_clone(),
            None => Err(io::Error::other("the worker was handed on already")),
        }
    }

    /// The child's pid and a pidfd of it, for whoever follows it from now on (and
    /// alone reaps it): dropping it no longer kills it.
    pub(crate) fn claim(mut self) -> (Pid, Option<OwnedFd>) {
        (self.pid, self.pidfd.take())
    }
}

impl Drop for SpawnedChild {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        tracing::debug!(
            "worker {:?} was started for a caller that gave up; killing it",
            self.pid
        );
        // Unreaped, so its pid and group id are still its own: no stranger is hit.
        let _ = rustix::process::kill_process_group(self.pid, Signal::KILL);
        let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
        // Reaped off this thread: the spawner thread must not wait on anyone, and a
        // runtime thread must not block.
        let reap = move || loop {
            match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
                Err(rustix::io::Errno::INTR) => continue,
                _ => return,
            }
        };
        if let Err(err) = std::thread::Builder::new()
            .name(String::from("cjm-reaper"))
            .spawn(reap)
        {
            tracing::warn!("cannot start a thread to reap an abandoned worker ({err})");
        }
    }
}

struct Job {
    command: Command,
    reply: oneshot::Sender<Spawned>,
}

/// The spawner's queue; `None` if its thread could not be started. The static holds
/// the sender for the life of the process, so the thread never ends.
static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

fn spawner() -> Option<&'static mpsc::Sender<Job>> {
    SPAWNER
        .get_or_init(|| {
            let (sender, jobs) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name(String::from("cjm-spawner"))
                .spawn(move || {
                    for mut job in jobs {
                        // Nobody waiting any more: the child comes back here and is
                        // dropped, which kills and reaps it.
                        drop(job.reply.send(spawn_here(&mut job.command)));
                    }
                });
            match started {
                Ok(_) => Some(sender),
                Err(err) => {
                    tracing::warn!(
                        "cannot start the cjm-spawner thread ({err}); workers are forked from \
                         the calling thread, and a parent-death signal may come early"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Spawn `command` from the spawner thread. The child is left unreaped, for
/// [`WorkerProcess`](crate::process::WorkerProcess) alone to reap once claimed; if
/// this future is dropped first, the child is killed and reaped.
pub(crate) async fn spawn(command: Command) -> Spawned {
    let Some(spawner) = spawner() else {
        let mut command = command;
        return spawn_here(&mut command);
    };
    let (reply, answer) = oneshot::channel();
    if let Err(mpsc::SendError(job)) = spawner.send(Job { command, reply }) {
        let mut command = job.command;
        return spawn_here(&mut command);
    }
    answer
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the cjm-spawner thread is gone")))
}

fn spawn_here(command: &mut Command) -> Spawned {
    let child = command.spawn()?;
    let pid = Pid::from_child(&child);
    // Nobody has reaped the child (std's `Child` never waits unless asked), so this
    // pid is still ours even if the child has already exited.
    match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => Ok(SpawnedChild {
            pid,
            pidfd: Some(pidfd),
        }),
        Err(err) => {
            // Cannot follow it safely: do not leave it running unwatched.
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::new(
                err.kind(),
                format!("cannot open a pidfd for the new worker: {err}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;

    /// `program` as found on `PATH`.
    fn on_path(program: &str) -> PathBuf {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
            .unwrap()
    }

    /// Processes named `name` (their `comm`) that still run, or that are zombies
    /// this process should have reaped.
    fn left_over(name: &str) -> Vec<u32> {
        let own = std::process::id();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let Some((head, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let comm = head.split_once('(').map_or("", |(_, comm)| comm);
                let mut fields = rest.split_whitespace();
                let state = fields.next().unwrap_or("");
                let parent = fields.next().and_then(|ppid| ppid.parse::<u32>().ok());
                // A zombie handed to init is init's to reap, not ours.
                comm == name && (state != "Z" || parent == Some(own))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_worker_whose_caller_gave_up_is_killed_with_its_group_and_reaped() {
        // A name of our own (a link to `sleep`), to find the processes by.
        let dir = tempfile::tempdir().unwrap();
        let name = format!("cjmlost{}", std::process::id() % 1_000_000);
        let link = dir.path().join(&name);
        std::os::unix::fs::symlink(on_path("sleep"), &link).unwrap();
        // A leader and one more process in its group.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{0} 300 & exec {0} 300", link.display()))
            .process_group(0);
        // Polled once (the request goes to the spawner thread), then dropped: a caller
        // that gave up at once.
        let mut start = Box::pin(spawn(command));
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(start.as_mut(), cx))
        })
        .await;
        assert!(first.is_pending(), "answered on the first poll: {first:?}");
        drop(start);
        // The spawner takes requests in order: once a later one is answered, ours has
        // been handled.
        drop(spawn(Command::new("true")).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = left_over(&name);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left running unwatched: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
