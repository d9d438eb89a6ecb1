//! The queue's verbs with a real manager: a job's resource snapshot is what the
//! scheduler admitted it with, and what it read of the machine to do so; why a job
//! waits (memory, its worker being started again).

use std::sync::Arc;

use cjm_manager::jobs::{JobOptions, JobState, Jobs};
use cjm_manager::CallArgs;
use cjm_scheduling::{ManualStats, SafetyScheduler};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_resource_snapshot_is_its_admission() {
    let home = TestHome::new();
    home.write_manifest(
        "echo-ram",
        json!({
            "name": "echo-ram",
            "version": "0.1.0",
            "command": ECHO,
            "resources": {"min_system_ram_mb": 64},
        }),
    );
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    options.stats_source = Some(Arc::new(ManualStats::with_free(None, Some(4000.0))));
    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();
    manager.load_plugin("echo-ram", None).await.unwrap();
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().journal(home.path().join("jobs.sqlite3")),
    )
    .await
    .unwrap();
    let job = jobs
        .submit("echo-ram", CallArgs::new().kwarg("text", "hi"), 0)
        .unwrap();
    let outcome = jobs.wait(job).await.unwrap();
    assert_eq!(outcome.status.state, JobState::Succeeded);
    let snapshot = jobs.resource_snapshot(job).unwrap();
    assert_eq!(snapshot.declared.min_system_ram_mb, 64);
    assert_eq!(
        (snapshot.reserved_ram_mb, snapshot.reserved_vram_mb),
        (64, 0)
    );
    let seen = snapshot.system_at_admission.unwrap();
    assert_eq!(seen.memory_available_mb, Some(4000.0));
    jobs.shutdown().await;
    manager.shutdown().await;
}

/// Under a waiting policy, a job whose memory is not free says why it waits (once,
/// however often the scheduler looks), and runs once the memory is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_memory_says_so_once_and_runs_when_it_frees() {
    use cjm_manager::jobs::{BlockReason, JobChange};
    use cjm_scheduling::QueueScheduler;
    use std::time::Duration;

    let home = TestHome::new();
    home.write_manifest(
        "echo-ram",
        json!({
            "name": "echo-ram",
            "version": "0.1.0",
            "command": ECHO,
            "resources": {"min_system_ram_mb": 64},
        }),
    );
    let stats = ManualStats::with_free(None, Some(10.0));
    let looks = Arc::new(Counted {
        stats: stats.clone(),
        reads: std::sync::atomic::AtomicUsize::new(0),
    });
    let mut options = home.options();
    options.scheduler = Arc::new(
        QueueScheduler::new(Duration::from_secs(30)).with_poll_interval(Duration::from_millis(5)),
    );
    options.stats_source = Some(looks.clone());
    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();
    manager.load_plugin("echo-ram", None).await.unwrap();
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().journal(home.path().join("jobs.sqlite3")),
    )
    .await
    .unwrap();
    let mut events = jobs.events_for(cjm_manager::jobs::JobId(1));
    let job = jobs
        .submit("echo-ram", CallArgs::new().kwarg("text", "hi"), 0)
        .unwrap();
    assert_eq!(job, cjm_manager::jobs::JobId(1));
    // The scheduler looks at the machine again and again while the job waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while looks.reads.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler stopped looking"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(jobs.status(job).unwrap().state, JobState::Admitted);
    stats.update(|stats| stats.memory_available_mb = Some(4000.0));
    assert_eq!(
        jobs.wait(job).await.unwrap().status.state,
        JobState::Succeeded
    );
    // Its events up to its end: the reason told once, however often it was looked at.
    let mut blocked = Vec::new();
    while let Some(Ok(event)) = events.next().await {
        match event.change {
            JobChange::Blocked(reason) => blocked.push(reason),
            JobChange::State(state) if state.is_final() => break,
            _ => {}
        }
    }
    assert_eq!(blocked, [Some(BlockReason::Memory)]);
    jobs.shutdown().await;
    manager.shutdown().await;
}

/// A statistics source that counts how often the scheduler reads it.
#[derive(Debug)]
struct Counted {
    stats: ManualStats,
    reads: std::sync::atomic::AtomicUsize,
}

impl cjm_scheduling::StatsSource for Counted {
    fn system_stats(
        &self,
    ) -> cjm_scheduling::BoxFuture<
        '_,
        Result<cjm_scheduling::SystemStats, cjm_scheduling::StatsError>,
    > {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.stats.system_stats()
    }
}

/// `cjm-ctl jobs reorder`, another process: the host of the queued job carries it
/// out through the journal, and the job goes first; a job past the queue is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cjm_ctl_reorders_a_queued_job_of_a_running_host() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    // The journal where cjm-ctl looks for it: $CJM_HOME/jobs.sqlite3.
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().journal(home.path().join("jobs.sqlite3")),
    )
    .await
    .unwrap();
    let started = home.path().join("started");
    let blocker = jobs
        .submit(
            "faulty",
            CallArgs::new()
                .arg("steps")
                .arg(100_000)
                .arg(10)
                .kwarg("started_file", started.to_str().unwrap()),
            0,
        )
        .unwrap();
    let first = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    let second = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    until_file(&started).await;
    jobs.sync_journal().await;
    let ctl = |args: Vec<String>| {
        let home = home.path().to_owned();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(CTL)
                .args(&args)
                .env("CJM_HOME", &home)
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        })
    };
    let id = |job| jobs.journal_id(job).unwrap();
    let out = ctl(vec![
        "jobs".into(),
        "reorder".into(),
        id(second),
        "10".into(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(jobs.status(second).unwrap().priority, 10);
    jobs.sync_journal().await;
    let listed = cjm_manager::jobs::history(
        &home.path().join("jobs.sqlite3"),
        &cjm_manager::jobs::HistoryQuery::default(),
    )
    .unwrap();
    let entry = listed.iter().find(|entry| entry.id == id(second)).unwrap();
    assert_eq!(entry.priority, 10);
    // The running one cannot be.
    let out = ctl(vec![
        "jobs".into(),
        "reorder".into(),
        id(blocker),
        "10".into(),
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not queued"),
        "{out:?}"
    );
    jobs.cancel(blocker).unwrap();
    let second_done = jobs.wait(second).await.unwrap().status;
    let first_done = jobs.wait(first).await.unwrap().status;
    assert!(
        second_done.started_at.unwrap() <= first_done.started_at.unwrap(),
        "the reordered job went second"
    );
    jobs.shutdown().await;
    manager.shutdown().await;
}

/// A job whose worker died before it says, once admitted, that it waits for the
/// worker to be started again (where), then runs; one whose worker runs says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_must_start_again_says_it_waits_for_its_placement() {
    use cjm_manager::jobs::{BlockReason, JobChange, JobId};

    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let mut options = home.options();
    options.plugin_fault_policies.insert(
        String::from("faulty"),
        cjm_manager::FaultPolicy::default().with_restart(cjm_manager::RestartPolicy::up_to(
            1,
            std::time::Duration::from_millis(10),
        )),
    );
    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().journal(home.path().join("jobs.sqlite3")),
    )
    .await
    .unwrap();
    let reasons = |id: JobId| {
        let mut events = jobs.events_for(id);
        async move {
            let mut blocked = Vec::new();
            while let Some(Ok(event)) = events.next().await {
                match event.change {
                    JobChange::Blocked(reason) => blocked.push(reason),
                    JobChange::State(state) if state.is_final() => break,
                    _ => {}
                }
            }
            blocked
        }
    };
    let running = reasons(JobId(1));
    let job = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    assert_eq!(
        jobs.wait(job).await.unwrap().status.state,
        JobState::Succeeded
    );
    assert_eq!(running.await, []);

    // Its worker exits under the next job; the one after starts it again.
    let died = jobs
        .submit("faulty", CallArgs::new().arg("exit").arg(3), 0)
        .unwrap();
    assert_eq!(
        jobs.wait(died).await.unwrap().status.state,
        JobState::Failed
    );
    let restarting = reasons(JobId(3));
    let job = jobs
        .submit("faulty", CallArgs::new().arg("pid"), 0)
        .unwrap();
    assert_eq!(job, JobId(3));
    let ended = jobs.wait(job).await.unwrap();
    assert_eq!(ended.status.state, JobState::Succeeded, "{ended:?}");
    assert_eq!(
        restarting.await,
        [Some(BlockReason::Placement {
            placement: String::from("this machine")
        })]
    );
    jobs.shutdown().await;
    manager.shutdown().await;
}
