//! What the jobs need of a host, and nothing more: whether a plugin is loaded, an
//! admitted execution to run calls on, and the forced stop of a worker that would
//! not stop. The manager is one such host (`manager/for_jobs.rs`); the job tests
//! put a fake one in its place to hold each step of a job where they want it.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::envelope::{Account, CallEnvelope};
use cjm_interface::wire::ProgressResponse;
use cjm_interface::CallArgs;
use cjm_proxy::{CallTarget, ProxyError};
use serde_json::Value;

use crate::manager::{AfterKill, Forced};
use crate::{ManagerError, RetryPolicy};

/// A boxed future that may move between threads.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A streaming call's chunks, as they come; an error ends them.
pub(crate) type Chunks<'a> =
    Pin<Box<dyn futures_core::Stream<Item = Result<Value, ManagerError>> + Send + 'a>>;

/// What the host gives a queued job to hold while it waits: its plugin is the
/// target of a queued job as long as it is held (eviction leaves such a plugin
/// alone).
pub(crate) type PendingHold = Box<dyn fmt::Debug + Send + Sync>;

/// The host the jobs run on.
pub(crate) trait JobHost: Send + Sync + fmt::Debug + 'static {
    /// Whether `plugin` is loaded (and so can take jobs).
    fn is_loaded(&self, plugin: &str) -> bool;

    /// Whether `plugin` is disabled (it refuses calls until enabled again).
    fn is_disabled(&self, _plugin: &str) -> bool {
        false
    }

    /// `plugin`'s observability class as its manifest declares it; `None` when it
    /// does not say.
    fn observability(&self, _plugin: &str) -> Option<cjm_metadata::Observability> {
        None
    }

    /// Mark `plugin` the target of a queued job until the returned hold is dropped;
    /// `None` where the host does not track it.
    fn pending_target(&self, _plugin: &str) -> Option<PendingHold> {
        None
    }

    /// Where the journal goes unless the options say otherwise.
    fn default_journal(&self) -> PathBuf;

    /// The log file `plugin`'s worker writes, where the host has one to read back.
    fn log_path(&self, _plugin: &str) -> Option<PathBuf> {
        None
    }

    /// The jobs keep their diagnostics in `path`: workers that write their own
    /// records there (the original's) are told so when they start.
    fn diagnostics_store(&self, _path: &std::path::Path) {}

    /// An execution of `plugin` the host has admitted, on a running worker: the
    /// admission holds until the execution is dropped. Dropping this future at any
    /// point leaves the host as it was (nothing admitted, any worker start it began
    /// finished or rolled back by the host).
    fn begin<'a>(
        &'a self,
        plugin: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn JobCall>, ManagerError>>;

    /// [`begin`](Self::begin), telling `waiting` each time admission cannot be
    /// granted at once (before it waits or evicts for it), and when the admitted
    /// call must wait for its worker to be placed and started, so that the job can
    /// say why it waits. Hosts that cannot tell just begin.
    fn begin_telling<'a>(
        &'a self,
        plugin: &'a str,
        waiting: Box<dyn Fn(Waiting<'_>) + Send + Sync + 'a>,
    ) -> BoxFuture<'a, Result<Arc<dyn JobCall>, ManagerError>> {
        drop(waiting);
        self.begin(plugin)
    }

    /// Kill `plugin`'s worker unless `still_needed` says otherwise once this caller
    /// has the plugin to itself; then restart it or leave it stopped.
    fn force_stop<'a>(
        &'a self,
        plugin: &'a str,
        why: String,
        still_needed: Box<dyn Fn() -> bool + Send + Sync + 'a>,
        after: AfterKill,
    ) -> BoxFuture<'a, Result<Forced, ManagerError>>;
}

/// Why a job's execution cannot begin yet, as its host tells it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Waiting<'a> {
    /// The scheduler refused to admit it now.
    Refused(&'a cjm_scheduling::Refusal),
    /// Admitted, its worker is being placed and started (`placement`: where).
    Placement(&'a str),
}

/// What a job's call addresses (the plugin's `execute`, or a task's method) and who
/// it is for (the job and attempt, in the original's envelope).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addressed<'a> {
    pub(crate) target: CallTarget<'a>,
    pub(crate) envelope: &'a CallEnvelope,
}

/// A call's progress as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    /// The report's number (our workers); `None` from a worker that does not number
    /// them (the original's) or for a call it does not know yet.
    pub(crate) seq: Option<u64>,
    pub(crate) fraction: f64,
    pub(crate) message: String,
    /// The call has ended (or is unknown).
    pub(crate) finished: bool,
}

/// One admitted execution, on which a job's attempt runs.
pub(crate) trait JobCall: Send + Sync + fmt::Debug {
    /// The plugin it runs on.
    fn plugin(&self) -> &str;

    /// Whether, and how often, a transient failure is tried again.
    fn retry(&self) -> RetryPolicy;

    /// What the execution was admitted with; `None` where the host cannot tell.
    fn resources(&self) -> Option<super::model::ResourceSnapshot> {
        None
    }

    /// Run `call` as call `call_id`, to `to.target` with `to.envelope` beside it:
    /// its result, and its last progress report where the worker sent it along. A
    /// call past the plugin's time limit fails with [`ManagerError::Timeout`] after
    /// its `OnTimeout` was applied.
    fn run<'a>(
        &'a self,
        call: CallArgs,
        call_id: &'a str,
        to: Addressed<'a>,
    ) -> BoxFuture<'a, Result<(Value, Option<ProgressResponse>), ManagerError>>;

    /// The accounts the worker sent with the calls run so far (success or failure),
    /// taken: each is journalled once.
    fn take_accounts(&self) -> Vec<Account> {
        Vec::new()
    }

    /// What the calls run so far cost (see [`cjm_proxy::CallMetrics`]), taken: each
    /// is journalled once.
    fn take_metrics(&self) -> Vec<cjm_proxy::CallMetrics> {
        Vec::new()
    }

    /// Start `call` as streaming call `call_id`, with `envelope` beside it: its chunks
    /// as the worker sends them
    /// (a wait for one past the plugin's time limit fails with a timeout, after its
    /// `OnTimeout` was applied). Dropping them stops the worker's producer.
    fn stream<'a>(
        &'a self,
        call: CallArgs,
        call_id: &'a str,
        envelope: &'a CallEnvelope,
    ) -> BoxFuture<'a, Result<Chunks<'a>, ManagerError>>;

    /// Ask call `call_id` to stop; `false` when the worker cannot be asked and only a
    /// forced stop will do.
    fn ask_to_cancel<'a>(&'a self, call_id: &'a str) -> BoxFuture<'a, bool>;

    /// The next progress report after `after`, waiting up to `wait` for it where the
    /// worker can wait.
    fn progress<'a>(
        &'a self,
        call_id: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Progress, ProxyError>>;
}
