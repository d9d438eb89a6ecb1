//! What a job is, as callers see it: its id, state, status and events.

use std::fmt;
use std::time::SystemTime;

use cjm_interface::ErrorCategory;
use serde_json::Value;

/// A job's number, unique within its [`Jobs`](super::Jobs); the journal adds the
/// session to make it unique across hosts and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// A job that calls a method of a task adapter (`POST /task`) instead of the
/// plugin's `execute`; see [`Jobs::submit_task`](super::Jobs::submit_task).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskCall {
    /// The task, such as `"graph-storage"`.
    pub task: String,
    /// The adapter's method.
    pub method: String,
}

impl TaskCall {
    /// Method `method` of task `task`.
    pub fn new(task: impl Into<String>, method: impl Into<String>) -> Self {
        TaskCall {
            task: task.into(),
            method: method.into(),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its turn (priority, the plugin's limit on jobs at once).
    Queued,
    /// Its turn came: being admitted by the scheduler and its worker made ready.
    Admitted,
    /// Sent to the worker.
    Running,
    /// Ended with a result.
    Succeeded,
    /// Ended with an error; see [`JobStatus::failure`].
    Failed,
    /// Cancelled; see [`JobStatus::cancelled`] for how.
    Cancelled,
    /// Was queued or running when its host ended (found in the journal).
    Interrupted,
}

impl JobState {
    /// The state's name, as the journal and `cjm-ctl jobs` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Admitted => "admitted",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    /// The state of a name; `None` for one it does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            JobState::Queued,
            JobState::Admitted,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
            JobState::Interrupted,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }

    /// Whether the job has ended (for good).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Interrupted
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job was cancelled. New ways may be added: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cancellation {
    /// Before it started: it never ran.
    WhileQueued,
    /// The plugin stopped when asked.
    Cooperative,
    /// The plugin did not stop in time (or cannot be asked): its worker was killed
    /// and started again with its configuration.
    Forced,
    /// The plugin did not stop in time, and its worker is not the host's to kill (an
    /// attached worker, which someone else runs): the host stopped waiting for the
    /// call, which may run on in the worker until it ends.
    Abandoned,
}

impl Cancellation {
    /// The name the journal uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Cancellation::WhileQueued => "queued",
            Cancellation::Cooperative => "cooperative",
            Cancellation::Forced => "forced",
            Cancellation::Abandoned => "abandoned",
        }
    }
}

/// Why a job failed: what the manager or the plugin said, and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    /// `user_input`, `transient`, `resource` or `fatal`.
    pub category: ErrorCategory,
    /// Whether trying again may help.
    pub retriable: bool,
    /// The error, with its causes.
    pub message: String,
}

/// A job as [`Jobs::status`](super::Jobs::status) reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// The plugin it runs.
    pub plugin: String,
    /// Its priority as submitted (higher goes first).
    pub priority: i32,
    /// Where it is.
    pub state: JobState,
    /// Its latest progress report: fraction (negative: cannot tell) and message.
    pub progress: Option<(f64, String)>,
    /// When it was submitted, admitted, sent to the worker and ended.
    pub submitted_at: SystemTime,
    /// When its turn came.
    pub admitted_at: Option<SystemTime>,
    /// When it was sent to the worker.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// Attempts made (more than one after transient failures were retried).
    pub attempts: u32,
    /// Why it failed, when it did.
    pub failure: Option<JobFailure>,
    /// How it was cancelled, when it was.
    pub cancelled: Option<Cancellation>,
}

/// What a job was admitted with: its plugin's declared needs, what the scheduler
/// reserved for it, and the machine as the scheduler read it then (the original's
/// `get_resource_snapshot`, taken at admission rather than sampled later).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResourceSnapshot {
    /// The plugin's declared needs (as admitted: none for a worker placed elsewhere).
    pub declared: cjm_metadata::ResourceRequirements,
    /// Whether a GPU was required.
    pub requires_gpu: bool,
    /// System memory reserved for it while it runs, in MiB.
    pub reserved_ram_mb: u64,
    /// GPU memory reserved for it while it runs, in MiB.
    pub reserved_vram_mb: u64,
    /// The machine as the scheduler read it to admit the job; `None` when its policy
    /// needed no reading (the permissive one, or nothing declared).
    pub system_at_admission: Option<cjm_scheduling::SystemStats>,
}

/// How many jobs known here are in each state (ended ones as far as
/// [`JobOptions::keep_finished`](super::JobOptions::keep_finished) keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Waiting for their turn.
    pub queued: usize,
    /// Their turn came; being admitted.
    pub admitted: usize,
    /// Sent to their workers.
    pub running: usize,
    /// Ended with a result.
    pub succeeded: usize,
    /// Ended with an error.
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
}

/// A job's end, as [`Jobs::wait`](super::Jobs::wait) returns it: its final status and
/// its result (`None` unless it succeeded).
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    /// The final status.
    pub status: JobStatus,
    /// The plugin's result, when the job succeeded.
    pub result: Option<Value>,
}

/// A change of a job, as [`Jobs::events`](super::Jobs::events) delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub job: JobId,
    /// Its plugin.
    pub plugin: String,
    /// What happened.
    pub change: JobChange,
}

/// A step of a running job's cancel, as the original names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelPhase {
    /// The plugin was asked to stop (`POST /cancel`); the host waits for it.
    Cooperative,
    /// It did not stop in time (or was cancelled at once): its worker is being killed.
    Force,
    /// The job has ended cancelled.
    Completed,
}

impl CancelPhase {
    /// The original's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelPhase::Cooperative => "cooperative",
            CancelPhase::Force => "force",
            CancelPhase::Completed => "completed",
        }
    }
}

/// Why a queued job waits, when it is not simply its turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockReason {
    /// Its plugin runs as many jobs at once as it may (`JobOptions::concurrency`).
    Concurrency {
        /// Jobs of the plugin running.
        running: usize,
        /// Its limit.
        limit: usize,
    },
    /// Its turn came, and the scheduler cannot admit it yet: not enough system
    /// memory free.
    Memory,
    /// Not enough GPU memory free (idle GPU plugins are being evicted for it, or it
    /// waits).
    Gpu,
    /// The scheduler refused for another cause (its own queue, statistics that
    /// cannot be read): `message` says which.
    Scheduler {
        /// The scheduler's refusal.
        message: String,
    },
    /// Admitted, it waits for its worker to be placed and started (a stopped or dead
    /// worker started again, or one placed by Ray, which may wait for a node).
    Placement {
        /// Where: `this machine`, or the placement (`ray <dashboard address>`).
        placement: String,
    },
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockReason::Concurrency { running, limit } => write!(
                f,
                "its plugin runs {running} job(s) already, its limit is {limit}"
            ),
            BlockReason::Memory => f.write_str("not enough system memory free"),
            BlockReason::Gpu => f.write_str("not enough GPU memory free"),
            BlockReason::Scheduler { message } => write!(f, "the scheduler: {message}"),
            BlockReason::Placement { placement } => {
                write!(f, "its worker is being started ({placement})")
            }
        }
    }
}

/// What happened to a job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JobChange {
    /// Why it waits changed (`None`: nothing holds it any more).
    Blocked(Option<BlockReason>),
    /// Its cancel went a step further.
    Cancel(CancelPhase),
    /// It entered a new state (the status holds the details).
    State(JobState),
    /// It reported progress.
    Progress {
        /// 0.0 to 1.0; negative: cannot tell.
        fraction: f64,
        /// What it is doing.
        message: String,
    },
}
