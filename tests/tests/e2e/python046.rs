//! The newest original (0.0.46, from PyPI) both ways, for long-running work: its
//! Python plugins' progress, cancellation and typed errors through our host and job
//! queue, and its host driving one of our workers.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use cjm_manager::jobs::{Cancellation, JobChange, JobOptions, JobState, Jobs};
use cjm_manager::{CallArgs, ErrorCategory, PluginManager};
use serde_json::{json, Value};

use crate::common::*;
use crate::python_env::{self, ORIGINAL_046};

const STEPS: &str = "cjm-steps-py";

/// A manager with the 0.0.46 steps plugin (run by the original's own worker).
async fn steps_manager(home: &TestHome) -> PluginManager {
    home.write_manifest(
        STEPS,
        json!({
            "name": STEPS,
            "version": "0.1.0",
            "python_path": python_env::python_046(),
            "module": "cjm_jobs_py.plugin",
            "class": "StepsPlugin",
            "env_vars": {
                "PYTHONPATH": python_env::fixture_dir_046(),
                // The original's worker writes its diagnostics under $HOME/.cjm.
                "HOME": home.path(),
            },
        }),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin(STEPS, None).await.unwrap();
    manager
}

fn steps(count: u32, step_ms: u32) -> CallArgs {
    CallArgs::new()
        .kwarg("steps", count)
        .kwarg("step_ms", step_ms)
}

fn options(home: &TestHome) -> JobOptions {
    JobOptions::default()
        .journal(home.path().join("jobs.sqlite3"))
        .progress_poll(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_046_plugins_progress_reaches_our_jobs_and_it_stops_when_cancelled() {
    let home = TestHome::new();
    let manager = steps_manager(&home).await;
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();

    let job = jobs.submit(STEPS, steps(8, 60), 0).unwrap();
    let mut events = jobs.events_for(job);
    let mut reports = Vec::new();
    loop {
        match events.next().await.unwrap().unwrap().change {
            JobChange::Progress { fraction, message } => reports.push((fraction, message)),
            JobChange::State(state) if state.is_final() => break,
            _ => {}
        }
    }
    let ended = jobs.wait(job).await.unwrap();
    assert_eq!(ended.result, Some(json!({"steps": 8})));
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(
        reports.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "{reports:?}"
    );
    assert!(reports.last().unwrap().1.contains("of 8"), "{reports:?}");

    // Cancelled while running: its check_cancel() stops it at the next step, and
    // the worker (with the model it would hold) stays.
    let pid = manager.worker_info(STEPS).unwrap().pid;
    let job = jobs.submit(STEPS, steps(1000, 20), 0).unwrap();
    let mut events = jobs.events_for(job);
    while !matches!(
        events.next().await.unwrap().unwrap().change,
        JobChange::Progress { .. }
    ) {}
    let asked = Instant::now();
    jobs.cancel(job).unwrap();
    let ended = jobs.wait(job).await.unwrap();
    assert_eq!(
        ended.status.cancelled,
        Some(Cancellation::Cooperative),
        "{ended:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(manager.worker_info(STEPS).unwrap().pid, pid);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_046_plugins_typed_errors_arrive_with_their_category() {
    let home = TestHome::new();
    let manager = steps_manager(&home).await;
    let jobs = Jobs::new(manager.clone(), options(&home)).await.unwrap();
    for (fail, category, retriable) in [
        ("user_input", ErrorCategory::UserInput, true),
        ("transient", ErrorCategory::Transient, true),
        ("resource", ErrorCategory::Resource, true),
        ("fatal", ErrorCategory::Fatal, false),
    ] {
        let job = jobs
            .submit(STEPS, CallArgs::new().kwarg("fail", fail), 0)
            .unwrap();
        let ended = jobs.wait(job).await.unwrap();
        assert_eq!(ended.status.state, JobState::Failed);
        let failure = ended.status.failure.unwrap();
        assert_eq!(
            (failure.category, failure.retriable),
            (category, retriable),
            "{fail}"
        );
        // The message, not the traceback the original sends beside it.
        assert!(
            !failure.message.contains("Traceback"),
            "{}",
            failure.message
        );
    }
    // Directly too: the typed error of a plain execution.
    let err = manager
        .execute_plugin(STEPS, CallArgs::new().kwarg("fail", "transient"))
        .await
        .unwrap_err();
    assert_eq!(err.category(), Some(ErrorCategory::Transient), "{err}");
    assert!(err.to_string().contains("the service is busy"), "{err}");
    manager.shutdown().await;
}

#[test]
fn the_046_host_drives_our_worker_with_progress_cancel_and_typed_errors() {
    let home = TestHome::new();
    let small = home.path().join("small.txt");
    std::fs::write(&small, "a b c\n").unwrap();
    let big = home.path().join("big.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    for _ in 0..2_000_000 {
        file.write_all(b"the quick brown fox jumps\n").unwrap();
    }
    drop(file);
    let output = Command::new(python_env::python_046())
        .arg(python_env::fixture_dir_046().join("original046_host.py"))
        .arg(WORDCOUNT)
        .arg(&big)
        .arg(&small)
        // The original's host writes its journal and diagnostics under $HOME/.cjm.
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed: {stdout}\n{}",
        ORIGINAL_046.requirement,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["small"]["words"], 3);
    let seen = &report["progress_seen"];
    assert!(seen["progress"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        seen["message"].as_str().unwrap().contains("bytes"),
        "{report}"
    );
    assert_eq!(report["cancel_sent"], true);
    assert!(report["big"]["cancelled"].is_string(), "{report}");
    assert_eq!(report["typed_error"]["category"], "user_input", "{report}");
    // Its host stopped our worker on cleanup.
    let pid = report["worker_pid"].as_u64().unwrap() as u32;
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
}

/// A 0.0.46 worker gets its socket as the host's Unix socket with `--fd` (no port to
/// race for); the version is the one the manifest records, else the environment's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_046_worker_is_handed_its_socket_with_fd_not_a_port() {
    let home = TestHome::new();
    let manager = steps_manager(&home).await;
    let info = manager.worker_info(STEPS).unwrap();
    let argv: Vec<String> = std::fs::read(format!("/proc/{}/cmdline", info.pid))
        .unwrap()
        .split(|&byte| byte == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    assert!(
        argv.windows(2).any(|pair| pair == ["--fd", "3"]),
        "{argv:?}"
    );
    assert!(!argv.iter().any(|word| word == "--port"), "{argv:?}");
    assert!(
        matches!(info.endpoint, cjm_manager::Endpoint::Unix { .. }),
        "{:?}",
        info.endpoint
    );
    let answer = manager.execute_plugin(STEPS, steps(2, 1)).await.unwrap();
    assert_eq!(answer, json!({"steps": 2}));
    manager.shutdown().await;
}

/// A manifest as the 0.0.46 installer writes it (its own `write_manifest`, v2 layout
/// with `install` and `code` blocks), in `$CJM_HOME/manifests` where it puts them, is
/// discovered and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_written_by_the_046_installer_is_discovered_and_run() {
    let home = TestHome::new();
    let manifests = home.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let script = r#"
import sys
from cjm_plugin_system.core.manifest_format import (
    CodeSection, InstallSection, ManifestV2, write_manifest)
path, fixtures, home = sys.argv[1:4]
write_manifest(path, ManifestV2(
    install=InstallSection(python_path=sys.executable,
                           env_vars={"PYTHONPATH": fixtures, "HOME": home},
                           installer_version="cjm-ctl 0.0.46"),
    code=CodeSection(name="cjm-steps-py", version="0.1.0", description="steps",
                     module="cjm_jobs_py.plugin", class_name="StepsPlugin",
                     config_schema={"type": "object", "properties": {}})))
"#;
    let path = manifests.join("cjm-steps-py.json");
    let status = Command::new(python_env::python_046())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(python_env::fixture_dir_046())
        .arg(home.path())
        .status()
        .unwrap();
    assert!(status.success());
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written["format_version"], "2.0");
    assert_eq!(written["code"]["class"], "StepsPlugin");

    let mut options = home.options();
    options.search_paths.push(manifests);
    let manager = PluginManager::new(options);
    let found = manager.discover_manifests();
    assert!(found.iter().any(|meta| meta.name == STEPS), "{found:?}");
    manager.load_plugin(STEPS, None).await.unwrap();
    let answer = manager.execute_plugin(STEPS, steps(3, 1)).await.unwrap();
    assert_eq!(answer, json!({"steps": 3}));
    manager.shutdown().await;
}

/// A 0.0.46 plugin's typed result (a `@wire_type` DTO, sent as `{"__wire__": kind,
/// "data": ..}`) reaches the caller as its kind and data; `/stats` carries the
/// worker's `subtree_pids`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_046_typed_result_arrives_as_its_kind_and_data() {
    let home = TestHome::new();
    let manager = steps_manager(&home).await;
    let output = manager
        .execute_plugin_output(STEPS, steps(2, 1).kwarg("typed", true))
        .await
        .unwrap();
    assert_eq!(
        output,
        cjm_manager::CallOutput::Typed(cjm_manager::TypedResult {
            kind: String::from("cjm.test.steps"),
            data: json!({"steps": 2, "last": "step 2 of 2"}),
        })
    );
    let plain = manager
        .execute_plugin_output(STEPS, steps(1, 1))
        .await
        .unwrap();
    assert_eq!(plain, cjm_manager::CallOutput::Plain(json!({"steps": 1})));
    let stats = manager.plugin_stats(STEPS).await.unwrap();
    let pid = manager.worker_info(STEPS).unwrap().pid;
    assert!(stats.subtree_pids.unwrap_or_default().contains(&pid));
    manager.shutdown().await;
}

/// `cjm-ctl export-manifest --for-original` writes a manifest the 0.0.46
/// PluginManager loads our cjm-echo from; its host then executes, reconfigures
/// (/reconfigure), disables and enables (the hooks), reads stats and gets a typed
/// error, all from our worker.
#[test]
fn the_046_manager_runs_our_plugin_from_an_exported_manifest() {
    let home = TestHome::new();
    home.installed_manifest("cjm-echo", ECHO, &[]);
    let manifests = home.path().join("manifests-046");
    let exported = Command::new(CTL)
        .args(["export-manifest", "cjm-echo", "--for-original", "--out"])
        .arg(manifests.join("cjm-echo.json"))
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(manifests.join("cjm-echo.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format_version"], "2.0");
    assert_eq!(manifest["code"]["name"], "cjm-echo");

    let output = Command::new(python_env::python_046())
        .arg(python_env::fixture_dir_046().join("original046_manager.py"))
        .arg(&manifests)
        .arg("cjm-echo")
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
    assert_eq!(report["discovered"], json!(["cjm-echo"]), "{report}");
    assert_eq!(report["plain"]["result"], "hellohello", "{report}");
    assert_eq!(report["reconfigured"], true, "{report}");
    assert_eq!(report["after_reconfigure"]["result"], ">> x", "{report}");
    assert_eq!(report["disabled"], true, "{report}");
    assert_eq!(report["while_disabled"], "PluginDisabledError", "{report}");
    assert_eq!(report["enabled"], true, "{report}");
    assert_eq!(report["after_enable"]["result"], ">> back", "{report}");
    assert_eq!(report["typed_error"]["category"], "user_input", "{report}");
    assert!(report["stats_pid"].as_u64().is_some(), "{report}");
}

/// The original's worker writes its plugin's log records into our jobs' diagnostics
/// store, each stamped with the job id our host sent in the call's envelope: two
/// jobs at once on one 0.0.46 worker each read back only their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_046_workers_log_records_are_kept_per_job() {
    let home = TestHome::new();
    home.write_manifest(
        STEPS,
        json!({
            "name": STEPS,
            "version": "0.1.0",
            "python_path": python_env::python_046(),
            "module": "cjm_jobs_py.plugin",
            "class": "StepsPlugin",
            "env_vars": {"PYTHONPATH": python_env::fixture_dir_046(), "HOME": home.path()},
        }),
    );
    let manager = home.manager();
    manager.discover_manifests();
    // The jobs before the worker: it is told at its start where the records go.
    let jobs = Jobs::new(manager.clone(), options(&home).concurrency(STEPS, 2))
        .await
        .unwrap();
    manager.load_plugin(STEPS, None).await.unwrap();
    let first = jobs
        .submit(STEPS, steps(6, 30).kwarg("tag", "alpha"), 0)
        .unwrap();
    let second = jobs
        .submit(STEPS, steps(6, 30).kwarg("tag", "beta"), 0)
        .unwrap();
    jobs.wait(first).await.unwrap();
    jobs.wait(second).await.unwrap();
    for (job, own, other) in [(first, "alpha", "beta"), (second, "beta", "alpha")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let records = loop {
            let page = jobs.diagnostics(job, None, 100).await.unwrap();
            if page.records.len() >= 6 || Instant::now() > deadline {
                break page.records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let messages: Vec<&str> = records.iter().map(|r| r.message.as_str()).collect();
        let expected: Vec<String> = (1..=6).map(|step| format!("{own} step {step}")).collect();
        assert_eq!(messages, expected, "job {job}: {records:?}");
        assert!(
            records.iter().all(|r| r.target == "cjm_jobs_py"),
            "{records:?}"
        );
        assert!(!messages.iter().any(|m| m.contains(other)));
    }
}
