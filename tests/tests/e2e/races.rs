//! Jobs and workers when things happen in an unlucky order: a caller dropped while a
//! worker is being replaced, a cancel while a stopped worker starts on demand, a
//! queued job cancelled beside a running one, a call past its time limit, a cancel
//! during a retry's back-off, hosts opening one journal at once. Each waits on the
//! condition it needs, never on a fixed sleep; each failed on the code before the
//! fixes (cddd76b).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cjm_manager::jobs::{Cancellation, JobChange, JobOptions, JobState, Jobs};
use cjm_manager::{
    CallArgs, FaultPolicy, OnTimeout, PluginManager, PluginState, RestartPolicy, RetryPolicy,
};
use serde_json::json;

use crate::common::*;

/// The longest any step here may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

fn options(home: &TestHome) -> JobOptions {
    JobOptions::default().journal(home.path().join("jobs.sqlite3"))
}

/// Wait until `condition` holds (polled), or fail naming `what`.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG;
    while !condition() {
        assert!(Instant::now() < deadline, "never came to pass: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The faulty plugin loaded under `policy`, and a job queue over it.
async fn faulty_jobs(policy: FaultPolicy) -> (TestHome, PluginManager, Jobs) {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let mut manager_options = home.options();
    manager_options
        .plugin_fault_policies
        .insert(String::from("faulty"), policy);
    let manager = PluginManager::new(manager_options);
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    (home, manager, jobs)
}

/// A faulty worker whose start waits while `hold` exists.
fn holding_home(keep_alive_secs: Option<f64>) -> (TestHome, PathBuf) {
    let home = TestHome::new();
    let hold = home.path().join("hold");
    let mut manifest = json!({
        "name": "faulty",
        "version": "0.1.0",
        "command": FAULTY,
        "args": ["--hold-start-while", hold.to_str().unwrap()],
    });
    if let Some(keep_alive) = keep_alive_secs {
        manifest["keep_alive_secs"] = json!(keep_alive);
    }
    home.write_manifest("faulty", manifest);
    (home, hold)
}

/// Hold the next start of the worker; returns the marker it writes once it waits.
fn hold_start(hold: &Path) -> PathBuf {
    let held = hold.with_extension("held");
    let _ = std::fs::remove_file(&held);
    std::fs::write(hold, "").unwrap();
    held
}

async fn call_works(manager: &PluginManager) {
    let answer = tokio::time::timeout(
        HANG,
        manager.execute_plugin("faulty", CallArgs::new().arg("pid")),
    )
    .await
    .expect("a call after the dropped restart hangs: the plugin stayed restarting")
    .unwrap();
    assert!(answer.as_u64().is_some() || answer.is_object(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_dropped_while_its_new_worker_starts_leaves_the_plugin_usable() {
    let (home, hold) = holding_home(None);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let first = manager.worker_info("faulty").unwrap().pid;
    let held = hold_start(&hold);
    let reloading = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.reload_plugin("faulty", None).await })
    };
    until("the new worker waits to start", || held.exists()).await;
    // The caller gives up (as a `timeout` or `select!` around it would).
    reloading.abort();
    let _ = reloading.await;
    std::fs::remove_file(&hold).unwrap();
    call_works(&manager).await;
    let second = manager.worker_info("faulty").unwrap().pid;
    assert_ne!(first, second, "the reload went on to its end");
    assert!(!alive(first));
    manager.shutdown().await;
    assert!(!alive(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_its_stopped_worker_starts_on_demand_leaves_the_plugin_usable() {
    let (home, hold) = holding_home(Some(0.2));
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    until("the idle worker is stopped", || {
        manager.plugin_status("faulty").unwrap().state == PluginState::Stopped
    })
    .await;
    let held = hold_start(&hold);
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    let job = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    until("the worker starts on demand for the job", || held.exists()).await;
    assert_eq!(jobs.status(job).unwrap().state, JobState::Admitted);
    assert!(jobs.cancel(job).unwrap());
    let ended = tokio::time::timeout(HANG, jobs.wait(job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status.cancelled, Some(Cancellation::WhileQueued));
    std::fs::remove_file(&hold).unwrap();
    call_works(&manager).await;
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_job_never_lets_the_next_one_run_beside_the_running_one() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    let mut events = jobs.events();
    let running = jobs
        .submit("faulty", CallArgs::new().arg("steps").arg(50).arg(20), 0)
        .unwrap();
    let cancelled = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    let next = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    until("the first job runs", || {
        jobs.status(running).unwrap().state == JobState::Running
    })
    .await;
    assert!(jobs.cancel(cancelled).unwrap());
    tokio::time::timeout(HANG, jobs.wait(next))
        .await
        .unwrap()
        .unwrap();
    // In the order things happened: the first job ended before the next one ran.
    let mut order = Vec::new();
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(100), events.next()).await
    {
        if let JobChange::State(state) = event.change {
            order.push((event.job, state));
        }
    }
    let first_ended = order
        .iter()
        .position(|change| *change == (running, JobState::Succeeded))
        .expect("the first job succeeded");
    let next_ran = order
        .iter()
        .position(|change| *change == (next, JobState::Running))
        .expect("the next job ran");
    assert!(
        first_ended < next_ran,
        "the next job ran beside the first: {order:?}"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_call_kills_its_worker_as_the_policy_says_and_its_retry_has_its_own_id() {
    let (_home, manager, jobs) = faulty_jobs(
        FaultPolicy::default()
            .with_call_timeout(Duration::from_millis(500))
            .with_on_timeout(OnTimeout::KillWorker)
            .with_restart(RestartPolicy::up_to(3, Duration::from_millis(10)))
            .with_retry(RetryPolicy::up_to(1, Duration::from_millis(10))),
    )
    .await;
    let first = manager.worker_info("faulty").unwrap().pid;
    let job = jobs
        .submit("faulty", CallArgs::new().arg("sleep").arg(60_000), 0)
        .unwrap();
    let ended = tokio::time::timeout(HANG, jobs.wait(job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status.state, JobState::Failed);
    assert_eq!(
        ended.status.attempts, 2,
        "a timeout is transient: tried again"
    );
    let failure = ended.status.failure.unwrap();
    assert!(
        failure.message.contains("its worker was killed"),
        "{}",
        failure.message
    );
    // The first call's worker did not go on sleeping beside the retry.
    assert!(
        wait_gone(first, HANG).is_some(),
        "the timed-out call's worker still runs"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_retry_back_off_ends_the_job_at_once() {
    let (home, manager, jobs) = faulty_jobs(
        FaultPolicy::default().with_retry(RetryPolicy::up_to(3, Duration::from_secs(40))),
    )
    .await;
    let counter = home.path().join("flaky-count");
    let flaky = CallArgs::new()
        .arg("flaky")
        .arg(counter.to_str().unwrap())
        .arg(5);
    let job = jobs.submit("faulty", flaky, 0).unwrap();
    until("the first attempt failed", || counter.exists()).await;
    let asked = Instant::now();
    assert!(jobs.cancel(job).unwrap());
    let ended = tokio::time::timeout(HANG, jobs.wait(job))
        .await
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the cancel waited for the back-off: {:?}",
        asked.elapsed()
    );
    assert_eq!(ended.status.cancelled, Some(Cancellation::Cooperative));
    assert_eq!(ended.status.attempts, 1);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_of_a_plugin_stopped_while_idle_is_the_hosts_copy() {
    let home = TestHome::new();
    home.write_manifest(
        "echo",
        json!({"name": "echo", "version": "0.1.0", "command": ECHO, "keep_alive_secs": 0.2}),
    );
    let manager = home.manager();
    manager.discover_manifests();
    let config = json!({"prefix": "> "}).as_object().cloned();
    manager.load_plugin("echo", config).await.unwrap();
    until("the idle worker is stopped", || {
        manager.plugin_status("echo").unwrap().state == PluginState::Stopped
    })
    .await;
    let detail = manager.plugin_config_detail("echo").await.unwrap();
    assert_eq!(detail.config["prefix"], "> ");
    assert!(
        detail
            .worker_stopped
            .as_deref()
            .is_some_and(|why| why.contains("keep-alive")),
        "{detail:?}"
    );
    assert_eq!(manager.plugin_config("echo").await.unwrap()["prefix"], "> ");
    // Asking did not start the worker.
    assert_eq!(
        manager.plugin_status("echo").unwrap().state,
        PluginState::Stopped
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_options_set_past_their_setters_do_not_panic() {
    let home = TestHome::new();
    home.native_manifest("echo", ECHO, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("echo", None).await.unwrap();
    let mut job_options = options(&home);
    job_options.event_capacity = 0;
    job_options.default_concurrency = 0;
    let jobs = Jobs::new(manager.clone(), job_options).await.unwrap();
    let job = jobs.submit("echo", CallArgs::new().arg("x"), 0).unwrap();
    let ended = tokio::time::timeout(HANG, jobs.wait(job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status.state, JobState::Succeeded);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_opening_one_journal_at_once_all_start() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let journal = home.path().join("jobs.sqlite3");
    for round in 0..3 {
        // A host killed with jobs running and queued: every host opening the journal
        // next has them to mark (a read, then a write).
        let mut host = std::process::Command::new(JOBS_HOST)
            .env("CJM_HOME", home.path())
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(host.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let worker: u32 = line
            .split_whitespace()
            .nth(2)
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("unexpected host output {line:?}"));
        sigkill(host.id());
        host.wait().unwrap();
        assert!(
            wait_gone(worker, HANG).is_some(),
            "worker outlived its host"
        );
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let manager = home.manager();
                let options = JobOptions::default();
                tokio::spawn(async move {
                    Jobs::new(manager, options)
                        .await
                        .map(|jobs| jobs.interrupted().len())
                })
            })
            .collect();
        let mut marked = 0;
        for opening in opened {
            marked += opening.await.unwrap().unwrap();
        }
        assert_eq!(
            marked, 2,
            "round {round}: one host marks the two jobs, once"
        );
    }
    assert!(journal.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cjm_ctl_exec_at_once_share_the_journal() {
    let home = TestHome::new();
    home.installed_manifest("echo", ECHO, &[]);
    let children: Vec<_> = (0..4)
        .map(|n| {
            std::process::Command::new(CTL)
                .args(["exec", "echo", "--args", &format!("[\"{n}\"]")])
                .env("CJM_HOME", home.path())
                .current_dir(home.path())
                .env_remove("RUST_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let recent = cjm_manager::jobs::recent_jobs(&home.path().join("jobs.sqlite3"), 10).unwrap();
    assert_eq!(recent.len(), 4);
    assert!(recent.iter().all(|job| job.state == JobState::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_job_delivers_its_chunks_in_order_and_its_reader_going_cancels_it() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();

    // A stream that ends on its own: its chunks, then its failure.
    let (broken, mut chunks) = jobs
        .submit_stream("faulty", CallArgs::new().arg(3), 0)
        .unwrap();
    let mut seen = Vec::new();
    while let Some(chunk) = tokio::time::timeout(HANG, chunks.next()).await.unwrap() {
        seen.push(chunk["chunk"].as_u64().unwrap());
    }
    assert_eq!(seen, [0, 1, 2]);
    let ended = jobs.wait(broken).await.unwrap();
    assert_eq!(ended.status.state, JobState::Failed);
    assert!(
        ended
            .status
            .failure
            .unwrap()
            .message
            .contains("stream broke after 3 chunks"),
        "the plugin's own words"
    );

    // An endless one, whose reader stops after five chunks.
    let counter = home.path().join("produced");
    let endless = CallArgs::new()
        .kwarg("progress_file", counter.to_str().unwrap())
        .kwarg("interval_ms", 2);
    let (job, mut chunks) = jobs.submit_stream("faulty", endless, 0).unwrap();
    let next = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    for expected in 0..5 {
        let chunk = tokio::time::timeout(HANG, chunks.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(chunk["chunk"], expected);
    }
    drop(chunks);
    let ended = tokio::time::timeout(HANG, jobs.wait(job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status.cancelled, Some(Cancellation::Cooperative));
    // The worker was let go: the next job runs on it and succeeds.
    let after = tokio::time::timeout(HANG, jobs.wait(next))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.status.state, JobState::Succeeded);
    jobs.sync_journal().await;
    let journal = cjm_manager::jobs::recent_jobs(&home.path().join("jobs.sqlite3"), 10).unwrap();
    assert_eq!(journal.len(), 3, "streaming jobs are in the journal");
    manager.shutdown().await;
}

#[test]
fn cjm_ctl_exec_stream_is_a_job_in_the_journal() {
    let home = TestHome::new();
    home.installed_manifest("echo", ECHO, &[]);
    let output = std::process::Command::new(CTL)
        .args(["exec", "echo", "--stream", "--args", "[3]"])
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = String::from_utf8_lossy(&output.stdout).lines().count();
    assert_eq!(lines, 3, "{}", String::from_utf8_lossy(&output.stdout));
    let journal = cjm_manager::jobs::recent_jobs(&home.path().join("jobs.sqlite3"), 10).unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].plugin, "echo");
    assert_eq!(journal[0].state, JobState::Succeeded);
}
