//! Per-job diagnostics with real workers: two jobs at once on one worker each read
//! only their own records, a job alone gets what its plugin printed, the bounds drop
//! the oldest and count them, and `cjm-ctl jobs show` prints a job's timeline and
//! its lines.

use std::process::Command;
use std::time::{Duration, Instant};

use cjm_manager::jobs::{DiagnosticsRetention, JobDiagnostics, JobId, JobOptions, JobState, Jobs};
use cjm_manager::{CallArgs, PluginManager};

use crate::common::*;

fn faulty_home() -> (TestHome, PluginManager) {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    (home, manager)
}

fn chatty(tag: &str, lines: u64) -> CallArgs {
    CallArgs::new().arg("chatty").arg(tag).arg(lines).arg(5)
}

/// The job's records once `done` says they are all in (they are read back from the
/// worker's log a moment after the call).
async fn diagnostics_until(
    jobs: &Jobs,
    id: JobId,
    done: impl Fn(&JobDiagnostics) -> bool,
) -> JobDiagnostics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = jobs.diagnostics(id, None, 10_000).await.unwrap();
        if done(&read) {
            return read;
        }
        assert!(Instant::now() < deadline, "never complete: {read:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn messages(read: &JobDiagnostics) -> Vec<&str> {
    read.records
        .iter()
        .map(|record| record.message.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_at_once_on_one_worker_each_read_only_their_own_records() {
    let (home, manager) = faulty_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default()
            .journal(home.path().join("jobs.sqlite3"))
            .concurrency("faulty", 2),
    )
    .await
    .unwrap();
    // Each waits for the other to have started: they run at once.
    let (alpha_started, beta_started) = (home.path().join("alpha"), home.path().join("beta"));
    let call = |tag: &str, mine: &std::path::Path, other: &std::path::Path| {
        chatty(tag, 20)
            .kwarg("started_file", mine.to_str().unwrap())
            .kwarg("wait_for", other.to_str().unwrap())
    };
    let alpha = jobs
        .submit("faulty", call("alpha", &alpha_started, &beta_started), 0)
        .unwrap();
    let beta = jobs
        .submit("faulty", call("beta", &beta_started, &alpha_started), 0)
        .unwrap();
    for id in [alpha, beta] {
        let outcome = jobs.wait(id).await.unwrap();
        assert_eq!(outcome.status.state, JobState::Succeeded, "{outcome:?}");
    }
    let pid = manager.worker_info("faulty").unwrap().pid;
    for (id, mine, other) in [(alpha, "alpha", "beta"), (beta, "beta", "alpha")] {
        let journal_id = jobs.journal_id(id).unwrap();
        let read = diagnostics_until(&jobs, id, |read| {
            messages(read).contains(&format!("{mine} record 19 step=19").as_str())
        })
        .await;
        for record in &read.records {
            assert!(
                record.message.starts_with(mine) && !record.message.contains(other),
                "{mine}'s diagnostics hold {record:?}"
            );
            assert_eq!(record.call_id.as_deref(), Some(journal_id.as_str()));
        }
        // Every tracing record of its own, in order.
        let own: Vec<String> = (0..20)
            .map(|i| format!("{mine} record {i} step={i}"))
            .collect();
        let traced: Vec<&str> = read
            .records
            .iter()
            .filter(|record| record.level == "INFO")
            .map(|record| record.message.as_str())
            .collect();
        assert_eq!(traced, own);
        assert_eq!(read.dropped, 0);
    }
    // Both ran on the one worker.
    assert_eq!(manager.worker_info("faulty").unwrap().pid, pid);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_alone_gets_its_printed_lines_and_the_bounds_drop_the_oldest() {
    let (home, manager) = faulty_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default()
            .journal(home.path().join("jobs.sqlite3"))
            .diagnostics(Some(DiagnosticsRetention::bounded(5, 1000))),
    )
    .await
    .unwrap();
    let solo = jobs.submit("faulty", chatty("solo", 10), 0).unwrap();
    assert_eq!(
        jobs.wait(solo).await.unwrap().status.state,
        JobState::Succeeded
    );
    // 10 records and 10 printed lines: the newest 5 kept, 15 counted as dropped.
    let read = diagnostics_until(&jobs, solo, |read| read.dropped == 15).await;
    assert_eq!(read.records.len(), 5, "{read:#?}");
    assert!(messages(&read).iter().all(|text| text.starts_with("solo ")));
    // Printed last, with no other call in flight: its own.
    let last = read.records.last().unwrap();
    assert_eq!(
        (last.level.as_str(), last.message.as_str()),
        ("OUTPUT", "solo printed 9")
    );
    // A second job on the same worker afterwards has none of the first's lines.
    let next = jobs.submit("faulty", chatty("next", 2), 0).unwrap();
    jobs.wait(next).await.unwrap();
    let read = diagnostics_until(&jobs, next, |read| {
        messages(read).contains(&"next printed 1")
    })
    .await;
    assert!(
        messages(&read).iter().all(|text| text.starts_with("next ")),
        "{read:#?}"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_show_prints_the_timeline_and_the_jobs_own_lines() {
    let (home, manager) = faulty_home();
    manager.load_plugin("faulty", None).await.unwrap();
    // The default journal in CJM_HOME, where cjm-ctl looks.
    let jobs = Jobs::new(manager.clone(), JobOptions::default())
        .await
        .unwrap();
    let id = jobs.submit("faulty", chatty("shown", 3), 0).unwrap();
    jobs.wait(id).await.unwrap();
    diagnostics_until(&jobs, id, |read| {
        messages(read).contains(&"shown printed 2")
    })
    .await;
    jobs.sync_journal().await;
    let journal_id = jobs.journal_id(id).unwrap();
    let shown = Command::new(CTL)
        .args(["jobs", "show", &journal_id])
        .env("CJM_HOME", home.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    for expected in [
        format!("job {journal_id} (plugin faulty"),
        String::from("  submitted  "),
        String::from("  running    "),
        String::from("  succeeded  "),
        format!("attempts: {journal_id}\n"),
        String::from("INFO   e2e_faulty: shown record 0 step=0"),
        String::from("OUTPUT shown printed 2"),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in:\n{text}");
    }
    let unknown = Command::new(CTL)
        .args(["jobs", "show", "no-such-job"])
        .env("CJM_HOME", home.path())
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no job \"no-such-job\""));
    manager.shutdown().await;
}

/// The store is the original's `records` table: the original's own
/// `LocalDiagnosticsStore` (what its 0.0.46 worker writes through, given the file as
/// `CJM_DIAGNOSTICS_DB`, its records stamped with its call envelope's job id) writes
/// into ours, and a job reads back exactly the records stamped with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_originals_records_stamped_with_a_job_id_read_back_as_that_jobs() {
    let (home, manager) = faulty_home();
    manager.load_plugin("faulty", None).await.unwrap();
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(manager.clone(), JobOptions::default().journal(&journal))
        .await
        .unwrap();
    let id = jobs.submit("faulty", chatty("ours", 1), 0).unwrap();
    jobs.wait(id).await.unwrap();
    let journal_id = jobs.journal_id(id).unwrap();
    diagnostics_until(&jobs, id, |read| messages(read).contains(&"ours printed 0")).await;
    let store = cjm_manager::jobs::diagnostics::path_beside(&journal);
    let script = "import sys\n\
        from pathlib import Path\n\
        from cjm_plugin_system.core.diagnostics_store import LocalDiagnosticsStore, DiagnosticRecord\n\
        store = LocalDiagnosticsStore(Path(sys.argv[1]))\n\
        store.append_record(DiagnosticRecord(message='from the original', level='WARNING', logger_name='plugin', job_id=sys.argv[2]))\n\
        store.append_record(DiagnosticRecord(message='another job', job_id='someone-else'))\n\
        store.append_record(DiagnosticRecord(message='no job'))\n";
    let status = Command::new(crate::python_env::python_046())
        .args(["-c", script, store.to_str().unwrap(), &journal_id])
        .status()
        .unwrap();
    assert!(status.success());
    let read = diagnostics_until(&jobs, id, |read| {
        messages(read).contains(&"from the original")
    })
    .await;
    let last = read.records.last().unwrap();
    assert_eq!(
        (
            last.level.as_str(),
            last.target.as_str(),
            last.call_id.as_deref()
        ),
        ("WARNING", "plugin", None)
    );
    assert!(
        messages(&read)
            .iter()
            .all(|text| text.starts_with("ours ") || *text == "from the original"),
        "{read:#?}"
    );
    manager.shutdown().await;
}
