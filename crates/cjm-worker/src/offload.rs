//! Plugin code never holds up the worker's I/O.
//!
//! One runtime serves every connection's I/O (see `server.rs`), as a bare hyper server
//! does. Whatever may run the plugin's code, or wait for its lock (which a long
//! `/initialize` holds), goes through [`off_io`], one of two ways:
//!
//! - The only request in flight runs right where it is, inside
//!   `tokio::task::block_in_place`: tokio hands the I/O and every other task to
//!   another thread at once, so a long call holds up nothing, and a short one costs no
//!   wake-up of another thread on its way (two of them would add about a third to a
//!   call's round trip here).
//! - With others in flight, it goes to a pool of its own threads, as many as the
//!   machine has cores: under load they take job after job from the queue without
//!   sleeping between them, where a thread per call would cost a wake-up and a context
//!   switch for each. A long call holds a pool thread, so a watchdog adds one whenever
//!   the oldest queued job has waited [`STALL`]: a long call delays another call,
//!   `/cancel` or `/progress` by that much at most, never until it ends. Threads
//!   beyond the cores leave after [`SPARE_KEEP_ALIVE`] without work.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::{Response, StatusCode};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::body::ResponseBody;
use crate::respond::error_response;

/// How long the oldest job may wait for a thread before the watchdog adds one.
const STALL: Duration = Duration::from_millis(1);
/// How long a thread beyond the cores stays without work before it leaves.
const SPARE_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long the watchdog keeps checking with no job queued before it sleeps until
/// the next job: ticking through a pause between calls costs less than being woken
/// for each.
const WATCHDOG_LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// Threads for plugin code at most, in the pool and in tokio's blocking pool alike:
/// one per connection (HTTP/1 has one request in flight per connection; a stream's
/// producer or a waiting `/progress` is that request's), and a few for the worker's
/// own (SIGTERM's cleanup).
pub(crate) const MAX_PLUGIN_THREADS: usize = MAX_CONNECTIONS + 8;
/// Plugin code gets the stack a main thread would get, on every thread it runs on.
pub(crate) const PLUGIN_STACK_BYTES: usize = 8 * 1024 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// Run `work` off the I/O path (see the module's doc) and answer what it answers. Must
/// be called from a task of the worker's multi-threaded runtime.
pub(crate) async fn off_io<F>(work: F) -> Response<ResponseBody>
where
    F: FnOnce() -> Response<ResponseBody> + Send + 'static,
{
    let counted = InFlight::enter();
    if counted.alone {
        return tokio::task::block_in_place(work);
    }
    let (answer, answered) = oneshot::channel();
    pool().submit(Box::new(move || {
        let _ = answer.send(work());
    }));
    match answered.await {
        Ok(response) => response,
        // Plugin panics are caught where the plugin is called (`host::guarded`): this
        // is a panic in the worker's own code around it.
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            String::from("the worker failed while answering this request (see its log)"),
            None,
        ),
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        Pool::new(
            std::thread::available_parallelism().map_or(2, usize::from),
            MAX_PLUGIN_THREADS,
        )
    })
}

struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// A job was queued (for the threads).
    queued: Condvar,
    /// A job was queued while the watchdog slept (for the watchdog).
    watch: Condvar,
    core_threads: usize,
    max_threads: usize,
}

struct State {
    jobs: VecDeque<(Instant, Job)>,
    threads: usize,
    idle: usize,
    watchdog: Watchdog,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Watchdog {
    NotStarted,
    Ticking,
    Asleep,
}

impl Pool {
    fn new(core_threads: usize, max_threads: usize) -> Self {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    watchdog: Watchdog::NotStarted,
                }),
                queued: Condvar::new(),
                watch: Condvar::new(),
                core_threads: core_threads.max(1),
                max_threads: max_threads.max(core_threads),
            }),
        }
    }

    fn submit(&self, job: Job) {
        let mut state = self.shared.state.lock();
        state.jobs.push_back((Instant::now(), job));
        match state.watchdog {
            Watchdog::Ticking => {}
            Watchdog::Asleep => {
                state.watchdog = Watchdog::Ticking;
                self.shared.watch.notify_one();
            }
            Watchdog::NotStarted => {
                let shared = Arc::clone(&self.shared);
                if spawn("cjm-pool-watch", move || watch(&shared)) {
                    state.watchdog = Watchdog::Ticking;
                }
            }
        }
        if state.idle > 0 {
            drop(state);
            self.shared.queued.notify_one();
        } else if state.threads < self.shared.core_threads {
            state.threads += 1;
            drop(state);
            add_thread(&self.shared);
        }
    }
}

/// Start a pool thread, already counted in `threads` by the caller (who holds no lock).
fn add_thread(shared: &Arc<Shared>) {
    let worker = Arc::clone(shared);
    if !spawn("cjm-plugin", move || work(&worker)) {
        // The watchdog asks again at the next stall.
        shared.state.lock().threads -= 1;
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> bool {
    match std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(PLUGIN_STACK_BYTES)
        .spawn(body)
    {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!("cannot start a thread for plugin calls: {err}");
            false
        }
    }
}

/// A pool thread: jobs until there are none for a while (a spare thread) or ever (a
/// core thread).
fn work(shared: &Shared) {
    let mut state = shared.state.lock();
    loop {
        if let Some((_, job)) = state.jobs.pop_front() {
            drop(state);
            // A panic here is the worker's own bug, not the plugin's (its calls are
            // guarded): the request's sender drops, it answers 500, the thread lives.
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a request's work panicked");
            }
            state = shared.state.lock();
            continue;
        }
        state.idle += 1;
        let spare = state.threads > shared.core_threads;
        let timed_out = if spare {
            shared
                .queued
                .wait_for(&mut state, SPARE_KEEP_ALIVE)
                .timed_out()
        } else {
            shared.queued.wait(&mut state);
            false
        };
        state.idle -= 1;
        if timed_out && state.jobs.is_empty() && state.threads > shared.core_threads {
            state.threads -= 1;
            return;
        }
    }
}

/// The watchdog: while jobs are queued, adds a thread whenever the oldest has waited
/// [`STALL`] (its threads are all in long calls); sleeps once nothing was queued for
/// [`WATCHDOG_LINGER`].
fn watch(shared: &Arc<Shared>) {
    let mut state = shared.state.lock();
    let mut quiet_since = Instant::now();
    loop {
        match state.jobs.front() {
            Some((queued_at, _)) => {
                quiet_since = Instant::now();
                if queued_at.elapsed() >= STALL && state.threads < shared.max_threads {
                    state.threads += 1;
                    let shared = Arc::clone(shared);
                    parking_lot::MutexGuard::unlocked(&mut state, || add_thread(&shared));
                }
            }
            None if quiet_since.elapsed() >= WATCHDOG_LINGER => {
                state.watchdog = Watchdog::Asleep;
                while state.watchdog == Watchdog::Asleep {
                    shared.watch.wait(&mut state);
                }
                quiet_since = Instant::now();
                continue;
            }
            None => {}
        }
        shared.watch.wait_for(&mut state, STALL);
    }
}

/// Requests on their way through [`off_io`].
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One request counted in [`IN_FLIGHT`] until dropped.
struct InFlight {
    /// No other was in flight when it came.
    alone: bool,
}

impl InFlight {
    fn enter() -> Self {
        InFlight {
            alone: IN_FLIGHT.fetch_add(1, Ordering::Relaxed) == 0,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}
