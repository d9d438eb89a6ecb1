//! A worker on another machine (or one this host did not start), as the proxy
//! follows it: it has "ended" when its placement says so (a Ray job in a terminal
//! state) or when it stopped answering the lease several times in a row; stopping it
//! is asking its placement.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cjm_interface::wire;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::transport::{Outgoing, Transport};

/// Stops a placed worker (a Ray job's stop): the reason it ended, in words.
pub(crate) type Stopper =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Lease renewals that may fail in a row before the worker counts as gone: one lost
/// request is a blip, three are a worker (or a network) that is not there.
const LEASE_FAILURES_TO_GONE: u32 = 3;

#[derive(Clone)]
pub(crate) struct RemoteWorker {
    inner: Arc<Inner>,
    gone: watch::Receiver<Option<String>>,
}

struct Inner {
    gone: watch::Sender<Option<String>>,
    /// `None` for a worker the host does not own (attached): it is only let go.
    stopper: Option<Stopper>,
    stopping: AtomicBool,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for RemoteWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWorker")
            .field("gone", &*self.gone.borrow())
            .finish_non_exhaustive()
    }
}

impl RemoteWorker {
    /// Needs a tokio runtime (the tasks that follow the worker run on it).
    pub(crate) fn new(stopper: Option<Stopper>) -> Self {
        let (sender, gone) = watch::channel(None);
        RemoteWorker {
            inner: Arc::new(Inner {
                gone: sender,
                stopper,
                stopping: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                runtime: tokio::runtime::Handle::current(),
            }),
            gone,
        }
    }

    /// Whether stopping it stops the worker (its placement can), rather than only
    /// letting it go (a worker someone else runs).
    pub(crate) fn is_owned(&self) -> bool {
        self.inner.stopper.is_some()
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.borrow().is_some()
    }

    pub(crate) fn gone_reason(&self) -> Option<String> {
        self.gone.borrow().clone()
    }

    /// The notice of its end, alone: holding it keeps nothing of the worker alive.
    pub(crate) fn gone_receiver(&self) -> watch::Receiver<Option<String>> {
        self.gone.clone()
    }

    pub(crate) async fn gone(&self) {
        let mut gone = self.gone.clone();
        // An error means the sender is gone, which happens only with the worker.
        let _ = gone.wait_for(Option::is_some).await;
    }

    /// Record that the worker has ended (the first reason stays).
    pub(crate) fn mark_gone(&self, reason: String) {
        self.inner.gone.send_if_modified(|gone| {
            if gone.is_some() {
                return false;
            }
            *gone = Some(reason);
            true
        });
    }

    /// Follow the worker with `task` (aborted when the worker is stopped or dropped).
    pub(crate) fn follow(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.inner.runtime.spawn(task);
        self.inner.tasks.lock().push(handle.abort_handle());
    }

    /// Renew the worker's lease every `every`, marking it gone after a few failures
    /// in a row. Every request renews the lease; this keeps an idle worker alive.
    pub(crate) fn renew_lease(&self, transport: Transport, every: Duration) {
        let worker = self.clone_weak_sender();
        self.follow(async move {
            let mut failures = 0;
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let renewed = transport
                    .send(Outgoing::post(wire::PATH_LEASE, Bytes::new()))
                    .await
                    .map_err(|reason| reason.to_string())
                    .and_then(|response| {
                        if response.status().is_success() {
                            Ok(())
                        } else {
                            Err(format!("answered {}", response.status()))
                        }
                    });
                match renewed {
                    Ok(()) => failures = 0,
                    Err(reason) => {
                        failures += 1;
                        tracing::debug!("lease renewal failed ({failures} in a row): {reason}");
                        if failures >= LEASE_FAILURES_TO_GONE {
                            worker.send_if_modified(|gone| {
                                if gone.is_some() {
                                    return false;
                                }
                                *gone = Some(format!(
                                    "stopped answering ({failures} lease renewals failed, \
                                     the last: {reason})"
                                ));
                                true
                            });
                            return;
                        }
                    }
                }
            }
        });
    }

    /// A sender for tasks: they must not keep the worker's stopper alive.
    fn clone_weak_sender(&self) -> GoneSender {
        GoneSender(Arc::downgrade(&self.inner))
    }

    #[cfg(feature = "ray")]
    pub(crate) fn gone_sender(&self) -> GoneSender {
        self.clone_weak_sender()
    }

    /// Stop the worker (once): its placement's stop, or, for a worker the host does
    /// not own, only letting it go.
    pub(crate) fn stop(&self) {
        if self.inner.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.abort_tasks();
        match self.inner.stopper.clone() {
            None => self.mark_gone(String::from("let go by the host")),
            Some(stopper) => {
                let sender = self.clone_weak_sender();
                self.inner.runtime.spawn(async move {
                    let reason = stopper().await;
                    sender.send_if_modified(|gone| {
                        let changed = gone.is_none();
                        if changed {
                            *gone = Some(reason);
                        }
                        changed
                    });
                });
            }
        }
    }
}

/// Marks a worker gone from a task that follows it, without keeping it alive.
#[derive(Clone)]
pub(crate) struct GoneSender(std::sync::Weak<Inner>);

impl GoneSender {
    fn send_if_modified(&self, change: impl FnOnce(&mut Option<String>) -> bool) {
        if let Some(inner) = self.0.upgrade() {
            inner.gone.send_if_modified(change);
        }
    }

    /// Record that the worker has ended (the first reason stays).
    #[cfg(feature = "ray")]
    pub(crate) fn mark_gone(&self, reason: String) {
        self.send_if_modified(|gone| {
            let changed = gone.is_none();
            if changed {
                *gone = Some(reason);
            }
            changed
        });
    }
}

impl Inner {
    fn abort_tasks(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.abort_tasks();
        // A worker dropped without a stop (its proxy was dropped mid-start) is stopped
        // now; its lease would end it too, but not at once.
        if !self.stopping.swap(true, Ordering::SeqCst) {
            if let Some(stopper) = self.stopper.take() {
                self.runtime.spawn(async move {
                    let reason = stopper().await;
                    tracing::debug!("remote worker dropped: {reason}");
                });
            }
        }
    }
}
