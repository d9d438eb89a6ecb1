//! One plugin loaded more than once, as instances with their own configurations and
//! workers, addressed by instance name everywhere.

use cjm_manager::jobs::{JobOptions, Jobs};
use cjm_manager::{CallArgs, ManagerError};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_have_their_own_configuration_worker_log_and_lifetime() {
    let home = TestHome::new();
    home.installed_manifest("cjm-echo", ECHO, &[]);
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    let config = |prefix: &str| json!({ "prefix": prefix }).as_object().cloned();
    manager
        .load_plugin("cjm-echo", config("small: "))
        .await
        .unwrap();
    manager
        .load_instance("cjm-echo", "echo-large", config("large: "))
        .await
        .unwrap();

    let say = |name: &'static str| {
        let manager = manager.clone();
        async move {
            manager
                .execute_plugin(name, CallArgs::new().arg("hi"))
                .await
                .unwrap()["result"]
                .clone()
        }
    };
    assert_eq!(say("cjm-echo").await, "small: hi");
    assert_eq!(say("echo-large").await, "large: hi");
    let (small, large) = (
        manager.worker_info("cjm-echo").unwrap(),
        manager.worker_info("echo-large").unwrap(),
    );
    assert_ne!(small.pid, large.pid);
    assert!(large.log_path.ends_with("logs/echo-large.log"));
    assert!(manager
        .plugin_logs("echo-large", 5)
        .unwrap()
        .contains("starting echo-large"));
    assert_eq!(
        manager.plugin_meta("echo-large").unwrap().name,
        "echo-large"
    );
    assert_eq!(
        manager.plugin_config("echo-large").await.unwrap()["prefix"],
        "large: "
    );

    // Jobs address it by its name too.
    let jobs = Jobs::new(manager.clone(), JobOptions::default().without_journal())
        .await
        .unwrap();
    let job = jobs
        .submit("echo-large", CallArgs::new().arg("queued"), 0)
        .unwrap();
    assert_eq!(
        jobs.wait(job).await.unwrap().result.unwrap()["result"],
        "large: queued"
    );

    // Names: as plugin names, not another plugin's, not twice.
    for (instance, expected) in [
        ("bad name", "cannot load it as instance \"bad name\""),
        ("faulty", "that is the name of another plugin"),
    ] {
        let err = manager
            .load_instance("cjm-echo", instance, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ManagerError::BadInstance { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert!(matches!(
        manager.load_instance("cjm-echo", "echo-large", None).await,
        Err(ManagerError::AlreadyLoaded { .. })
    ));

    // Unloading one instance leaves the other.
    manager.unload_plugin("echo-large").await.unwrap();
    assert!(wait_gone(large.pid, std::time::Duration::from_secs(5)).is_some());
    assert_eq!(say("cjm-echo").await, "small: hi");
    manager.shutdown().await;
}
