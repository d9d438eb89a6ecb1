//! The host's own SQLite file in `CJM_HOME` (`host.sqlite3`, beside the job
//! journal): one connection on a thread of its own that runs the stores' work in the
//! order it was asked, so that a disable followed by an enable lands in that order
//! and no caller's task waits on the disk while holding anything.
//!
//! Several hosts may share one `CJM_HOME` (a server and `cjm-ctl exec`): WAL, a busy
//! timeout, and every change a transaction of its own, so neither corrupts the file
//! nor loses the other's rows. The file is the user's alone (0600 in a 0700 folder):
//! it holds plugins' configurations.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use rusqlite::Connection;

/// The host store's file cannot be opened or set up.
#[derive(Debug, thiserror::Error)]
#[error("host store {}: {what}", path.display())]
pub struct StoreError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub what: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    pub(crate) fn new<E>(path: &Path, what: &str, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError {
            path: path.to_owned(),
            what: what.to_owned(),
            source: Box::new(source),
        }
    }
}

type Work = Box<dyn FnOnce(&mut Connection) + Send>;

/// The file and the thread that owns its connection.
pub(crate) struct HostDb {
    path: PathBuf,
    sender: Mutex<Option<mpsc::Sender<Work>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for HostDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl HostDb {
    /// Open (creating) the file at `path` with `schema`, and run `first` on it before
    /// anything else (what a manager must know at once, such as which plugins are
    /// disabled). Blocking: a host that holds the file's lock may keep it up to the
    /// busy timeout.
    pub(crate) fn open<T>(
        path: &Path,
        schema: &str,
        first: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<(HostDb, T), StoreError> {
        let mut connection =
            crate::sqlite_file::open_private(path, schema).map_err(|failure| StoreError {
                path: path.to_owned(),
                what: failure.what.to_owned(),
                source: failure.source,
            })?;
        let found =
            first(&mut connection).map_err(|err| StoreError::new(path, "cannot read it", err))?;
        let (sender, work) = mpsc::channel::<Work>();
        let thread = std::thread::Builder::new()
            .name(String::from("cjm-host-store"))
            .spawn(move || {
                while let Ok(job) = work.recv() {
                    job(&mut connection);
                }
            })
            .map_err(|err| StoreError::new(path, "cannot start its thread", err))?;
        Ok((
            HostDb {
                path: path.to_owned(),
                sender: Mutex::new(Some(sender)),
                thread: Mutex::new(Some(thread)),
            },
            found,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Run `work` after everything asked before it, without waiting for it.
    pub(crate) fn submit(&self, work: impl FnOnce(&mut Connection) + Send + 'static) {
        let sent = self
            .sender
            .lock()
            .as_ref()
            .is_some_and(|sender| sender.send(Box::new(work)).is_ok());
        if !sent {
            tracing::warn!(
                "host store {}: its thread is gone; a change was not written",
                self.path.display()
            );
        }
    }

    /// Run `work` after everything asked before it, and wait for its answer. `None`
    /// when the store's thread is gone. A caller dropped meanwhile only stops
    /// waiting: the work, one transaction, still runs whole.
    pub(crate) async fn ask<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Option<R> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(move |connection| {
            let _ = answer.send(work(connection));
        });
        answered.await.ok()
    }
}

impl Drop for HostDb {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has done everything asked.
        drop(self.sender.lock().take());
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        // Joining may wait for the disk: never on a runtime's worker. A runtime
        // waits for its blocking tasks as it shuts down, so nothing is lost.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || thread.join());
            }
            Err(_) => {
                let _ = thread.join();
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}
