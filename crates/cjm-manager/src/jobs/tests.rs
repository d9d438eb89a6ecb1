//! The job state machine under a fake host, on a paused clock: each step of a job
//! (its admission, the worker's start, the request on its way, the call, a retry's
//! back-off) can be held where a test wants it, and a cancel sent at that moment.
//! Then a property test over random sequences of submissions, cancels, completions,
//! failures, worker deaths and dropped callers, checking the invariants after every
//! step: no plugin runs more jobs than its limit, every job ends exactly once (one
//! final event, one journal ending), nothing is left restarting, and the queue's
//! counts match its contents.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::wire::ProgressResponse;
use cjm_interface::CallArgs;
use cjm_proxy::ProxyError;
use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot, Notify};

use super::host::{BoxFuture, Chunks, JobCall, JobHost, Progress};
use super::model::{Cancellation, JobChange, JobEvent, JobId, JobState};
use super::{JobEvents, JobOptions, Jobs};
use crate::manager::{AfterKill, Forced};
use crate::{ManagerError, RetryPolicy};

// ---- the fake host -------------------------------------------------------------------

/// A gate a step waits at while the test holds it.
#[derive(Debug, Default)]
pub(super) struct Gate {
    held: Mutex<bool>,
    opened: Notify,
}

impl Gate {
    fn hold(&self) {
        *self.held.lock() = true;
    }

    fn open(&self) {
        *self.held.lock() = false;
        self.opened.notify_waiters();
    }

    async fn pass(&self) {
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !*self.held.lock() {
                return;
            }
            opened.await;
        }
    }
}

/// A call that reached the fake worker.
#[derive(Debug)]
struct AtWorker {
    plugin: String,
    end: oneshot::Sender<Result<Value, ManagerError>>,
}

#[derive(Debug, Default)]
pub(super) struct World {
    pub(super) loaded: HashSet<String>,
    /// Loaded but disabled.
    pub(super) disabled: HashSet<String>,
    /// Each call's keyword arguments, by call id.
    pub(super) kwargs_of: HashMap<String, serde_json::Map<String, Value>>,
    limits: HashMap<String, usize>,
    /// Calls at the worker now, by call id.
    at_worker: HashMap<String, AtWorker>,
    /// Every call id that reached a worker, in order.
    pub(super) arrived: Vec<String>,
    /// Calls running now by plugin, and the most ever seen at once.
    running: HashMap<String, usize>,
    most_running: HashMap<String, usize>,
    /// Cancelled before they arrived: refused when they do (as our worker does).
    cancelled_early: HashSet<String>,
    /// Every `/cancel` asked, by call id.
    asked: Vec<String>,
    /// Admissions in progress (a `begin` future not yet resolved or dropped).
    beginning: usize,
    /// Forced stops in progress, and those that killed a worker.
    forcing: usize,
    kills: Vec<String>,
    /// Whether the plugin's calls stop when asked.
    pub(super) cooperative: bool,
    /// Whether the worker is the host's to kill.
    owned: bool,
    /// A call exceeding its plugin's limit, seen as it arrived.
    violations: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Fake {
    pub(super) world: Mutex<World>,
    /// Held: admissions wait (a worker starting on demand, a scheduler waiting).
    begin_gate: Gate,
    /// Held: requests wait on their way to the worker.
    send_gate: Gate,
    /// Virtual time an admission and a request's way take.
    begin_delay: Duration,
    send_delay: Duration,
    pub(super) retry: RetryPolicy,
    /// Wakes whoever waits for a call to arrive.
    arrived: Notify,
}

impl Fake {
    pub(super) fn new(plugins: &[(&str, usize)]) -> Arc<Self> {
        Arc::new(Fake {
            world: Mutex::new(World {
                loaded: plugins.iter().map(|(name, _)| (*name).to_owned()).collect(),
                limits: plugins
                    .iter()
                    .map(|(name, limit)| ((*name).to_owned(), *limit))
                    .collect(),
                cooperative: true,
                owned: true,
                ..World::default()
            }),
            begin_gate: Gate::default(),
            send_gate: Gate::default(),
            begin_delay: Duration::ZERO,
            send_delay: Duration::ZERO,
            retry: RetryPolicy::NEVER,
            arrived: Notify::new(),
        })
    }

    pub(super) fn with(self: Arc<Self>, change: impl FnOnce(&mut Fake)) -> Arc<Self> {
        let mut host = Arc::try_unwrap(self).unwrap();
        change(&mut host);
        Arc::new(host)
    }

    pub(super) fn end(&self, call_id: &str, result: Result<Value, ManagerError>) -> bool {
        let call = self.world.lock().at_worker.remove(call_id);
        match call {
            Some(call) => call.end.send(result).is_ok(),
            None => false,
        }
    }

    /// The worker of `plugin` dies: every call on it fails.
    fn kill(&self, plugin: &str) {
        let mut world = self.world.lock();
        let ids: Vec<String> = world
            .at_worker
            .iter()
            .filter(|(_, call)| call.plugin == plugin)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(call) = world.at_worker.remove(&id) {
                let _ = call.end.send(Err(worker_died(plugin)));
            }
        }
    }

    pub(super) fn at_worker(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.world.lock().at_worker.keys().cloned().collect();
        ids.sort();
        ids
    }
}

pub(super) fn worker_died(plugin: &str) -> ManagerError {
    // Transient, as a broken connection is: the retry policy may try again.
    ManagerError::Busy {
        name: format!("{plugin} (its worker died)"),
    }
}

fn cancelled(plugin: &str) -> ManagerError {
    ManagerError::Plugin(ProxyError::Cancelled {
        plugin: plugin.to_owned(),
        endpoint: "/execute",
        detail: String::from("cancelled"),
    })
}

pub(super) fn fatal(plugin: &str) -> ManagerError {
    ManagerError::NotRunning {
        name: plugin.to_owned(),
        reason: String::from("failed for good"),
        restarts: 0,
        max_restarts: 0,
    }
}

/// Counts an admission in progress until dropped or resolved.
struct Beginning<'a>(&'a Fake);

impl Drop for Beginning<'_> {
    fn drop(&mut self) {
        self.0.world.lock().beginning -= 1;
    }
}

/// Counts a running call until it ends or is dropped.
struct Running<'a> {
    host: &'a Fake,
    plugin: String,
    call_id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut world = self.host.world.lock();
        if let Some(count) = world.running.get_mut(&self.plugin) {
            *count -= 1;
        }
        world.at_worker.remove(&self.call_id);
    }
}

#[derive(Debug)]
struct FakeCall {
    host: Arc<Fake>,
    plugin: String,
}

impl FakeCall {
    async fn run_call(
        &self,
        call_id: &str,
        call: CallArgs,
    ) -> Result<(Value, Option<ProgressResponse>), ManagerError> {
        let host = &self.host;
        let kwargs = call
            .kwargs
            .into_iter()
            .filter_map(|(name, arg)| match arg {
                cjm_interface::Arg::Value(value) => Some((name, value)),
                cjm_interface::Arg::File(_) => None,
            })
            .collect();
        host.world
            .lock()
            .kwargs_of
            .insert(call_id.to_owned(), kwargs);
        tokio::time::sleep(host.send_delay).await;
        host.send_gate.pass().await;
        let (end, ended) = oneshot::channel();
        {
            let mut world = host.world.lock();
            if world.cancelled_early.remove(call_id) {
                return Err(cancelled(&self.plugin));
            }
            let running = {
                let count = world.running.entry(self.plugin.clone()).or_default();
                *count += 1;
                *count
            };
            let most = world.most_running.entry(self.plugin.clone()).or_default();
            *most = (*most).max(running);
            let limit = world.limits.get(&self.plugin).copied().unwrap_or(1);
            if running > limit {
                world.violations.push(format!(
                    "{running} calls of {} at once (limit {limit}) when {call_id} arrived",
                    self.plugin
                ));
            }
            world.arrived.push(call_id.to_owned());
            world.at_worker.insert(
                call_id.to_owned(),
                AtWorker {
                    plugin: self.plugin.clone(),
                    end,
                },
            );
        }
        let _running = Running {
            host,
            plugin: self.plugin.clone(),
            call_id: call_id.to_owned(),
        };
        host.arrived.notify_waiters();
        match ended.await {
            Ok(result) => result.map(|value| (value, None)),
            Err(_) => Err(worker_died(&self.plugin)),
        }
    }
}

impl JobCall for FakeCall {
    fn plugin(&self) -> &str {
        &self.plugin
    }

    fn retry(&self) -> RetryPolicy {
        self.host.retry
    }

    fn run<'a>(
        &'a self,
        call: CallArgs,
        call_id: &'a str,
        _to: super::host::Addressed<'a>,
    ) -> BoxFuture<'a, Result<(Value, Option<ProgressResponse>), ManagerError>> {
        Box::pin(self.run_call(call_id, call))
    }

    fn stream<'a>(
        &'a self,
        _call: CallArgs,
        call_id: &'a str,
        _envelope: &'a cjm_interface::envelope::CallEnvelope,
    ) -> BoxFuture<'a, Result<Chunks<'a>, ManagerError>> {
        Box::pin(async move {
            // An endless stream, a chunk a millisecond, counted as running while its
            // consumer holds it.
            {
                let mut world = self.host.world.lock();
                let running = {
                    let count = world.running.entry(self.plugin.clone()).or_default();
                    *count += 1;
                    *count
                };
                let limit = world.limits.get(&self.plugin).copied().unwrap_or(1);
                if running > limit {
                    world.violations.push(format!(
                        "{running} calls of {} at once (limit {limit}) when stream {call_id} began",
                        self.plugin
                    ));
                }
                world.arrived.push(call_id.to_owned());
            }
            let running = Running {
                host: &self.host,
                plugin: self.plugin.clone(),
                call_id: call_id.to_owned(),
            };
            let mut next = 0u64;
            let chunks = futures_util_stream(move || {
                let _running = &running;
                next += 1;
                next
            });
            Ok(Box::pin(chunks) as Chunks<'a>)
        })
    }

    fn ask_to_cancel<'a>(&'a self, call_id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut world = self.host.world.lock();
            world.asked.push(call_id.to_owned());
            if !world.cooperative {
                return true;
            }
            match world.at_worker.remove(call_id) {
                Some(call) => {
                    let _ = call.end.send(Err(cancelled(&self.plugin)));
                }
                None => {
                    world.cancelled_early.insert(call_id.to_owned());
                }
            }
            true
        })
    }

    fn progress<'a>(
        &'a self,
        _call_id: &'a str,
        after: u64,
        _wait: Duration,
    ) -> BoxFuture<'a, Result<Progress, ProxyError>> {
        Box::pin(async move {
            Ok(Progress {
                seq: Some(after),
                fraction: 0.0,
                message: String::new(),
                finished: true,
            })
        })
    }
}

/// A stream of `next()`'s values, one a millisecond of the (paused) clock.
fn futures_util_stream(
    mut next: impl FnMut() -> u64 + Send + Unpin,
) -> impl futures_core::Stream<Item = Result<Value, ManagerError>> + Send {
    struct Ticks<F> {
        next: F,
        timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    }
    impl<F: FnMut() -> u64 + Unpin> futures_core::Stream for Ticks<F> {
        type Item = Result<Value, ManagerError>;
        fn poll_next(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            let this = self.get_mut();
            std::task::ready!(std::future::Future::poll(this.timer.as_mut(), cx));
            this.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_millis(1));
            std::task::Poll::Ready(Some(Ok(json!((this.next)()))))
        }
    }
    Ticks {
        next: move || next(),
        timer: Box::pin(tokio::time::sleep(Duration::from_millis(1))),
    }
}

/// The fake as the jobs' host: a handle on the shared fake, so that its calls can
/// hold it too.
#[derive(Debug)]
struct FakeHost(Arc<Fake>);

impl JobHost for FakeHost {
    fn is_loaded(&self, plugin: &str) -> bool {
        self.0.world.lock().loaded.contains(plugin)
    }

    fn is_disabled(&self, plugin: &str) -> bool {
        self.0.world.lock().disabled.contains(plugin)
    }

    fn default_journal(&self) -> PathBuf {
        PathBuf::from("/nonexistent/jobs.sqlite3")
    }

    fn begin<'a>(
        &'a self,
        plugin: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn JobCall>, ManagerError>> {
        Box::pin(async move {
            self.0.world.lock().beginning += 1;
            let _beginning = Beginning(&self.0);
            tokio::time::sleep(self.0.begin_delay).await;
            self.0.begin_gate.pass().await;
            Ok(Arc::new(FakeCall {
                host: Arc::clone(&self.0),
                plugin: plugin.to_owned(),
            }) as Arc<dyn JobCall>)
        })
    }

    fn force_stop<'a>(
        &'a self,
        plugin: &'a str,
        why: String,
        still_needed: Box<dyn Fn() -> bool + Send + Sync + 'a>,
        _after: AfterKill,
    ) -> BoxFuture<'a, Result<Forced, ManagerError>> {
        Box::pin(async move {
            self.0.world.lock().forcing += 1;
            let forced = if !still_needed() {
                Forced::NotNeeded
            } else if !self.0.world.lock().owned {
                Forced::NotOwned
            } else {
                self.0.world.lock().kills.push(why);
                self.0.kill(plugin);
                Forced::Replaced
            };
            self.0.world.lock().forcing -= 1;
            Ok(forced)
        })
    }
}

// ---- the harness -----------------------------------------------------------------------

pub(super) struct Harness {
    pub(super) host: Arc<Fake>,
    pub(super) jobs: Jobs,
    events: broadcast::Receiver<JobEvent>,
    /// Final events seen, by job.
    endings: HashMap<JobId, Vec<JobState>>,
}

impl Harness {
    pub(super) async fn new(host: Arc<Fake>, options: JobOptions) -> Harness {
        let limits = host.world.lock().limits.clone();
        let mut options = options.without_journal().event_capacity(1 << 16);
        for (plugin, limit) in limits {
            options = options.concurrency(plugin, limit);
        }
        let jobs = Jobs::with_host(Arc::new(FakeHost(Arc::clone(&host))), options)
            .await
            .unwrap();
        let events = jobs.inner.events.subscribe();
        Harness {
            host,
            jobs,
            events,
            endings: HashMap::new(),
        }
    }

    fn submit(&self, plugin: &str) -> JobId {
        self.jobs.submit(plugin, CallArgs::new().arg(1), 0).unwrap()
    }

    /// Let every task run until all wait (a millisecond of the paused clock), and
    /// take in the events.
    pub(super) async fn settle(&mut self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.drain();
    }

    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            if let JobChange::State(state) = event.change {
                if state.is_final() {
                    self.endings.entry(event.job).or_default().push(state);
                }
            }
        }
    }

    pub(super) fn state(&self, id: JobId) -> JobState {
        self.jobs.status(id).unwrap().state
    }

    fn cancelled(&self, id: JobId) -> Option<Cancellation> {
        self.jobs.status(id).unwrap().cancelled
    }

    /// Wait (on the paused clock) until `condition` holds.
    pub(super) async fn until(&mut self, what: &str, condition: impl Fn(&Harness) -> bool) {
        for _ in 0..100_000 {
            if condition(self) {
                return;
            }
            self.settle().await;
        }
        panic!("never came to pass: {what}");
    }

    /// Journal endings recorded, by the job's journal id.
    fn journal_endings(&self) -> HashMap<String, usize> {
        let mut endings = HashMap::new();
        for record in self.jobs.inner.recorded.lock().iter() {
            let ending = record.starts_with("Failed")
                || record.starts_with("Cancelled")
                || (record.starts_with("State")
                    && !record.contains("state: Running")
                    && !record.contains("state: Queued"));
            if ending {
                let id = record
                    .split("id: \"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_owned();
                *endings.entry(id).or_default() += 1;
            }
        }
        endings
    }

    /// Every invariant that must hold after any step.
    pub(super) fn check(&mut self) -> Result<(), String> {
        self.drain();
        let world = self.host.world.lock();
        if let Some(violation) = world.violations.first() {
            return Err(violation.clone());
        }
        for (job, endings) in &self.endings {
            if endings.len() > 1 {
                return Err(format!(
                    "job {job} ended {} times: {endings:?}",
                    endings.len()
                ));
            }
        }
        for (id, count) in self.journal_endings() {
            if count > 1 {
                return Err(format!("job {id} has {count} endings in the journal"));
            }
        }
        let book = self.jobs.inner.book.lock();
        book.queue.check()?;
        let mut holding: HashMap<String, usize> = HashMap::new();
        let mut queued = 0;
        for entry in book.jobs.values() {
            let state = entry.status.state;
            if entry.holds_place {
                if !matches!(state, JobState::Admitted | JobState::Running) {
                    return Err(format!(
                        "job {} holds a place while {state}",
                        entry.status.id
                    ));
                }
                *holding.entry(entry.status.plugin.clone()).or_default() += 1;
            } else if matches!(state, JobState::Admitted | JobState::Running) {
                return Err(format!(
                    "job {} is {state} without a place",
                    entry.status.id
                ));
            }
            if state == JobState::Queued {
                queued += 1;
            }
            if state.is_final() && entry.execution.is_some() {
                return Err(format!(
                    "job {} ended holding its execution",
                    entry.status.id
                ));
            }
        }
        if queued != book.queue.len() {
            return Err(format!(
                "{queued} jobs queued, {} in the queue",
                book.queue.len()
            ));
        }
        let counted = book.queue.running_counts();
        if counted != holding {
            return Err(format!(
                "the queue counts {counted:?} running, the jobs {holding:?}"
            ));
        }
        for (plugin, count) in &holding {
            let limit = world.limits.get(plugin).copied().unwrap_or(1);
            if *count > limit {
                return Err(format!(
                    "{count} jobs of {plugin} hold places (limit {limit})"
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn options() -> JobOptions {
    JobOptions::default().cancel_timeout(Duration::from_secs(5))
}

// ---- one step at a time ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_cancelled_queued_job_frees_no_place_it_never_held() {
    let mut h = Harness::new(Fake::new(&[("gpu", 1)]), options()).await;
    let running = h.submit("gpu");
    let queued = [h.submit("gpu"), h.submit("gpu"), h.submit("gpu")];
    h.until("the first job runs", |h| h.host.at_worker().len() == 1)
        .await;
    assert!(h.jobs.cancel(queued[0]).unwrap());
    h.settle().await;
    assert_eq!(h.cancelled(queued[0]), Some(Cancellation::WhileQueued));
    // The next queued job waits: the plugin still runs its one job.
    assert_eq!(h.state(queued[1]), JobState::Queued);
    assert_eq!(h.state(running), JobState::Running);
    assert_eq!(h.host.world.lock().most_running["gpu"], 1);
    h.check().unwrap();
    let first = h.host.at_worker()[0].clone();
    h.host.end(&first, Ok(json!(1)));
    h.until("the second runs", |h| {
        h.state(queued[1]) == JobState::Running
    })
    .await;
    assert_eq!(h.state(queued[2]), JobState::Queued);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_right_after_submission_ends_the_job_once_before_any_admission() {
    let mut h = Harness::new(Fake::new(&[("p", 1)]), options()).await;
    let job = h.submit("p");
    // No await in between: the dispatcher has not run.
    assert!(h.jobs.cancel(job).unwrap());
    let next = h.submit("p");
    h.until("the next job runs", |h| h.state(next) == JobState::Running)
        .await;
    assert_eq!(h.cancelled(job), Some(Cancellation::WhileQueued));
    assert_eq!(h.endings[&job], [JobState::Cancelled]);
    assert_eq!(h.host.world.lock().arrived.len(), 1);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_admission_waits_stops_the_wait_and_frees_the_place() {
    let host = Fake::new(&[("p", 1)]);
    host.begin_gate.hold();
    let mut h = Harness::new(host, options()).await;
    let job = h.submit("p");
    h.until("admission waits", |h| h.host.world.lock().beginning == 1)
        .await;
    assert_eq!(h.state(job), JobState::Admitted);
    assert!(h.jobs.cancel(job).unwrap());
    h.settle().await;
    assert_eq!(h.cancelled(job), Some(Cancellation::WhileQueued));
    // The admission (a worker starting on demand, say) was let go, not aborted.
    assert_eq!(h.host.world.lock().beginning, 0);
    h.host.begin_gate.open();
    let next = h.submit("p");
    h.until("the next job runs", |h| h.state(next) == JobState::Running)
        .await;
    assert!(h
        .host
        .world
        .lock()
        .arrived
        .iter()
        .all(|id| !id.ends_with("-1")));
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_overtakes_its_call_stops_it_on_arrival_without_a_kill() {
    let host = Fake::new(&[("p", 1)]);
    host.send_gate.hold();
    let mut h = Harness::new(host, options()).await;
    let job = h.submit("p");
    h.until("the job is sent", |h| h.state(job) == JobState::Running)
        .await;
    assert!(
        h.host.at_worker().is_empty(),
        "the request is still on its way"
    );
    h.jobs.cancel(job).unwrap();
    h.settle().await;
    let call_id = h.jobs.journal_id(job).unwrap();
    assert_eq!(h.host.world.lock().asked, [call_id]);
    h.host.send_gate.open();
    h.until("the job ends", |h| h.state(job).is_final()).await;
    assert_eq!(h.cancelled(job), Some(Cancellation::Cooperative));
    assert!(h.host.world.lock().kills.is_empty());
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_the_retry_back_off_ends_the_job_at_once() {
    let host = Fake::new(&[("p", 1)]).with(|host| {
        host.retry = RetryPolicy::up_to(3, Duration::from_secs(60));
    });
    let mut h = Harness::new(host, options()).await;
    let job = h.submit("p");
    h.until("the call arrives", |h| h.host.at_worker().len() == 1)
        .await;
    let first = h.host.at_worker()[0].clone();
    h.host.end(&first, Err(worker_died("p")));
    h.settle().await;
    assert_eq!(h.state(job), JobState::Running, "waiting to try again");
    let before = tokio::time::Instant::now();
    h.jobs.cancel(job).unwrap();
    h.until("the job ends", |h| h.state(job).is_final()).await;
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "{:?}",
        before.elapsed()
    );
    assert_eq!(h.cancelled(job), Some(Cancellation::Cooperative));
    assert_eq!(h.jobs.status(job).unwrap().attempts, 1);
    assert_eq!(h.host.world.lock().arrived.len(), 1);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_at_the_moment_of_completion_ends_the_job_once() {
    for cancel_first in [false, true] {
        let mut h = Harness::new(Fake::new(&[("p", 1)]), options()).await;
        let job = h.submit("p");
        h.until("the call arrives", |h| h.host.at_worker().len() == 1)
            .await;
        let call = h.host.at_worker()[0].clone();
        if cancel_first {
            h.jobs.cancel(job).unwrap();
            h.host.end(&call, Ok(json!("done")));
        } else {
            h.host.end(&call, Ok(json!("done")));
            h.jobs.cancel(job).unwrap();
        }
        h.until("the job ends", |h| h.state(job).is_final()).await;
        tokio::time::sleep(Duration::from_secs(10)).await; // past the cancel timeout
        h.drain();
        assert_eq!(h.endings[&job].len(), 1);
        assert!(h.host.world.lock().kills.is_empty(), "nothing to force");
        h.check().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_has_its_own_call_id_and_a_timeout_on_a_live_worker_is_not_retried() {
    let host = Fake::new(&[("p", 1)]).with(|host| {
        host.retry = RetryPolicy::up_to(2, Duration::from_millis(100));
    });
    let mut h = Harness::new(host, options()).await;
    let job = h.submit("p");
    h.until("the call arrives", |h| h.host.at_worker().len() == 1)
        .await;
    let first = h.host.at_worker()[0].clone();
    h.host.end(
        &first,
        Err(ManagerError::Timeout {
            name: String::from("p"),
            after: Duration::from_secs(1),
            worker_killed: true,
        }),
    );
    h.until("the retry arrives", |h| {
        h.host.world.lock().arrived.len() == 2
    })
    .await;
    let arrived = h.host.world.lock().arrived.clone();
    let base = h.jobs.journal_id(job).unwrap();
    assert_eq!(arrived, [base.clone(), format!("{base}.2")]);
    // A timeout that left the call running on its worker: no retry beside it.
    let second = arrived[1].clone();
    h.host.end(
        &second,
        Err(ManagerError::Timeout {
            name: String::from("p"),
            after: Duration::from_secs(1),
            worker_killed: false,
        }),
    );
    h.until("the job ends", |h| h.state(job).is_final()).await;
    assert_eq!(h.state(job), JobState::Failed);
    assert_eq!(h.host.world.lock().arrived.len(), 2);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_that_ignores_its_cancel_on_a_worker_not_ours_is_abandoned_not_aborted() {
    let host = Fake::new(&[("p", 1)]);
    {
        let mut world = host.world.lock();
        world.cooperative = false;
        world.owned = false;
    }
    let mut h = Harness::new(host, options()).await;
    let job = h.submit("p");
    h.until("the call arrives", |h| h.host.at_worker().len() == 1)
        .await;
    h.jobs.cancel(job).unwrap();
    h.until("the job ends", |h| h.state(job).is_final()).await;
    assert_eq!(h.cancelled(job), Some(Cancellation::Abandoned));
    // The call's future was dropped by its own task (the connection with it).
    assert!(h.host.at_worker().is_empty());
    assert_eq!(h.host.world.lock().running["p"], 0);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_call_that_ignores_its_cancel_is_forced_once_after_the_timeout() {
    let host = Fake::new(&[("p", 1)]);
    host.world.lock().cooperative = false;
    let mut h = Harness::new(host, options()).await;
    let job = h.submit("p");
    h.until("the call arrives", |h| h.host.at_worker().len() == 1)
        .await;
    let asked_at = tokio::time::Instant::now();
    h.jobs.cancel(job).unwrap();
    h.jobs.cancel(job).unwrap();
    h.jobs.cancel_now(job).unwrap();
    h.until("the job ends", |h| h.state(job).is_final()).await;
    assert!(
        asked_at.elapsed() < Duration::from_secs(5),
        "cancel_now did not wait"
    );
    assert_eq!(h.cancelled(job), Some(Cancellation::Forced));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.host.world.lock().kills.len(), 1);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn options_set_past_the_setters_are_made_to_work() {
    let mut options = JobOptions::default().without_journal();
    options.event_capacity = 0;
    options.default_concurrency = 0;
    let jobs = Jobs::with_host(Arc::new(FakeHost(Fake::new(&[("p", 1)]))), options)
        .await
        .unwrap();
    let job = jobs.submit("p", CallArgs::new(), 0).unwrap();
    assert!(jobs.cancel(job).unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_streaming_job_hands_its_chunks_in_order_and_ends_when_its_reader_goes() {
    let mut h = Harness::new(Fake::new(&[("p", 1)]), options()).await;
    let (job, mut chunks) = h.jobs.submit_stream("p", CallArgs::new(), 0).unwrap();
    let queued = h.submit("p");
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(chunks.next().await.unwrap());
    }
    assert_eq!(seen, [json!(1), json!(2), json!(3), json!(4), json!(5)]);
    assert_eq!(h.state(job), JobState::Running);
    drop(chunks);
    h.until("the job ends", |h| h.state(job).is_final()).await;
    assert_eq!(h.cancelled(job), Some(Cancellation::Cooperative));
    // Its producer stopped, and its place went to the next job.
    h.until("the next job runs", |h| {
        h.state(queued) == JobState::Running
    })
    .await;
    assert_eq!(h.host.world.lock().running["p"], 1);
    h.check().unwrap();
}

// ---- random interleavings ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Submit(usize),
    /// A streaming job, whose reader takes a chunk at each `Read`.
    SubmitStream(usize),
    Read(usize),
    /// A streaming job's reader goes away.
    DropReader(usize),
    Cancel(usize),
    CancelNow(usize),
    Complete(usize),
    FailTransient(usize),
    FailFatal(usize),
    WorkerDies(usize),
    /// A caller waiting for a job gives up (its `wait` future dropped).
    DropWaiter(usize),
    Advance(u64),
}

const PLUGINS: [(&str, usize); 2] = [("gpu", 1), ("cpu", 2)];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..PLUGINS.len()).prop_map(Step::Submit),
        1 => (0..PLUGINS.len()).prop_map(Step::SubmitStream),
        1 => any::<usize>().prop_map(Step::Read),
        1 => any::<usize>().prop_map(Step::DropReader),
        2 => any::<usize>().prop_map(Step::Cancel),
        1 => any::<usize>().prop_map(Step::CancelNow),
        3 => any::<usize>().prop_map(Step::Complete),
        1 => any::<usize>().prop_map(Step::FailTransient),
        1 => any::<usize>().prop_map(Step::FailFatal),
        1 => (0..PLUGINS.len()).prop_map(Step::WorkerDies),
        1 => any::<usize>().prop_map(Step::DropWaiter),
        2 => (0u64..300).prop_map(Step::Advance),
    ]
}

fn interleaving(steps: &[Step], cooperative: bool, owned: bool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(async {
        let host = Fake::new(&PLUGINS).with(|host| {
            host.retry = RetryPolicy::up_to(1, Duration::from_millis(50));
            host.begin_delay = Duration::from_millis(3);
            host.send_delay = Duration::from_millis(2);
        });
        {
            let mut world = host.world.lock();
            world.cooperative = cooperative;
            world.owned = owned;
        }
        let mut h = Harness::new(
            host,
            JobOptions::default().cancel_timeout(Duration::from_millis(40)),
        )
        .await;
        let mut ids: Vec<JobId> = Vec::new();
        let mut readers: Vec<(JobId, super::JobChunks)> = Vec::new();
        let pick = |ids: &[JobId], n: usize| (!ids.is_empty()).then(|| ids[n % ids.len()]);
        for step in steps {
            match step {
                Step::Submit(plugin) => ids.push(h.submit(PLUGINS[*plugin].0)),
                Step::SubmitStream(plugin) => {
                    let (id, chunks) = h
                        .jobs
                        .submit_stream(PLUGINS[*plugin].0, CallArgs::new(), 0)
                        .map_err(|err| err.to_string())?;
                    ids.push(id);
                    readers.push((id, chunks));
                }
                Step::Read(n) => {
                    if !readers.is_empty() {
                        let at = n % readers.len();
                        // One chunk if one is there (or the job's end), never a wait.
                        let _ = tokio::time::timeout(Duration::ZERO, readers[at].1.next()).await;
                    }
                }
                Step::DropReader(n) => {
                    if !readers.is_empty() {
                        let at = n % readers.len();
                        readers.remove(at);
                    }
                }
                Step::Cancel(n) => {
                    if let Some(id) = pick(&ids, *n) {
                        h.jobs.cancel(id).map_err(|err| err.to_string())?;
                    }
                }
                Step::CancelNow(n) => {
                    if let Some(id) = pick(&ids, *n) {
                        h.jobs.cancel_now(id).map_err(|err| err.to_string())?;
                    }
                }
                Step::Complete(n) | Step::FailTransient(n) | Step::FailFatal(n) => {
                    let calls = h.host.at_worker();
                    if let Some(call) = (!calls.is_empty()).then(|| calls[n % calls.len()].clone())
                    {
                        let plugin = h.host.world.lock().at_worker[&call].plugin.clone();
                        let result = match step {
                            Step::Complete(_) => Ok(json!(call)),
                            Step::FailTransient(_) => Err(worker_died(&plugin)),
                            _ => Err(fatal(&plugin)),
                        };
                        h.host.end(&call, result);
                    }
                }
                Step::WorkerDies(plugin) => h.host.kill(PLUGINS[*plugin].0),
                Step::DropWaiter(n) => {
                    if let Some(id) = pick(&ids, *n) {
                        let waiting = h.jobs.wait(id);
                        // Polled once (subscribed), then dropped.
                        let _ = tokio::time::timeout(Duration::ZERO, waiting).await;
                    }
                }
                Step::Advance(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            }
            h.settle().await;
            h.check().map_err(|err| format!("after {step:?}: {err}"))?;
            if h.host.world.lock().forcing != 0 {
                return Err(format!("after {step:?}: a forced stop was left half-way"));
            }
        }
        // Everything still running ends; every job then has ended exactly once.
        readers.clear();
        for _ in 0..1000 {
            for call in h.host.at_worker() {
                h.host.end(&call, Ok(json!("late")));
            }
            if ids.iter().all(|id| h.state(*id).is_final()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            h.drain();
        }
        h.check()?;
        for id in &ids {
            let status = h.jobs.status(*id).ok_or(format!("job {id} forgotten"))?;
            if !status.state.is_final() {
                return Err(format!("job {id} never ended: {status:?}"));
            }
            let endings = h.endings.get(id).map_or(0, Vec::len);
            if endings != 1 {
                return Err(format!("job {id}: {endings} final events"));
            }
        }
        let journal = h.journal_endings();
        for id in &ids {
            let journal_id = h.jobs.journal_id(*id).unwrap_or_default();
            if journal.get(&journal_id) != Some(&1) {
                return Err(format!(
                    "job {id}: {:?} journal endings",
                    journal.get(&journal_id)
                ));
            }
        }
        if h.jobs.queued() != 0 || !h.jobs.inner.book.lock().queue.running_counts().is_empty() {
            return Err(String::from("the queue is not empty at the end"));
        }
        Ok(())
    })
}

fn cases() -> u32 {
    std::env::var("CJM_JOBS_PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Random interleavings of every way a job can go, each invariant checked after
    /// every step. `CJM_JOBS_PROPTEST_CASES=5000` for a longer search.
    #[test]
    fn jobs_hold_their_invariants_under_any_interleaving(
        steps in prop::collection::vec(step(), 1..80),
        cooperative in any::<bool>(),
        owned in any::<bool>(),
    ) {
        interleaving(&steps, cooperative, owned).map_err(TestCaseError::fail)?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_jobs_events_are_its_own_and_every_stream_ends_when_the_jobs_are_gone() {
    let host = Fake::new(&[("p", 1)]);
    let jobs = Jobs::with_host(
        Arc::new(FakeHost(Arc::clone(&host))),
        options().without_journal().concurrency("p", 1),
    )
    .await
    .unwrap();
    let every = jobs.events();
    let running = jobs.submit("p", CallArgs::new().arg(1), 0).unwrap();
    let queued = jobs.submit("p", CallArgs::new().arg(1), 0).unwrap();
    let mine = jobs.events_for(queued);
    // The first job's call reaches the worker and stays there.
    while !host
        .world
        .lock()
        .arrived
        .contains(&jobs.journal_id(running).unwrap())
    {
        host.arrived.notified().await;
    }
    drop(jobs);
    let ended = |stream: JobEvents| async move {
        let mut stream = stream;
        let mut seen = Vec::new();
        let read = async {
            while let Some(event) = stream.next().await {
                seen.push(event.unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(600), read)
            .await
            .expect("the stream ended when the jobs went");
        seen
    };
    let mine = ended(mine).await;
    assert!(mine.iter().all(|event| event.job == queued), "{mine:?}");
    assert_eq!(
        mine.last().map(|event| &event.change),
        Some(&JobChange::State(JobState::Cancelled))
    );
    let every = ended(every).await;
    for job in [running, queued] {
        assert!(
            every
                .iter()
                .any(|event| event.job == job
                    && event.change == JobChange::State(JobState::Cancelled)),
            "{job} did not end cancelled: {every:?}"
        );
    }
}
