//! Workers are forked from one long-lived thread. `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child exits, not the process: forked from a runtime
//! worker or a short-lived blocking thread, a worker would be killed the moment that
//! thread ended. One dedicated thread that never exits makes the signal mean what it
//! should: the host is gone.

use std::io;
use std::sync::mpsc;
use std::sync::OnceLock;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

struct Job {
    command: Command,
    /// The caller's runtime: the child is registered with its process driver.
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
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
                        let _runtime = job.runtime.enter();
                        let _ = job.reply.send(job.command.spawn());
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

/// Spawn `command` from the spawner thread, on the current runtime.
pub(crate) async fn spawn(command: Command) -> io::Result<Child> {
    let Some(spawner) = spawner() else {
        let mut command = command;
        return command.spawn();
    };
    let (reply, answer) = oneshot::channel();
    let job = Job {
        command,
        runtime: Handle::current(),
        reply,
    };
    if let Err(mpsc::SendError(job)) = spawner.send(job) {
        let mut command = job.command;
        return command.spawn();
    }
    answer
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the cjm-spawner thread is gone")))
}
