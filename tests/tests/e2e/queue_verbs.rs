//! The queue's verbs with a real manager: a job's resource snapshot is what the
//! scheduler admitted it with, and what it read of the machine to do so.

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
    assert_eq!((snapshot.reserved_ram_mb, snapshot.reserved_vram_mb), (64, 0));
    let seen = snapshot.system_at_admission.unwrap();
    assert_eq!(seen.memory_available_mb, Some(4000.0));
    jobs.shutdown().await;
    manager.shutdown().await;
}
