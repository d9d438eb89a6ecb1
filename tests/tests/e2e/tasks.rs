//! Task adapters (the original 0.0.46's `/task`) between our host and our worker:
//! cjm-wordcount's `text-statistics` adapter called directly and as jobs, each
//! status (404 unknown task or method, 409 cancelled, 500 typed failure), the job's
//! envelope reaching the plugin's log records (and a streamed job's plugin code), and
//! the worker's accounts landing in the job journal; and `cjm-ctl task`.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use cjm_manager::jobs::{
    job_accounts, Cancellation, JobChange, JobOptions, JobState, Jobs, TaskCall,
};
use cjm_manager::{CallArgs, ErrorCategory, ManagerError, PluginManager, ProxyError};
use serde_json::{json, Value};

use crate::common::*;

const TASK: &str = "text-statistics";

async fn wordcount(home: &TestHome) -> PluginManager {
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-wordcount", None).await.unwrap();
    manager
}

fn big_file(home: &TestHome) -> std::path::PathBuf {
    let big = home.path().join("big.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    for _ in 0..2_000_000 {
        file.write_all(b"the quick brown fox jumps\n").unwrap();
    }
    file.flush().unwrap();
    big
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_our_host_calls_our_adapter_and_unknown_tasks_name_what_is_bound() {
    let home = TestHome::new();
    let manager = wordcount(&home).await;
    // Recorded at install (`--manifest`), so found without starting the worker.
    let servers = manager.capabilities_for_task(TASK);
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0].plugin, "cjm-wordcount");
    assert_eq!(servers[0].adapter, None);

    let counted = manager
        .execute_task(
            "cjm-wordcount",
            TASK,
            "count_text",
            CallArgs::new().kwarg("text", "one two\nthree"),
        )
        .await
        .unwrap();
    assert_eq!(counted, json!({"lines": 1, "words": 3, "bytes": 13}));

    let err = manager
        .execute_task("cjm-wordcount", "nope", "count_text", CallArgs::new())
        .await
        .unwrap_err();
    match &err {
        ManagerError::Plugin(ProxyError::UnknownTask { task, detail, .. }) => {
            assert_eq!(task, "nope");
            assert!(detail.contains(TASK), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.category(), Some(ErrorCategory::UserInput));
    let err = manager
        .execute_task("cjm-wordcount", TASK, "count_words", CallArgs::new())
        .await
        .unwrap_err();
    match &err {
        ManagerError::Plugin(ProxyError::UnknownTask { method, detail, .. }) => {
            assert_eq!(method, "count_words");
            assert!(
                detail.contains("count_text") && detail.contains("count_file"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Positional arguments are refused before anything is sent.
    let err = manager
        .execute_task(
            "cjm-wordcount",
            TASK,
            "count_text",
            CallArgs::new().arg("x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::Plugin(ProxyError::TaskArguments { positional: 1, .. })
        ),
        "{err:?}"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_jobs_carry_the_envelope_and_journal_the_workers_accounts() {
    let home = TestHome::new();
    let manager = wordcount(&home).await;
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default()
            .journal(&journal)
            .progress_poll(Duration::from_millis(20)),
    )
    .await
    .unwrap();

    let job = jobs
        .submit_task(
            "cjm-wordcount",
            TaskCall::new(TASK, "count_text"),
            CallArgs::new().kwarg("text", "a b c d"),
            0,
        )
        .unwrap();
    let journal_id = jobs.journal_id(job).unwrap();
    let ended = jobs.wait(job).await.unwrap();
    assert_eq!(
        ended.result,
        Some(json!({"lines": 0, "words": 4, "bytes": 7}))
    );

    // The adapter's log record carries the job's id (the worker's span, in its log line).
    let log = home.path().join("logs").join("cjm-wordcount.log");
    let expected = format!("\"job\":\"{journal_id}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|line| line.contains(&expected) && line.contains("counted a text"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{expected} not in the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A failure is a 500 with the typed error; its account comes back too.
    let failed = jobs
        .submit_task(
            "cjm-wordcount",
            TaskCall::new(TASK, "count_file"),
            CallArgs::new().kwarg("file_path", "/proc/self/mem"),
            0,
        )
        .unwrap();
    let failed_id = jobs.journal_id(failed).unwrap();
    let ended = jobs.wait(failed).await.unwrap();
    assert_eq!(ended.status.state, JobState::Failed);
    let failure = ended.status.failure.unwrap();
    assert_eq!(failure.category, ErrorCategory::Fatal);
    assert!(
        failure.message.contains("Input/output error"),
        "{}",
        failure.message
    );

    jobs.sync_journal().await;
    let accounts = job_accounts(&journal, &journal_id).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].event_type, "task_account");
    assert_eq!(accounts[0].attempt, 1);
    assert_eq!(accounts[0].payload["method"], "count_text");
    assert_eq!(accounts[0].payload["ok"], true);
    let accounts = job_accounts(&journal, &failed_id).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].payload["ok"], false);
    assert_eq!(accounts[0].payload["error_category"], "fatal");

    // Cancelled while it runs: the worker answers 409 and the job is cancelled.
    let big = big_file(&home);
    let job = jobs
        .submit_task(
            "cjm-wordcount",
            TaskCall::new(TASK, "count_file"),
            CallArgs::new().kwarg("file_path", big.to_str().unwrap()),
            0,
        )
        .unwrap();
    let mut events = jobs.events_for(job);
    while !matches!(
        events.next().await.unwrap().unwrap().change,
        JobChange::Progress { .. }
    ) {}
    jobs.cancel(job).unwrap();
    let ended = jobs.wait(job).await.unwrap();
    assert_eq!(
        ended.status.cancelled,
        Some(Cancellation::Cooperative),
        "{ended:?}"
    );
    jobs.shutdown().await;
    manager.shutdown().await;
}

#[test]
fn task_cjm_ctl_task_prints_the_result_and_exits_by_category() {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let run = |args: &[&str]| {
        Command::new(CTL)
            .arg("task")
            .args(args)
            .env("CJM_HOME", home.path())
            .current_dir(home.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run(&[
        "cjm-wordcount",
        TASK,
        "count_text",
        "--kwargs",
        r#"{"text": "x y"}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["words"], 2);
    let out = run(&["cjm-wordcount", "nope", "count_text"]);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(TASK),
        "{out:?}"
    );
    let out = run(&[
        "cjm-wordcount",
        TASK,
        "count_file",
        "--kwargs",
        r#"{"file_path": "/proc/self/mem"}"#,
    ]);
    assert_eq!(out.status.code(), Some(70), "{out:?}");
    let out = run(&["cjm-wordcount", TASK, "count_text", "--kwargs", "[1]"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_job_carries_its_envelope_too() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(manager.clone(), JobOptions::default().journal(&journal))
        .await
        .unwrap();
    let (job, mut chunks) = jobs
        .submit_stream("faulty", CallArgs::new().kwarg("tell_job", true), 0)
        .unwrap();
    let journal_id = jobs.journal_id(job).unwrap();
    let mut told = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), chunks.next())
        .await
        .unwrap()
    {
        told.push(chunk["job"].clone());
    }
    assert_eq!(told, [json!(journal_id), json!(journal_id)]);
    assert_eq!(
        jobs.wait(job).await.unwrap().status.state,
        JobState::Succeeded
    );
    // A stream outside a job has no envelope: no job.
    let direct = manager
        .execute_plugin_stream("faulty", CallArgs::new().kwarg("tell_job", true))
        .await
        .unwrap();
    let first = direct.collect().await.unwrap();
    assert_eq!(first[0]["job"], Value::Null);
}
