//! Compositions: jobs that feed each other. A DAG of nodes, each a plugin call whose
//! arguments may be upstream nodes' outputs ([`OutputRef`]); a node's job is queued
//! (on the one queue, under its one lock) once its inputs exist, a failed or
//! cancelled node skips what depends on it, and the composition's end is derived from
//! its nodes'. The original's `submit_composition` (`core/ports.py`, `core/queue.py`).
//!
//! ```no_run
//! use cjm_manager::jobs::{Composition, CompositionNode, JobOptions, Jobs, OutputRef};
//! use cjm_manager::{ManagerOptions, PluginManager};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PluginManager::new(ManagerOptions::from_env()?);
//! manager.discover_manifests();
//! manager.load_plugin("cjm-echo", None).await?;
//! manager.load_plugin("cjm-wordcount", None).await?;
//! let jobs = Jobs::new(manager.clone(), JobOptions::default()).await?;
//! let pipeline = Composition::new(vec![
//!     CompositionNode::new("write", "cjm-echo")
//!         .kwarg("text", "one two three ")
//!         .kwarg("repeat", 100)
//!         .kwarg("write_to", "/tmp/words.txt"),
//!     CompositionNode::new("count", "cjm-wordcount")
//!         .kwarg("file_path", OutputRef::field("write", "written_to")),
//! ]);
//! let id = jobs.submit_composition(pipeline)?;
//! let ended = jobs.wait_for_composition(id).await?;
//! println!("{}: {:?}", ended.state, ended.node("count").and_then(|n| n.result.as_ref()));
//! # Ok(())
//! # }
//! ```

mod events;
pub(crate) mod journal;
pub(crate) mod run;
mod spec;
mod status;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::broadcast;

pub use events::CompositionEvents;
pub use journal::{recent_compositions, CompositionEntry};
pub use spec::{
    Composition, CompositionError, CompositionNode, Input, NodeTarget, OutputRef, OUTPUT_KEY,
};
pub use status::{
    CompositionChange, CompositionEvent, CompositionId, CompositionState, CompositionStatus,
    NodeState, NodeStatus,
};

use super::model::{JobEvent, JobId};
use super::{Jobs, JobsError};

/// The compositions' events, and which job is which composition's member (so that a
/// member's own events reach the composition's listeners too).
#[derive(Debug)]
pub(crate) struct Hub {
    pub(crate) events: broadcast::Sender<CompositionEvent>,
    /// Taken after the book's lock, never before: it is only ever read and changed
    /// while the book's lock is held.
    members: Mutex<HashMap<JobId, (CompositionId, String)>>,
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Self {
        Hub {
            events: broadcast::channel(capacity).0,
            members: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn send(&self, event: CompositionEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    fn index(&self, job: JobId, composition: CompositionId, node: String) {
        self.members.lock().insert(job, (composition, node));
    }

    fn forget(&self, jobs: impl Iterator<Item = JobId>) {
        let mut members = self.members.lock();
        for job in jobs {
            members.remove(&job);
        }
    }

    /// A job's event, passed on to its composition's listeners if it is a member.
    /// Called under the book's lock with the job's own event.
    pub(crate) fn forward(&self, event: &JobEvent) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let member = self.members.lock().get(&event.job).cloned();
        if let Some((composition, node)) = member {
            self.send(CompositionEvent {
                composition,
                node: Some(node),
                change: CompositionChange::Job {
                    job: event.job,
                    change: event.change.clone(),
                },
            });
        }
    }
}

/// Why a composition operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompositionsError {
    /// The composition is not valid; nothing was queued.
    #[error(transparent)]
    Invalid(#[from] CompositionError),
    /// No such composition (never submitted here, or ended so long ago it was
    /// forgotten).
    #[error("no composition {id} here")]
    Unknown {
        /// The composition asked for.
        id: CompositionId,
    },
    /// The queue refused.
    #[error(transparent)]
    Jobs(#[from] JobsError),
}

impl Jobs {
    /// Submit `composition`: checked whole first (duplicate node ids, references to
    /// nodes that are not there, cycles, plugins not loaded or disabled, task nodes:
    /// each refused naming its node, nothing queued), then its nodes that take no
    /// output are queued; each other node when the nodes it takes from have
    /// succeeded. Never waits.
    pub fn submit_composition(
        &self,
        composition: Composition,
    ) -> Result<CompositionId, CompositionsError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(JobsError::Closed.into());
        }
        let deps = spec::dependencies(&composition.nodes)?;
        for node in &composition.nodes {
            if !inner.host.is_loaded(&node.plugin) {
                return Err(CompositionError::NotLoaded {
                    node: node.id.clone(),
                    plugin: node.plugin.clone(),
                }
                .into());
            }
            if inner.host.is_disabled(&node.plugin) {
                return Err(CompositionError::Disabled {
                    node: node.id.clone(),
                    plugin: node.plugin.clone(),
                }
                .into());
            }
        }
        let id = {
            let mut book = inner.book.lock();
            run::submit_locked(inner, &mut book, composition, deps)
        };
        inner.dispatch.notify_one();
        Ok(id)
    }

    /// The composition's status now (its nodes' states, results and failures).
    pub fn composition(&self, id: CompositionId) -> Option<CompositionStatus> {
        self.inner.book.lock().compositions.status(id)
    }

    /// Every composition known here (running, and recently ended), oldest first.
    pub fn compositions(&self) -> Vec<CompositionStatus> {
        let book = self.inner.book.lock();
        book.compositions
            .ids()
            .into_iter()
            .filter_map(|id| book.compositions.status(id))
            .collect()
    }

    /// The id composition `id` has in the journal.
    pub fn composition_journal_id(&self, id: CompositionId) -> Option<String> {
        self.inner.book.lock().compositions.journal_id(id)
    }

    /// Wait for the composition to end; its final status, every node's result in it.
    pub async fn wait_for_composition(
        &self,
        id: CompositionId,
    ) -> Result<CompositionStatus, CompositionsError> {
        let mut done = self
            .inner
            .book
            .lock()
            .compositions
            .subscribe(id)
            .ok_or(CompositionsError::Unknown { id })?;
        let ended = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| JobsError::Closed)?;
        ended.clone().ok_or(JobsError::Closed.into())
    }

    /// Cancel the composition: nothing more of it starts (nodes not started are
    /// skipped, queued members cancelled at once), and each member admitted or
    /// running is cancelled as [`cancel`](Self::cancel) does (asked, then forced after
    /// the cancel timeout). Whether it had not ended yet; it ends `cancelled`.
    pub fn cancel_composition(&self, id: CompositionId) -> Result<bool, CompositionsError> {
        let (cancelled, started) = {
            let mut book = self.inner.book.lock();
            run::cancel_locked(&self.inner, &mut book, id)
                .ok_or(CompositionsError::Unknown { id })?
        };
        // No new member can start now (the cancel is recorded): these are all.
        for job in started {
            match self.cancel(job) {
                Ok(_) | Err(JobsError::UnknownJob { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(cancelled)
    }

    /// The composition's events from now on: its nodes' states, its members' own
    /// events (state, progress, block reasons, cancel phases) and its end, in order.
    pub fn events_for_composition(&self, id: CompositionId) -> CompositionEvents {
        CompositionEvents::new(self.inner.hub.events.subscribe(), Some(id))
    }

    /// Every composition's events from now on (`cjm-ctl run` subscribes before it
    /// submits, so that it sees its first nodes start).
    pub fn composition_events(&self) -> CompositionEvents {
        CompositionEvents::new(self.inner.hub.events.subscribe(), None)
    }

    /// Compositions that hosts which ended left running, found in the journal when
    /// this queue opened it.
    pub fn interrupted_compositions(&self) -> &[CompositionEntry] {
        &self.inner.interrupted_compositions
    }
}
