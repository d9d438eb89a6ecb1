//! Workers are forked from one long-lived thread. `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child exits, not the process: forked from a runtime
//! worker or a short-lived blocking thread, a worker would be killed the moment that
//! thread ended. One dedicated thread that never exits makes the signal mean what it
//! should: the host is gone.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::mpsc;
use std::sync::OnceLock;

use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::sync::oneshot;

type Spawned = io::Result<(Pid, OwnedFd)>;

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
                        let _ = job.reply.send(spawn_here(&mut job.command));
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

/// Spawn `command` from the spawner thread: the child's pid and a pidfd of it. The
/// child is left unreaped, for [`WorkerProcess`](crate::process::WorkerProcess) alone
/// to reap.
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
        Ok(pidfd) => Ok((pid, pidfd)),
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
