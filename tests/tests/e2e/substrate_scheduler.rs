//! What the successor cjm-substrate's scheduler learned, in ours, with real
//! workers: a job that can never be admitted fails at once (category `resource`,
//! naming the shortfall) under every policy, `cjm-ctl exec` exits 69 for it, and an
//! ambient plugin's successful jobs stay out of the journal.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cjm_manager::jobs::{journal_entry, JobOptions, JobState, Jobs};
use cjm_manager::{
    CallArgs, ErrorCategory, ManagerError, ManualStats, PermissiveScheduler, PluginManager,
    QueueScheduler, ResourceScheduler, SystemStats,
};
use serde_json::json;

use crate::common::*;

/// The machine's largest GPU has 24000 MB, 1000 of it free now.
fn machine() -> ManualStats {
    let mut stats = SystemStats::with_free(Some(1_000.0), Some(64_000.0));
    stats.gpu_total_memory_mb = Some(24_000.0);
    stats.memory_total_mb = Some(128_000.0);
    ManualStats::new(stats)
}

fn gpu_plugin(home: &TestHome, name: &str, vram_mb: u64) {
    home.write_manifest(
        name,
        json!({
            "name": name,
            "version": "0.1.0",
            "command": ECHO,
            "resources": {"requires_gpu": true, "min_gpu_vram_mb": vram_mb},
        }),
    );
}

async fn manager_under(home: &TestHome, scheduler: Arc<dyn ResourceScheduler>) -> PluginManager {
    let mut options = home.options();
    options.scheduler = scheduler;
    options.stats_source = Some(Arc::new(machine()));
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    for name in ["huge", "roomy"] {
        manager.load_plugin(name, None).await.unwrap();
    }
    manager
}

const SHORTFALL: &str =
    "never admissible: GPU memory needed 30000 MB, available 24000 MB (the machine's total)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_admissible_job_fails_at_once_under_the_permissive_and_the_queue_policies() {
    let home = TestHome::new();
    gpu_plugin(&home, "huge", 30_000);
    gpu_plugin(&home, "roomy", 20_000);
    let policies: [(&str, Arc<dyn ResourceScheduler>); 2] = [
        ("permissive", Arc::new(PermissiveScheduler)),
        // Five minutes of waiting for memory in use now.
        (
            "queue",
            Arc::new(QueueScheduler::new(Duration::from_secs(300))),
        ),
    ];
    for (policy, scheduler) in policies {
        let manager = manager_under(&home, scheduler).await;
        let started = Instant::now();
        let err = manager
            .execute_plugin("huge", CallArgs::new().arg("x"))
            .await
            .unwrap_err();
        assert!(matches!(&err, ManagerError::Refused(refusal) if refusal.is_never_admissible()));
        assert_eq!(err.category(), Some(ErrorCategory::Resource), "{policy}");
        assert!(err.to_string().contains(SHORTFALL), "{policy}: {err}");
        assert!(!err.retriable(), "{policy}: waiting would not help");

        // As a job: it fails, it does not wait in the queue.
        let jobs = Jobs::new(manager.clone(), JobOptions::default().without_journal())
            .await
            .unwrap();
        let id = jobs.submit("huge", CallArgs::new().arg("x"), 0).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(60), jobs.wait(id))
            .await
            .expect("a never-admissible job waited")
            .unwrap();
        assert_eq!(outcome.status.state, JobState::Failed, "{policy}");
        let failure = outcome.status.failure.unwrap();
        assert_eq!(failure.category, ErrorCategory::Resource, "{policy}");
        assert!(failure.message.contains(SHORTFALL), "{policy}: {failure:?}");
        // Far less than the queue policy's five minutes.
        assert!(started.elapsed() < Duration::from_secs(60), "{policy}");
        jobs.shutdown().await;

        if policy == "permissive" {
            // Memory in use now is no reason to refuse for the permissive policy:
            // what fits the machine runs.
            manager
                .execute_plugin("roomy", CallArgs::new().arg("x"))
                .await
                .unwrap();
        }
        manager.shutdown().await;
    }
}

#[test]
fn cjm_ctl_exec_on_a_never_admissible_plugin_exits_69_naming_the_shortfall() {
    let home = TestHome::new();
    // A pebibyte: more memory than this machine has in all, as its monitor sees it.
    home.write_manifest(
        "petabyte",
        json!({
            "name": "petabyte",
            "version": "0.1.0",
            "command": ECHO,
            "resources": {"min_system_ram_mb": 1_073_741_824u64},
        }),
    );
    let mut child = Command::new(CTL)
        .args(["exec", "petabyte", "--args", "[1]"])
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cjm-ctl exec did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("never admissible: system memory needed 1073741824 MB, available"),
        "{stderr}"
    );
    assert!(stderr.contains("(the machine's total)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambient_plugins_successful_jobs_are_not_in_the_journal() {
    let home = TestHome::new();
    for (name, class) in [("quiet", "ambient"), ("loud", "full")] {
        home.write_manifest(
            name,
            json!({
                "name": name,
                "version": "0.1.0",
                "command": FAULTY,
                "observability": class,
            }),
        );
    }
    let manager = home.manager();
    manager.discover_manifests();
    for name in ["quiet", "loud"] {
        manager.load_plugin(name, None).await.unwrap();
    }
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(manager.clone(), JobOptions::default().journal(&journal))
        .await
        .unwrap();
    let submit =
        |plugin: &str, action: &str| jobs.submit(plugin, CallArgs::new().arg(action), 0).unwrap();
    let succeeded: Vec<_> = (0..5).map(|_| submit("quiet", "pid")).collect();
    let failed = submit("quiet", "nonsense");
    let full = submit("loud", "pid");
    for &id in succeeded.iter().chain([&failed, &full]) {
        jobs.wait(id).await.unwrap();
    }
    jobs.sync_journal().await;

    let in_journal = |id| journal_entry(&journal, &jobs.journal_id(id).unwrap()).unwrap();
    for &id in &succeeded {
        assert_eq!(jobs.status(id).unwrap().state, JobState::Succeeded);
        assert!(in_journal(id).is_none(), "an ambient success was journaled");
    }
    let entry = in_journal(failed).expect("the ambient failure is journaled");
    assert_eq!(entry.state, JobState::Failed);
    assert_eq!(entry.plugin, "quiet");
    assert!(entry.started_at.is_some(), "{entry:?}");
    assert_eq!(in_journal(full).unwrap().state, JobState::Succeeded);
    jobs.shutdown().await;
    manager.shutdown().await;
}

#[test]
fn a_bad_observability_class_is_a_manifest_error_naming_it() {
    let home = TestHome::new();
    home.write_manifest(
        "odd",
        json!({"name": "odd", "command": ECHO, "observability": "quiet"}),
    );
    let manager = home.manager();
    manager.discover_manifests();
    let text = format!("{:?}", manager.discovery_problems());
    assert!(
        text.contains("observability class must be") && text.contains("quiet"),
        "{text}"
    );
    assert!(manager.plugin_meta("odd").is_none());
}

/// A plugin declares it may take at most 100 MB; its calls were seen to take 200:
/// under the default, permissive policy its next call fails at once, naming its
/// limit, rather than running past what its author allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_need_past_the_declared_limit_is_never_admissible() {
    let home = TestHome::new();
    home.write_manifest(
        "hog",
        json!({
            "name": "hog",
            "version": "0.1.0",
            "command": FAULTY,
            "resources": {"min_system_ram_mb": 1, "max_system_ram_mb": 100},
        }),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("hog", None).await.unwrap();
    let hold = || {
        CallArgs::new()
            .arg("hold_memory")
            .arg(200)
            .arg(home.path().join("no-gate").to_string_lossy().into_owned())
    };
    manager.execute_plugin("hog", hold()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !manager
        .learned_profile("hog")
        .unwrap()
        .is_some_and(|profile| profile.peak_rss_mb.max >= 200.0)
    {
        assert!(
            Instant::now() < deadline,
            "the call's peak was never learned"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = manager.execute_plugin("hog", hold()).await.unwrap_err();
    assert_eq!(err.category(), Some(ErrorCategory::Resource));
    let text = err.to_string();
    assert!(
        text.contains("never admissible: system memory needed")
            && text.contains("available 100 MB (the plugin's declared limit)"),
        "{text}"
    );
    manager.shutdown().await;
}
