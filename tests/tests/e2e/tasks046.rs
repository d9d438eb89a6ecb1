//! Task adapters with the original 0.0.46, both ways: our host runs a 0.0.46 tool
//! plugin with adapters bound from manifests its own tooling generated
//! (`write_manifest` with the derived structural surface, `generate-adapter-manifest`),
//! and the 0.0.46 host calls our worker's adapter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cjm_manager::jobs::{
    job_accounts, Cancellation, JobChange, JobOptions, JobState, Jobs, TaskCall,
};
use cjm_manager::{CallArgs, ErrorCategory, ManagerError, PluginManager, ProxyError};
use serde_json::{json, Value};

use crate::common::*;
use crate::python_env;

const TOOL: &str = "cjm-text-tool-py";
const TASK: &str = "text-statistics-py";

/// Generate the tool's and the adapters' manifests into `dir` with the original's
/// own code; its adapter introspection runs `conda run -n ENV python ..`, so a
/// `conda` that runs the 0.0.46 venv's Python goes first on PATH.
fn generate_manifests(home: &TestHome, dir: &Path) {
    let path = python_env::path_with_conda_shim(home, python_env::python_046());
    let out = Command::new(python_env::python_046())
        .arg(python_env::fixture_dir_046().join("generate046_manifests.py"))
        .arg(dir)
        .arg(python_env::fixture_dir_046())
        .arg(home.path())
        .env("PATH", path)
        .env("PYTHONPATH", python_env::fixture_dir_046())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

async fn tool_manager(home: &TestHome) -> (PluginManager, PathBuf) {
    let manifests = home.path().join("manifests");
    generate_manifests(home, &manifests);
    let mut options = home.options();
    options.search_paths.push(manifests.clone());
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    (manager, manifests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_our_host_binds_the_046_adapters_that_fit_and_calls_them() {
    let home = TestHome::new();
    let (manager, _) = tool_manager(&home).await;
    // Adapter manifests are units of their own, not broken plugin manifests.
    assert!(
        manager.discovery_problems().is_empty(),
        "{:?}",
        manager.discovery_problems()
    );
    let adapters = manager.adapter_manifests();
    assert_eq!(adapters.len(), 2, "{adapters:?}");
    let fitting: Vec<String> = manager
        .matched_adapters(TOOL)
        .into_iter()
        .map(|adapter| adapter.name)
        .collect();
    assert_eq!(fitting, ["cjm_text_adapter.impl.TextStatisticsAdapter"]);
    let verdict = manager
        .check_adapter_compatibility("cjm_text_adapter.impl.TranslationAdapter", TOOL)
        .unwrap();
    assert!(!verdict.compatible);
    assert_eq!(verdict.missing_methods, ["translate"]);
    let servers = manager.capabilities_for_task(TASK);
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0].plugin, TOOL);
    assert!(manager.capabilities_for_task("translation").is_empty());

    manager.load_plugin(TOOL, None).await.unwrap();
    let pid = manager.worker_info(TOOL).unwrap().pid;
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|&byte| byte == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    assert!(
        argv.windows(2)
            .any(|pair| pair == ["--adapters", "cjm_text_adapter.impl:TextStatisticsAdapter"]),
        "{argv:?}"
    );

    let counted = manager
        .execute_task(
            TOOL,
            TASK,
            "count_text",
            CallArgs::new().kwarg("text", "a b c"),
        )
        .await
        .unwrap();
    assert_eq!(
        counted,
        json!({"words": 3, "unit": "words", "job_id": null})
    );

    for (task, method) in [
        ("nope", "count_text"),
        (TASK, "translate"),
        (TASK, "_private"),
    ] {
        let err = manager
            .execute_task(TOOL, task, method, CallArgs::new())
            .await
            .unwrap_err();
        match &err {
            ManagerError::Plugin(ProxyError::UnknownTask { detail, .. }) => {
                assert!(detail.contains(method) || detail.contains(TASK), "{detail}");
            }
            other => panic!("{task} {method}: {other:?}"),
        }
    }
    let err = manager
        .execute_task(TOOL, TASK, "fail", CallArgs::new())
        .await
        .unwrap_err();
    assert_eq!(err.category(), Some(ErrorCategory::Fatal), "{err:?}");
    assert!(err.to_string().contains("the index is corrupt"), "{err}");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_a_046_adapter_sees_the_jobs_envelope_and_its_accounts_are_journalled() {
    let home = TestHome::new();
    let (manager, _) = tool_manager(&home).await;
    manager.load_plugin(TOOL, None).await.unwrap();
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
            TOOL,
            TaskCall::new(TASK, "count_text"),
            CallArgs::new().kwarg("text", "one two"),
            0,
        )
        .unwrap();
    let journal_id = jobs.journal_id(job).unwrap();
    let ended = jobs.wait(job).await.unwrap();
    assert_eq!(
        ended.result,
        Some(json!({"words": 2, "unit": "words", "job_id": journal_id}))
    );
    jobs.sync_journal().await;
    let accounts = job_accounts(&journal, &journal_id).unwrap();
    let kinds: Vec<&str> = accounts.iter().map(|a| a.event_type.as_str()).collect();
    // The plugin's own account, then the worker's task account.
    assert_eq!(kinds, ["result_saved", "task_account"], "{accounts:?}");
    assert_eq!(accounts[0].payload, json!({"words": 2}));
    assert_eq!(accounts[1].payload["ok"], true);

    let failed = jobs
        .submit_task(TOOL, TaskCall::new(TASK, "fail"), CallArgs::new(), 0)
        .unwrap();
    let failed_id = jobs.journal_id(failed).unwrap();
    let ended = jobs.wait(failed).await.unwrap();
    assert_eq!(ended.status.state, JobState::Failed);
    assert_eq!(ended.status.failure.unwrap().category, ErrorCategory::Fatal);
    jobs.sync_journal().await;
    let accounts = job_accounts(&journal, &failed_id).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].payload["ok"], false);

    // 409: the tool stops at its next step once cancelled.
    let job = jobs
        .submit_task(
            TOOL,
            TaskCall::new(TASK, "count_slowly"),
            CallArgs::new().kwarg("steps", 1000).kwarg("step_ms", 20),
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
fn task_the_046_manager_calls_our_workers_adapter() {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let manifests = home.path().join("manifests-046");
    let exported = Command::new(CTL)
        .args([
            "export-manifest",
            "cjm-wordcount",
            "--for-original",
            "--out",
        ])
        .arg(manifests.join("cjm-wordcount.json"))
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let big = home.path().join("big.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    for _ in 0..2_000_000 {
        file.write_all(b"the quick brown fox jumps\n").unwrap();
    }
    drop(file);
    let output = Command::new(python_env::python_046())
        .arg(python_env::fixture_dir_046().join("original046_tasks.py"))
        .arg(&manifests)
        .arg("cjm-wordcount")
        .arg(&big)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        report["counted"],
        json!({"lines": 0, "words": 3, "bytes": 13}),
        "{report}"
    );
    let unknown = report["unknown_task"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(unknown.contains("text-statistics"), "{report}");
    let unknown = report["unknown_method"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(unknown.contains("count_file"), "{report}");
    assert_eq!(report["failed"]["type"], "PluginFatalError", "{report}");
    assert_eq!(report["cancel_sent"], true, "{report}");
    assert!(report["big"]["cancelled"].is_string(), "{report}");
    // The envelope its host set reached our worker: the adapter's record carries the
    // job id, and the accounts our worker answered with are in its journal.
    let line = report["log_line"].as_str().unwrap_or_default();
    assert!(line.contains("job_id=\"py-job-7\""), "{report}");
    let accounts = report["journal_accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{report}");
    assert_eq!(accounts[0]["event_type"], "task_account", "{report}");
    assert_eq!(accounts[0]["payload"]["method"], "count_text", "{report}");
    assert_eq!(accounts[0]["worker_reported"], true, "{report}");
}
