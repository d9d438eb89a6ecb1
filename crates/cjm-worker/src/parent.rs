//! Noticing that the host process is gone, so that no worker outlives its host.
//!
//! A pidfd of the host becomes readable the moment it exits (no polling, and unlike
//! `PR_SET_PDEATHSIG` it follows the process, not the thread that forked us). Where
//! pidfds are refused (old kernels, some sandboxes): a poll of the host's pid.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Resolves when process `pid` no longer exists.
pub(crate) async fn exited(pid: u32) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => return readable(fd).await,
        Err(rustix::io::Errno::SRCH) => return,
        Err(err) => tracing::debug!("pidfd of host {pid:?} unavailable ({err}); polling instead"),
    }
    while alive(pid) {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn alive(pid: Pid) -> bool {
    // Signal 0 only checks that the process exists; EPERM means it does.
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => true,
        Err(_) => false,
    }
}

async fn readable(fd: OwnedFd) {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until the
    // AsyncFd is dropped.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(err) => {
            let err = std::io::Error::from(err);
            tracing::warn!("cannot watch the host's pidfd ({err}); not following its exit");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(alive(Pid::from_child(&child)));
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), exited(pid))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        child.wait().unwrap();
        // Already gone: resolves at once.
        tokio::time::timeout(Duration::from_millis(500), exited(pid))
            .await
            .unwrap();
    }
}
