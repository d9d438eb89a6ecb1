//! A composition's life in the book: its ready nodes become jobs of the queue, a
//! member's end advances it, a failure skips what depends on it, and its end is
//! derived from its nodes'. Every step runs under the book's lock, called where the
//! job changes it reacts to happen (`run.rs::end_locked`, the cancels), so that a
//! node changes state once, with its event and journal record.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use cjm_interface::{CallArgs, ConfigMap, ErrorCategory};
use serde_json::Value;
use tokio::sync::watch;

use super::journal::CompositionRecord;
use super::spec::{Composition, Input, NodeTarget, OutputRef};
use super::status::{
    CompositionChange, CompositionEvent, CompositionId, CompositionState, CompositionStatus,
    NodeState, NodeStatus,
};
use crate::jobs::journal::Record;
use crate::jobs::model::{JobFailure, JobId, JobState, TaskCall};
use crate::jobs::{Book, Inner, JobsError, NewJob};

/// A member job: which composition and node it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) composition: CompositionId,
    pub(crate) node: usize,
}

/// How a member job ended, as its node takes it.
#[derive(Debug)]
pub(crate) struct MemberEnd {
    pub(crate) state: JobState,
    pub(crate) result: Option<Value>,
    pub(crate) failure: Option<JobFailure>,
}

/// Every composition this queue knows, and the ended ones in the order they ended.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    runs: HashMap<CompositionId, Run>,
    finished: VecDeque<CompositionId>,
    next_id: u64,
}

#[derive(Debug)]
pub(crate) struct Run {
    spec: Composition,
    /// For each node, the nodes whose outputs it takes; and the reverse.
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// Its id in the journal.
    journal_id: String,
    status: CompositionStatus,
    done: watch::Sender<Option<CompositionStatus>>,
}

impl Runs {
    pub(crate) fn status(&self, id: CompositionId) -> Option<CompositionStatus> {
        self.runs.get(&id).map(|run| run.status.clone())
    }

    pub(crate) fn subscribe(
        &self,
        id: CompositionId,
    ) -> Option<watch::Receiver<Option<CompositionStatus>>> {
        self.runs.get(&id).map(|run| run.done.subscribe())
    }

    pub(crate) fn ids(&self) -> Vec<CompositionId> {
        let mut ids: Vec<CompositionId> = self.runs.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Job `job` runs `member`: its events go to the composition's listeners too.
    pub(crate) fn index_member(&self, inner: &Inner, job: JobId, member: Member) {
        if let Some(node) = self
            .runs
            .get(&member.composition)
            .and_then(|run| run.status.nodes.get(member.node))
        {
            inner.hub.index(job, member.composition, node.id.clone());
        }
    }

    /// The journal id of composition `id`.
    pub(crate) fn journal_id(&self, id: CompositionId) -> Option<String> {
        self.runs.get(&id).map(|run| run.journal_id.clone())
    }
}

/// Take in composition `spec` (checked: `deps` are its nodes' dependencies) and queue
/// the nodes that need nothing. Its id.
pub(crate) fn submit_locked(
    inner: &Inner,
    book: &mut Book,
    spec: Composition,
    deps: Vec<Vec<usize>>,
) -> CompositionId {
    let runs = &mut book.compositions;
    runs.next_id += 1;
    let id = CompositionId(runs.next_id);
    let journal_id = format!("{}-c{}", inner.session, id.0);
    let now = SystemTime::now();
    let mut dependents = vec![Vec::new(); spec.nodes.len()];
    for (node, from) in deps.iter().enumerate() {
        for &dep in from {
            dependents[dep].push(node);
        }
    }
    let nodes = spec
        .nodes
        .iter()
        .map(|node| NodeStatus {
            id: node.id.clone(),
            plugin: node.plugin.clone(),
            state: NodeState::Pending,
            job: None,
            result: None,
            failure: None,
            reason: None,
        })
        .collect();
    let status = CompositionStatus {
        id,
        state: CompositionState::Running,
        nodes,
        cancel_requested: false,
        submitted_at: now,
        finished_at: None,
    };
    inner.record(Record::Composition(CompositionRecord::Submitted {
        id: journal_id.clone(),
        nodes: spec
            .nodes
            .iter()
            .map(|node| (node.id.clone(), node.plugin.clone()))
            .collect(),
        at: now,
    }));
    let (done, _) = watch::channel(None);
    runs.runs.insert(
        id,
        Run {
            spec,
            deps,
            dependents,
            journal_id,
            status,
            done,
        },
    );
    start_ready(inner, book, id);
    id
}

/// Queue every node whose inputs are all there (its dependencies succeeded), its
/// inputs bound to their results. A node whose binding fails, or whose job the
/// queue refuses, fails there.
fn start_ready(inner: &Inner, book: &mut Book, id: CompositionId) {
    let Some(run) = book.compositions.runs.get(&id) else {
        return;
    };
    if run.status.cancel_requested {
        finalize_if_done(inner, book, id);
        return;
    }
    let ready: Vec<usize> = (0..run.spec.nodes.len())
        .filter(|&node| {
            run.status.nodes[node].state == NodeState::Pending
                && run.deps[node]
                    .iter()
                    .all(|&dep| run.status.nodes[dep].state == NodeState::Succeeded)
        })
        .collect();
    for node in ready {
        // Looked up again: a node failing here may have skipped the rest (fail fast).
        let Some(run) = book.compositions.runs.get(&id) else {
            return;
        };
        if run.status.nodes[node].state != NodeState::Pending {
            continue;
        }
        let spec = &run.spec.nodes[node];
        let plugin = spec.plugin.clone();
        let priority = spec.priority.unwrap_or(run.spec.priority);
        let task = match &spec.target {
            NodeTarget::Execute => None,
            NodeTarget::Task { task, method } => Some(TaskCall::new(task, method)),
        };
        let call = match bind(run, node) {
            Ok(call) => call,
            Err(failure) => {
                node_failed(inner, book, id, node, failure);
                continue;
            }
        };
        let member = Member {
            composition: id,
            node,
        };
        match inner.enqueue_locked(
            book,
            &plugin,
            NewJob::plain(call, priority).task(task),
            Some(member),
        ) {
            Ok(job) => set_node(inner, book, id, node, NodeState::Running, Some(job)),
            Err(err) => {
                let failure = failure(category_of(&err), format!("its job was refused: {err}"));
                node_failed(inner, book, id, node, failure);
            }
        }
    }
    finalize_if_done(inner, book, id);
}

fn category_of(err: &JobsError) -> ErrorCategory {
    match err {
        JobsError::Manager(err) => err.category().unwrap_or(ErrorCategory::Fatal),
        JobsError::QueueFull { .. } => ErrorCategory::Resource,
        _ => ErrorCategory::Fatal,
    }
}

fn failure(category: ErrorCategory, message: String) -> JobFailure {
    JobFailure {
        category,
        retriable: false,
        message,
    }
}

/// Node `node`'s call: its arguments with every output reference replaced by the
/// value it names; or why one cannot be.
fn bind(run: &Run, node: usize) -> Result<CallArgs, JobFailure> {
    let spec = &run.spec.nodes[node];
    let value = |name: &str, input: &Input| -> Result<Value, JobFailure> {
        match input {
            Input::Value(value) => Ok(value.clone()),
            Input::Output(output) => output_of(run, output).map_err(|why| {
                failure(
                    ErrorCategory::UserInput,
                    format!("input '{name}' cannot be bound: {why}"),
                )
            }),
        }
    };
    let mut args = Vec::with_capacity(spec.args.len());
    for (at, input) in spec.args.iter().enumerate() {
        args.push(value(&format!("#{at}"), input)?);
    }
    let mut kwargs = ConfigMap::new();
    for (name, input) in &spec.kwargs {
        kwargs.insert(name.clone(), value(name, input)?);
    }
    Ok(CallArgs::from_json(args, kwargs))
}

fn output_of(run: &Run, output: &OutputRef) -> Result<Value, String> {
    let producer = run
        .status
        .nodes
        .iter()
        .find(|node| node.id == output.node)
        .ok_or_else(|| format!("there is no node '{}'", output.node))?;
    let result = producer
        .result
        .as_ref()
        .ok_or_else(|| format!("node '{}' has no result", output.node))?;
    let Some(field) = &output.field else {
        return Ok(result.clone());
    };
    match result {
        Value::Object(map) => map.get(field).cloned().ok_or_else(|| {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
            keys.truncate(20);
            format!(
                "the result of node '{}' has no field '{field}' (it has: {})",
                output.node,
                keys.join(", ")
            )
        }),
        other => Err(format!(
            "the result of node '{}' is not an object, so it has no field '{field}' (it is {})",
            output.node,
            kind_of(other)
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A member job ended: its node takes the job's end, and the composition moves on.
pub(crate) fn member_ended(inner: &Inner, book: &mut Book, member: Member, end: MemberEnd) {
    let Member {
        composition: id,
        node,
    } = member;
    let Some(run) = book.compositions.runs.get_mut(&id) else {
        return;
    };
    if run.status.nodes.get(node).map(|node| node.state) != Some(NodeState::Running) {
        return;
    }
    match end.state {
        JobState::Succeeded => {
            run.status.nodes[node].result = end.result;
            set_node(inner, book, id, node, NodeState::Succeeded, None);
            start_ready(inner, book, id);
        }
        JobState::Cancelled => {
            set_node(inner, book, id, node, NodeState::Cancelled, None);
            after_stop(inner, book, id, node, "was cancelled");
        }
        _ => {
            run.status.nodes[node].failure = end.failure;
            set_node(inner, book, id, node, NodeState::Failed, None);
            after_stop(inner, book, id, node, "failed");
        }
    }
}

/// Node `node` failed before it had a job.
fn node_failed(inner: &Inner, book: &mut Book, id: CompositionId, node: usize, why: JobFailure) {
    let Some(run) = book.compositions.runs.get_mut(&id) else {
        return;
    };
    tracing::warn!(
        "composition {id}: node '{}' failed: {}",
        run.status.nodes[node].id,
        why.message
    );
    run.status.nodes[node].failure = Some(why);
    set_node(inner, book, id, node, NodeState::Failed, None);
    after_stop(inner, book, id, node, "failed");
}

/// Node `node` failed or was cancelled: what depends on it is skipped; failing fast,
/// so is everything not started, and queued members are cancelled.
fn after_stop(inner: &Inner, book: &mut Book, id: CompositionId, node: usize, how: &str) {
    let Some(run) = book.compositions.runs.get(&id) else {
        return;
    };
    let name = run.status.nodes[node].id.clone();
    let mut seen = vec![false; run.spec.nodes.len()];
    let mut frontier: VecDeque<usize> = run.dependents[node].iter().copied().collect();
    let mut skip = Vec::new();
    while let Some(next) = frontier.pop_front() {
        if std::mem::replace(&mut seen[next], true) {
            continue;
        }
        if run.status.nodes[next].state == NodeState::Pending {
            skip.push(next);
        }
        frontier.extend(run.dependents[next].iter().copied());
    }
    let fail_fast = run.spec.fail_fast && !run.status.cancel_requested;
    for next in skip {
        skip_node(
            inner,
            book,
            id,
            next,
            format!("node '{name}', whose output it needs, {how}"),
        );
    }
    if fail_fast {
        halt(inner, book, id, &format!("node '{name}' {how} (fail fast)"));
    }
    finalize_if_done(inner, book, id);
}

/// Stop the composition: every node not started is skipped for `why`, every queued
/// member cancelled. Members admitted or running are left to the caller.
fn halt(inner: &Inner, book: &mut Book, id: CompositionId, why: &str) -> Vec<JobId> {
    let Some(run) = book.compositions.runs.get(&id) else {
        return Vec::new();
    };
    let pending: Vec<usize> = (0..run.status.nodes.len())
        .filter(|&node| run.status.nodes[node].state == NodeState::Pending)
        .collect();
    let members: Vec<JobId> = run
        .status
        .nodes
        .iter()
        .filter(|node| node.state == NodeState::Running)
        .filter_map(|node| node.job)
        .collect();
    for node in pending {
        skip_node(inner, book, id, node, why.to_owned());
    }
    // Each queued one ends here, under this lock (its node with it); the others are
    // on their way to a worker or there.
    let mut started = Vec::new();
    for job in members {
        let queued = book
            .jobs
            .get(&job)
            .is_some_and(|entry| entry.status.state == JobState::Queued);
        if queued {
            inner.cancel_queued_locked(book, job);
        } else {
            started.push(job);
        }
    }
    started
}

fn skip_node(inner: &Inner, book: &mut Book, id: CompositionId, node: usize, why: String) {
    if let Some(run) = book.compositions.runs.get_mut(&id) {
        run.status.nodes[node].reason = Some(why);
    }
    set_node(inner, book, id, node, NodeState::Skipped, None);
}

/// Node `node` enters `state`: its status, event and journal record together.
fn set_node(
    inner: &Inner,
    book: &mut Book,
    id: CompositionId,
    node: usize,
    state: NodeState,
    job: Option<JobId>,
) {
    let Some(run) = book.compositions.runs.get_mut(&id) else {
        return;
    };
    let status = &mut run.status.nodes[node];
    status.state = state;
    if job.is_some() {
        status.job = job;
    }
    let job_journal_id = status
        .job
        .and_then(|job| book.jobs.get(&job))
        .map(|entry| entry.call_id.clone());
    inner.record(Record::Composition(CompositionRecord::Node {
        composition: run.journal_id.clone(),
        node: status.id.clone(),
        state,
        job: job_journal_id,
        reason: status
            .failure
            .as_ref()
            .map(|failure| failure.message.clone())
            .or_else(|| status.reason.clone()),
    }));
    inner.hub.send(CompositionEvent {
        composition: id,
        node: Some(status.id.clone()),
        change: CompositionChange::Node {
            state,
            job: status.job,
        },
    });
}

/// The composition's end once every node has ended: derived from its nodes, told
/// to its waiters, listeners and the journal. Once.
fn finalize_if_done(inner: &Inner, book: &mut Book, id: CompositionId) {
    let Some(run) = book.compositions.runs.get_mut(&id) else {
        return;
    };
    if run.status.state != CompositionState::Running
        || !run.status.nodes.iter().all(|node| node.state.is_final())
    {
        return;
    }
    let state = derive(&run.status);
    let now = SystemTime::now();
    run.status.state = state;
    run.status.finished_at = Some(now);
    inner.record(Record::Composition(CompositionRecord::Ended {
        id: run.journal_id.clone(),
        state,
        at: now,
    }));
    // Its listeners are told before its waiters: a waiter that then reads the
    // events finds the end among them.
    inner.hub.send(CompositionEvent {
        composition: id,
        node: None,
        change: CompositionChange::Ended(state),
    });
    run.done.send_replace(Some(run.status.clone()));
    let runs = &mut book.compositions;
    runs.finished.push_back(id);
    while runs.finished.len() > inner.options.keep_finished {
        let Some(old) = runs.finished.pop_front() else {
            break;
        };
        if let Some(run) = runs.runs.remove(&old) {
            inner
                .hub
                .forget(run.status.nodes.iter().filter_map(|node| node.job));
        }
    }
}

/// A composition's end from its nodes': a cancel of the whole wins, then a failure,
/// then a cancelled member; else it succeeded.
pub(crate) fn derive(status: &CompositionStatus) -> CompositionState {
    let any = |state: NodeState| status.nodes.iter().any(|node| node.state == state);
    if status.cancel_requested {
        CompositionState::Cancelled
    } else if any(NodeState::Failed) {
        CompositionState::Failed
    } else if any(NodeState::Cancelled) || any(NodeState::Skipped) {
        CompositionState::Cancelled
    } else {
        CompositionState::Succeeded
    }
}

/// Cancel composition `id`: nothing more starts (pending nodes are skipped, queued
/// members cancelled, under the lock); the members admitted or running are returned
/// for the caller to cancel through the jobs' phases. `None` for an unknown
/// composition; an empty list also for one that had ended.
pub(crate) fn cancel_locked(
    inner: &Inner,
    book: &mut Book,
    id: CompositionId,
) -> Option<(bool, Vec<JobId>)> {
    let run = book.compositions.runs.get_mut(&id)?;
    if run.status.state != CompositionState::Running {
        return Some((false, Vec::new()));
    }
    run.status.cancel_requested = true;
    let started = halt(inner, book, id, "the composition was cancelled");
    finalize_if_done(inner, book, id);
    Some((true, started))
}
