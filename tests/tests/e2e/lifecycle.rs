//! The original 0.0.46's lifecycle hooks, called by our manager: reconfigure (with
//! the old configuration), enable and disable, prefetch and its stall rule, live
//! configuration options.

use std::time::{Duration, Instant};

use cjm_manager::{CallArgs, ManagerError, PluginManager};
use serde_json::{json, Value};

use crate::common::*;

async fn faulty_with_log(home: &TestHome, extra: Value) -> (PluginManager, std::path::PathBuf) {
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    let log = home.path().join("hooks.log");
    let mut config = json!({"hook_log": log});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    manager
        .load_plugin("faulty", config.as_object().cloned())
        .await
        .unwrap();
    (manager, log)
}

fn hooks(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_reconfigure_and_enable_disable_reach_the_plugins_hooks() {
    let home = TestHome::new();
    let (manager, log) = faulty_with_log(&home, json!({})).await;
    let pid = manager.worker_info("faulty").unwrap().pid;

    let update = json!({"level": 2}).as_object().cloned().unwrap();
    manager
        .update_plugin_config("faulty", update)
        .await
        .unwrap();
    let reconfigured = hooks(&log);
    assert_eq!(reconfigured.len(), 1, "{reconfigured:?}");
    // The plugin saw what it had and what it gets: it may keep what did not change.
    assert!(
        reconfigured[0].starts_with("reconfigure {\"hook_log\""),
        "{reconfigured:?}"
    );
    assert!(reconfigured[0].contains("\"level\":2"), "{reconfigured:?}");
    assert_eq!(manager.plugin_config("faulty").await.unwrap()["level"], 2);
    assert_eq!(manager.worker_info("faulty").unwrap().pid, pid, "restarted");

    assert!(manager.disable_plugin("faulty").await);
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Disabled { .. }), "{err}");
    assert!(manager.enable_plugin("faulty").await);
    manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap();
    assert_eq!(hooks(&log)[1..], ["on_disable", "on_enable"]);
    assert_eq!(
        manager.plugin_config_options("faulty").await.unwrap()["model"]["options"][0]["value"],
        "tiny"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_that_reports_progress_completes() {
    let home = TestHome::new();
    let (manager, log) = faulty_with_log(&home, json!({"prefetch_steps": 5})).await;
    let ran = manager
        .prefetch_plugin("faulty", Duration::from_millis(500))
        .await
        .unwrap();
    assert!(ran);
    assert_eq!(hooks(&log), ["prefetch"]);
    // A plugin without a hook of its own: the default does nothing, and succeeds.
    home.installed_manifest("cjm-echo", ECHO, &[]);
    manager.discover_manifests();
    manager.load_plugin("cjm-echo", None).await.unwrap();
    assert!(manager
        .prefetch_plugin("cjm-echo", Duration::from_millis(500))
        .await
        .unwrap());
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_whose_progress_stalls_fails_and_its_worker_is_replaced() {
    let home = TestHome::new();
    let (manager, _log) = faulty_with_log(&home, json!({"prefetch_stall": true})).await;
    let pid = manager.worker_info("faulty").unwrap().pid;
    let started = Instant::now();
    let err = manager
        .prefetch_plugin("faulty", Duration::from_millis(400))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ManagerError::PrefetchStalled { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
    assert!(manager.is_running("faulty"));
    assert_ne!(manager.worker_info("faulty").unwrap().pid, pid);
    manager.shutdown().await;
}
