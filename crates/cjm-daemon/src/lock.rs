//! One daemon per home: an exclusive `flock` on `$CJM_HOME/daemon.lock`, which holds
//! the pid of the daemon that took it. The kernel lets go of it when that process
//! ends, however it ends, so a SIGKILLed daemon never leaves a stale lock.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::DaemonError;

/// The lock, held until dropped (or the process ends).
#[derive(Debug)]
pub(crate) struct DaemonLock {
    // Held open: closing it lets go of the lock.
    _file: File,
}

impl DaemonLock {
    /// Take the lock at `path` for this process, or say who holds it.
    pub(crate) fn acquire(home: &Path, path: &Path) -> Result<DaemonLock, DaemonError> {
        let io = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| DaemonError::Io { what, path, source }
        };
        let mut file = cjm_interface::private::private_file_options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("cannot open the lock file"))?;
        cjm_interface::private::make_private(&file).map_err(io("cannot make private"))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => match text.trim().parse::<u32>() {
                        Ok(pid) => format!("pid {pid}"),
                        // It took the lock and has not written its pid yet.
                        Err(_) => String::from("a process starting (no pid written yet)"),
                    },
                    Err(err) => format!("a process (its pid cannot be read: {err})"),
                };
                return Err(DaemonError::AlreadyRunning {
                    home: home.to_path_buf(),
                    lock: PathBuf::from(path),
                    holder,
                });
            }
            Err(errno) => return Err(io("cannot lock")(errno.into())),
        }
        // Ours now: the pid of the last holder goes, ours comes.
        file.set_len(0).map_err(io("cannot write"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("cannot write"))?;
        writeln!(file, "{}", std::process::id()).map_err(io("cannot write"))?;
        file.flush().map_err(io("cannot write"))?;
        Ok(DaemonLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("daemon.lock");
        let held = DaemonLock::acquire(home.path(), &path).unwrap();
        // flock locks belong to the open file: a second open in this process is
        // refused as another process's would be.
        let refused = DaemonLock::acquire(home.path(), &path).unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(held);
        DaemonLock::acquire(home.path(), &path).unwrap();
    }
}
