//! A composition as callers see it while it runs and once it has ended.

use std::fmt;
use std::time::SystemTime;

use serde_json::Value;

use crate::jobs::model::{JobChange, JobFailure, JobId};

/// A composition's number within its [`Jobs`](crate::jobs::Jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompositionId(pub u64);

impl fmt::Display for CompositionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "composition-{}", self.0)
    }
}

/// Where a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// Waiting for its inputs (it has no job yet).
    Pending,
    /// Its job exists: queued, admitted or running.
    Running,
    /// Its job succeeded.
    Succeeded,
    /// Its job failed, or it could not be given one (an input missing, a plugin
    /// gone); see [`NodeStatus::failure`].
    Failed,
    /// Its job was cancelled.
    Cancelled,
    /// It never ran: an input it needs will never exist, or the composition stopped
    /// (see [`NodeStatus::reason`]).
    Skipped,
    /// It had not ended when its host did (found in the journal).
    Interrupted,
}

impl NodeState {
    /// Its name, as the journal and `cjm-ctl run` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Running => "running",
            NodeState::Succeeded => "succeeded",
            NodeState::Failed => "failed",
            NodeState::Cancelled => "cancelled",
            NodeState::Skipped => "skipped",
            NodeState::Interrupted => "interrupted",
        }
    }

    /// Whether the node is done for good.
    pub fn is_final(self) -> bool {
        !matches!(self, NodeState::Pending | NodeState::Running)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a composition is; its end is derived from its nodes'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompositionState {
    /// Some node has not ended.
    Running,
    /// Every node succeeded.
    Succeeded,
    /// A node failed (and no cancel of the composition was asked).
    Failed,
    /// The composition was cancelled, or (none failing) a node's job was.
    Cancelled,
    /// It had not ended when its host did (found in the journal).
    Interrupted,
}

impl CompositionState {
    /// Its name, as the journal and `cjm-ctl run` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            CompositionState::Running => "running",
            CompositionState::Succeeded => "succeeded",
            CompositionState::Failed => "failed",
            CompositionState::Cancelled => "cancelled",
            CompositionState::Interrupted => "interrupted",
        }
    }

    /// The state of a name; `None` for one it does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            CompositionState::Running,
            CompositionState::Succeeded,
            CompositionState::Failed,
            CompositionState::Cancelled,
            CompositionState::Interrupted,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }
}

impl fmt::Display for CompositionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of a composition now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Its id.
    pub id: String,
    /// The plugin it calls.
    pub plugin: String,
    /// Where it is.
    pub state: NodeState,
    /// Its job, once it has one.
    pub job: Option<JobId>,
    /// Its job's result, once it succeeded.
    pub result: Option<Value>,
    /// Why it failed.
    pub failure: Option<JobFailure>,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// A composition as [`Jobs::composition`](crate::jobs::Jobs::composition) and
/// [`Jobs::wait_for_composition`](crate::jobs::Jobs::wait_for_composition) report it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CompositionStatus {
    /// The composition.
    pub id: CompositionId,
    /// Where it is.
    pub state: CompositionState,
    /// Its nodes, in the order submitted.
    pub nodes: Vec<NodeStatus>,
    /// Whether a cancel of the whole was asked.
    pub cancel_requested: bool,
    /// When it was submitted.
    pub submitted_at: SystemTime,
    /// When its last node ended.
    pub finished_at: Option<SystemTime>,
}

impl CompositionStatus {
    /// Node `id`.
    pub fn node(&self, id: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The first failed node's failure: what the composition's failure is said to be.
    pub fn first_failure(&self) -> Option<(&NodeStatus, &JobFailure)> {
        self.nodes
            .iter()
            .find_map(|node| Some((node, node.failure.as_ref()?)))
    }
}

/// Something that happened in a composition, as
/// [`Jobs::events_for_composition`](crate::jobs::Jobs::events_for_composition)
/// delivers it, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositionEvent {
    /// The composition.
    pub composition: CompositionId,
    /// The node it concerns; `None` for the composition's end.
    pub node: Option<String>,
    /// What happened.
    pub change: CompositionChange,
}

/// What happened in a composition.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CompositionChange {
    /// A node entered a state (`Running` once its job was queued, with that job).
    Node {
        /// The state.
        state: NodeState,
        /// Its job, if it has one.
        job: Option<JobId>,
    },
    /// A member job's own change (its state, progress, block reason, cancel phase).
    Job {
        /// The job.
        job: JobId,
        /// What happened to it.
        change: JobChange,
    },
    /// The composition ended.
    Ended(CompositionState),
}
