//! Noticing that the host process is gone, so that no worker outlives its host.
//!
//! Linux: a pidfd of the host becomes readable the moment it exits (no polling, and
//! unlike `PR_SET_PDEATHSIG` it follows the process, not the thread that forked us).
//! Elsewhere, or where pidfds are refused: a poll of the host's pid.

use std::time::Duration;

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Resolves when process `pid` no longer exists.
pub(crate) async fn exited(pid: u32) {
    #[cfg(target_os = "linux")]
    match pidfd::open(pid) {
        Ok(fd) => {
            pidfd::readable(fd).await;
            return;
        }
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return,
        Err(err) => tracing::debug!("pidfd of host {pid} unavailable ({err}); polling instead"),
    }
    while alive(pid) {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(target_os = "linux")]
mod pidfd {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub(super) fn open(pid: u32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just returned this new descriptor; we are its only owner.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub(super) async fn readable(fd: OwnedFd) {
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and unchanged until
        // the AsyncFd is dropped.
        match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(err) => {
                let err = io::Error::from(err);
                tracing::warn!("cannot watch the host's pidfd ({err}); not following its exit");
                std::future::pending::<()>().await;
            }
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
        assert!(alive(pid));
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
