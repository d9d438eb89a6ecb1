//! Jobs with real workers: cancellation (queued, cooperative, forced, a stream, one of
//! two calls on a worker), priorities, the queue's bound, progress, typed errors and
//! retries, the journal across a SIGKILLed host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cjm_manager::jobs::{Cancellation, JobChange, JobId, JobOptions, JobState, Jobs, JobsError};
use cjm_manager::{
    CallArgs, ErrorCategory, FaultPolicy, ManagerError, PluginManager, ProxyError, RetryPolicy,
};
use serde_json::json;

use crate::common::*;

/// A text file of `mib` MiB of short words, made once per test home.
fn big_text(home: &TestHome, mib: usize) -> PathBuf {
    let path = home.path().join(format!("text-{mib}.txt"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let line = "the quick brown fox jumps over the lazy dog again\n".repeat(20);
    let mut written = 0;
    while written < mib << 20 {
        file.write_all(line.as_bytes()).unwrap();
        written += line.len();
    }
    file.flush().unwrap();
    path
}

/// A named pipe that yields text without end, for a count that can only end by being
/// cancelled: however fast the machine, it cannot finish before the cancel arrives.
/// The writer goes when the plugin closes its end (its write fails: broken pipe).
fn endless_text(home: &TestHome) -> PathBuf {
    let path = home.path().join("endless.txt");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    let pipe = path.clone();
    std::thread::spawn(move || {
        let Ok(mut writer) = std::fs::OpenOptions::new().write(true).open(&pipe) else {
            return;
        };
        let line = "the quick brown fox jumps over the lazy dog again\n".repeat(20);
        while writer.write_all(line.as_bytes()).is_ok() {}
    });
    path
}

fn jobs_home() -> (TestHome, PluginManager) {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    home.native_manifest("faulty", FAULTY, &[]);
    home.installed_manifest("cjm-echo", ECHO, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    (home, manager)
}

fn options(home: &TestHome) -> JobOptions {
    JobOptions::default().journal(home.path().join("jobs.sqlite3"))
}

/// Small chunks: many progress reports and cancellation points.
async fn load_wordcount(manager: &PluginManager) {
    let config = json!({"chunk_bytes": 64 * 1024}).as_object().cloned();
    manager.load_plugin("cjm-wordcount", config).await.unwrap();
}

async fn wait_state(jobs: &Jobs, id: JobId, state: JobState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs.status(id).map(|status| status.state) != Some(state) {
        assert!(
            Instant::now() < deadline,
            "{id} never became {state}: {:?}",
            jobs.status(id)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn count(path: &Path) -> CallArgs {
    CallArgs::new().arg(path.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_cancelled_without_ever_running() {
    let (home, manager) = jobs_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    let blocker = jobs
        .submit("faulty", CallArgs::new().arg("sleep").arg(500), 0)
        .unwrap();
    let queued = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    wait_state(&jobs, blocker, JobState::Running).await;
    assert_eq!(jobs.status(queued).unwrap().state, JobState::Queued);
    assert!(jobs.cancel(queued).unwrap());
    let ended = jobs.wait(queued).await.unwrap();
    assert_eq!(ended.status.state, JobState::Cancelled);
    assert_eq!(ended.status.cancelled, Some(Cancellation::WhileQueued));
    assert_eq!(ended.status.started_at, None, "it ran");
    assert_eq!(ended.result, None);
    // The running one is untouched.
    let blocker = jobs.wait(blocker).await.unwrap();
    assert_eq!(blocker.result, Some(json!({"slept_ms": 500})));
    assert!(
        !jobs.cancel(queued).unwrap(),
        "cancelling an ended job is no news"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_stops_when_asked_and_keeps_its_worker() {
    let (home, manager) = jobs_home();
    load_wordcount(&manager).await;
    let pid = manager.worker_info("cjm-wordcount").unwrap().pid;
    let text = endless_text(&home);
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    let job = jobs.submit("cjm-wordcount", count(&text), 0).unwrap();
    let mut events = jobs.events_for(job);
    // Cancel after its first progress report: it is counting then.
    loop {
        let event = events.next().await.unwrap().unwrap();
        if matches!(event.change, JobChange::Progress { .. }) {
            break;
        }
    }
    let asked = Instant::now();
    assert!(jobs.cancel(job).unwrap());
    let ended = jobs.wait(job).await.unwrap();
    let took = asked.elapsed();
    assert_eq!(ended.status.state, JobState::Cancelled);
    assert_eq!(ended.status.cancelled, Some(Cancellation::Cooperative));
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    // Stopped at a chunk boundary: same worker, still serving.
    assert_eq!(manager.worker_info("cjm-wordcount").unwrap().pid, pid);
    let small = home.path().join("small.txt");
    std::fs::write(&small, "a b c\n").unwrap();
    let after = jobs.submit("cjm-wordcount", count(&small), 0).unwrap();
    assert_eq!(jobs.wait(after).await.unwrap().result.unwrap()["words"], 3);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ignores_its_cancel_is_stopped_by_force_and_its_worker_restarted() {
    let (home, manager) = jobs_home();
    let config = json!({"level": 4}).as_object().cloned();
    manager.load_plugin("faulty", config).await.unwrap();
    manager.load_plugin("cjm-echo", None).await.unwrap();
    let (faulty_pid, echo_pid) = (
        manager.worker_info("faulty").unwrap().pid,
        manager.worker_info("cjm-echo").unwrap().pid,
    );
    let jobs = Jobs::new(
        manager.clone(),
        options(&home).cancel_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    // Cancelled once the call runs in the worker: a cancel that overtook it would be
    // remembered there and the call refused on arrival (cooperative, not forced).
    let (call, started) = deaf_sleep(&home);
    let job = jobs.submit("faulty", call, 0).unwrap();
    wait_started(&started).await;
    let asked = Instant::now();
    jobs.cancel(job).unwrap();
    let ended = jobs.wait(job).await.unwrap();
    let took = asked.elapsed();
    assert_eq!(
        ended.status.cancelled,
        Some(Cancellation::Forced),
        "{ended:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "forced before its timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A new worker (started once the old one is gone), with the configuration the
    // old one had; echo untouched.
    assert!(wait_gone(faulty_pid, Duration::from_secs(5)).is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !manager.is_running("faulty") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            manager.plugin_status("faulty")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new_pid = manager.worker_info("faulty").unwrap().pid;
    assert_ne!(new_pid, faulty_pid);
    assert!(manager.is_running("faulty"));
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 4})
    );
    assert_eq!(manager.worker_info("cjm-echo").unwrap().pid, echo_pid);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_can_be_cancelled_and_ends_saying_so() {
    let (home, manager) = jobs_home();
    load_wordcount(&manager).await;
    let text = endless_text(&home);
    let mut stream = manager
        .execute_plugin_stream("cjm-wordcount", count(&text))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first["status"], "progress");
    assert!(stream.cancel().await.unwrap());
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        last = Some(chunk);
    }
    match last {
        Some(Err(ProxyError::Cancelled { .. })) => {}
        other => panic!("the stream did not end cancelled: {other:?}"),
    }
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_calls_on_one_worker_is_cancelled_the_other_completes() {
    let (home, manager) = jobs_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home).concurrency("faulty", 2))
        .await
        .unwrap();
    // The call to be stopped would run for minutes, the other for about three seconds:
    // neither can end on its own before the cancel, however loaded the machine is.
    let steps = |count: u64| CallArgs::new().arg("steps").arg(count).arg(20);
    let stopped = jobs.submit("faulty", steps(10_000), 0).unwrap();
    let completed = jobs.submit("faulty", steps(150), 0).unwrap();
    wait_state(&jobs, stopped, JobState::Running).await;
    wait_state(&jobs, completed, JobState::Running).await;
    jobs.cancel(stopped).unwrap();
    let stopped = jobs.wait(stopped).await.unwrap();
    assert_eq!(stopped.status.state, JobState::Cancelled);
    assert_eq!(stopped.status.cancelled, Some(Cancellation::Cooperative));
    let completed = jobs.wait(completed).await.unwrap();
    assert_eq!(completed.status.state, JobState::Succeeded);
    assert_eq!(completed.result.unwrap()["steps"], 150);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_go_first_and_a_full_queue_refuses_with_its_limit() {
    let (home, manager) = jobs_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home).max_queued(3))
        .await
        .unwrap();
    let blocker = jobs
        .submit("faulty", CallArgs::new().arg("sleep").arg(300), 0)
        .unwrap();
    wait_state(&jobs, blocker, JobState::Running).await;
    let mut events = jobs.events();
    let low = jobs
        .submit("faulty", CallArgs::new().arg("pid"), -1)
        .unwrap();
    let high = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 5)
        .unwrap();
    let mid = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 1)
        .unwrap();
    let err = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 9)
        .unwrap_err();
    assert!(matches!(err, JobsError::QueueFull { limit: 3 }), "{err}");
    assert!(err.to_string().contains("3 jobs are waiting"), "{err}");
    let mut started = Vec::new();
    while started.len() < 3 {
        let event = events.next().await.unwrap().unwrap();
        if event.change == JobChange::State(JobState::Running) && event.job != blocker {
            started.push(event.job);
        }
    }
    assert_eq!(started, [high, mid, low]);
    for id in [low, high, mid] {
        assert_eq!(
            jobs.wait(id).await.unwrap().status.state,
            JobState::Succeeded
        );
    }
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_delivered_in_order_as_it_is_reported() {
    let (home, manager) = jobs_home();
    load_wordcount(&manager).await;
    let text = big_text(&home, 8);
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    let job = jobs.submit("cjm-wordcount", count(&text), 0).unwrap();
    let mut events = jobs.events_for(job);
    let mut fractions = Vec::new();
    loop {
        let event = events.next().await.unwrap().unwrap();
        match event.change {
            JobChange::Progress { fraction, message } => {
                assert!(message.contains("bytes"), "{message}");
                fractions.push(fraction);
            }
            JobChange::State(state) if state.is_final() => break,
            _ => {}
        }
    }
    assert!(fractions.len() >= 2, "{fractions:?}");
    assert!(
        fractions.windows(2).all(|pair| pair[0] < pair[1]),
        "not increasing: {fractions:?}"
    );
    assert!(
        (fractions.last().unwrap() - 1.0).abs() < 1e-9,
        "{fractions:?}"
    );
    let status = jobs.status(job).unwrap();
    assert_eq!(status.progress.map(|(fraction, _)| fraction), Some(1.0));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_typed_and_transient_ones_retried_by_the_fault_policy() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let mut options_of_manager = home.options();
    options_of_manager.plugin_fault_policies.insert(
        String::from("faulty"),
        FaultPolicy::default().with_retry(RetryPolicy::up_to(2, Duration::from_millis(10))),
    );
    let manager = PluginManager::new(options_of_manager);
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();

    let counter = home.path().join("flaky-count");
    let flaky = CallArgs::new()
        .arg("flaky")
        .arg(counter.to_str().unwrap())
        .arg(3);
    let retried = jobs.submit("faulty", flaky, 0).unwrap();
    let retried = jobs.wait(retried).await.unwrap();
    assert_eq!(retried.result, Some(json!({"calls": 3})));
    assert_eq!(retried.status.attempts, 3);

    for (action, category, retriable) in [
        ("transient", ErrorCategory::Transient, true),
        ("resource", ErrorCategory::Resource, true),
        ("nonsense", ErrorCategory::UserInput, true),
        ("panic", ErrorCategory::Fatal, false),
    ] {
        let job = jobs
            .submit("faulty", CallArgs::new().arg(action), 0)
            .unwrap();
        let ended = jobs.wait(job).await.unwrap();
        let failure = ended.status.failure.expect("it failed");
        assert_eq!(
            (failure.category, failure.retriable),
            (category, retriable),
            "{action}: {}",
            failure.message
        );
    }
    // A worker killed outright is short of a resource (the OOM killer's signal).
    let (call, started) = deaf_sleep(&home);
    let job = jobs.submit("faulty", call, 0).unwrap();
    wait_started(&started).await;
    sigkill(manager.worker_info("faulty").unwrap().pid);
    let failure = jobs.wait(job).await.unwrap().status.failure.unwrap();
    assert_eq!(
        failure.category,
        ErrorCategory::Resource,
        "{}",
        failure.message
    );
    assert!(failure.message.contains("signal 9"), "{}", failure.message);

    // A job for a plugin that is not loaded is refused at once.
    let err = jobs.submit("ghost", CallArgs::new(), 0).unwrap_err();
    assert!(
        matches!(err, JobsError::Manager(ManagerError::NotLoaded { .. })),
        "{err}"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_jobs_and_the_manager_leaves_nothing_running() {
    let (home, manager) = jobs_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let pid = manager.worker_info("faulty").unwrap().pid;
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    let running = jobs
        .submit("faulty", CallArgs::new().arg("sleep").arg(60_000), 0)
        .unwrap();
    let queued = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    wait_state(&jobs, running, JobState::Running).await;
    let (mut running_end, mut queued_end) = (jobs.events_for(running), jobs.events_for(queued));
    drop(jobs);
    drop(manager);
    assert!(
        wait_gone(pid, Duration::from_secs(10)).is_some(),
        "worker left running"
    );
    // Both ended cancelled, as their last events say.
    for events in [&mut queued_end, &mut running_end] {
        let mut last = None;
        while let Some(Ok(event)) = events.next().await {
            last = Some(event.change);
        }
        assert_eq!(last, Some(JobChange::State(JobState::Cancelled)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_reports_the_jobs_of_a_sigkilled_host_as_interrupted() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let mut host = Command::new(JOBS_HOST)
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(host.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [running, queued, worker] = fields[..] else {
        panic!("unexpected host output {line:?}");
    };
    let worker: u32 = worker.parse().unwrap();
    sigkill(host.id());
    host.wait().unwrap();
    assert!(
        wait_gone(worker, Duration::from_secs(5)).is_some(),
        "worker outlived its host"
    );

    // The next host to open the journal finds both cut short.
    let manager = home.manager();
    let jobs = Jobs::new(manager, JobOptions::default()).await.unwrap();
    let mut interrupted: Vec<&str> = jobs
        .interrupted()
        .iter()
        .map(|job| job.id.as_str())
        .collect();
    interrupted.sort_unstable();
    let mut expected = [running, queued];
    expected.sort_unstable();
    assert_eq!(interrupted, expected);
    let running_entry = jobs
        .interrupted()
        .iter()
        .find(|job| job.id == running)
        .unwrap();
    assert!(running_entry.started_at.is_some(), "{running_entry:?}");
    assert_eq!(running_entry.plugin, "faulty");

    // And `cjm-ctl jobs` lists them so.
    let listed = Command::new(CTL)
        .args(["jobs", "--json"])
        .env("CJM_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let states: Vec<(&str, &str)> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| (job["id"].as_str().unwrap(), job["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&(running, "interrupted")), "{states:?}");
    assert!(states.contains(&(queued, "interrupted")), "{states:?}");
}

/// A call of a minute that ignores its cancel, and the file it writes once it runs in
/// the worker.
fn deaf_sleep(home: &TestHome) -> (CallArgs, std::path::PathBuf) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = home.path().join(format!("started-{n}"));
    let call = CallArgs::new()
        .arg("sleep")
        .arg(60_000)
        .kwarg("started_file", started.to_str().unwrap());
    (call, started)
}

/// Wait until the call that writes `started` runs in its worker.
async fn wait_started(started: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
