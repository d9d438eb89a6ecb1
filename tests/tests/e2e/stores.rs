//! What the host keeps across its lifetimes (issue 19 §4, §5), with real workers and
//! a temporary CJM_HOME: configurations and enabled flags kept across two managers, a
//! kept configuration refused by its plugin's changed schema, and a plugin whose
//! manifest understates its memory admitted by what its calls were seen to use.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cjm_manager::{
    CallArgs, ConfigMap, ManagerError, ManualStats, PluginManager, ResourceProfile, SafetyScheduler,
};
use cjm_scheduling::Resource;
use serde_json::{json, Value};

use crate::common::*;

fn config(value: Value) -> ConfigMap {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a test configuration is an object"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configurations_and_enabled_flags_are_kept_across_host_restarts() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &["--schema"]);
    home.native_manifest("echo", ECHO, &[]);

    let first = home.manager();
    first.discover_manifests();
    first
        .load_plugin("faulty", Some(config(json!({"level": 7}))))
        .await
        .unwrap();
    first
        .update_plugin_config("faulty", config(json!({"level": 8})))
        .await
        .unwrap();
    first.load_plugin("echo", None).await.unwrap();
    assert!(first.disable_plugin("echo").await);
    first.shutdown().await;
    drop(first);

    let store = home.path().join("host.sqlite3");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", store.display());

    let second = home.manager();
    let discovered = second.discover_manifests();
    let echo = discovered.iter().find(|meta| meta.name == "echo").unwrap();
    assert!(!echo.enabled, "echo was disabled by the host before");
    let refused = second.load_plugin("echo", None).await.unwrap_err();
    assert!(
        matches!(refused, ManagerError::Disabled { .. }),
        "{refused}"
    );
    // No configuration given: the one it last had.
    second.load_plugin("faulty", None).await.unwrap();
    assert_eq!(
        second.plugin_config("faulty").await.unwrap(),
        json!({"level": 8})
    );
    let kept = second.kept_config("faulty").await.unwrap().unwrap();
    assert_eq!(kept.config, Some(config(json!({"level": 8}))));
    assert!(kept.enabled);
    assert!(second.config_drift("faulty").is_none());
    assert!(second.enable_plugin("echo").await);
    second.load_plugin("echo", None).await.unwrap();
    second.shutdown().await;
    drop(second);

    let third = home.manager();
    third.discover_manifests();
    third.load_plugin("echo", None).await.unwrap();
    third.shutdown().await;
    drop(third);

    // Turned off, nothing kept is used.
    let mut options = home.options();
    options.keep_configs = false;
    let off = PluginManager::new(options);
    off.discover_manifests();
    off.load_plugin("faulty", None).await.unwrap();
    assert_ne!(
        off.plugin_config("faulty").await.unwrap().get("level"),
        Some(&json!(8))
    );
    off.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_configuration_that_breaks_the_changed_schema_is_refused_and_never_applied() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &["--schema"]);
    let first = home.manager();
    first.discover_manifests();
    first
        .load_plugin("faulty", Some(config(json!({"level": 7}))))
        .await
        .unwrap();
    first.shutdown().await;
    drop(first);

    // The plugin's next version: `level` is a word now.
    home.native_manifest("faulty", FAULTY, &["--schema-v2"]);
    let second = home.manager();
    second.discover_manifests();
    second.load_plugin("faulty", None).await.unwrap();
    let drift = second
        .config_drift("faulty")
        .expect("the refusal is reported");
    assert_eq!(drift.plugin, "faulty");
    assert_eq!(drift.kept, config(json!({"level": 7})));
    let live = second.plugin_config_schema("faulty").await.unwrap();
    assert_eq!(
        drift.live_fingerprint,
        cjm_validation::schema_fingerprint(&live)
    );
    assert_ne!(
        drift.kept_fingerprint.as_deref(),
        Some(drift.live_fingerprint.as_str())
    );
    let fields: Vec<&str> = drift
        .refused
        .violations()
        .iter()
        .map(|violation| violation.path.as_str())
        .collect();
    // Its type and its allowed words: each broken rule is said, all of `level`.
    assert!(
        !fields.is_empty() && fields.iter().all(|field| *field == "level"),
        "{drift}"
    );
    let text = drift.to_string();
    assert!(
        text.contains("plugin faulty") && text.contains("level"),
        "{text}"
    );
    // Its worker got the new schema's defaults, never the stale configuration.
    assert_eq!(
        second.plugin_config("faulty").await.unwrap(),
        json!({"level": "low"})
    );
    second.shutdown().await;
}

/// How much each call of the fixture holds, and the memory the scheduler is told is
/// available: one such call fits, two do not, while the manifest declares 1 MiB.
const HELD_MIB: u64 = 200;
const AVAILABLE_MB: f64 = 300.0;

fn understating_manager(home: &TestHome, admit_by_learned: bool) -> PluginManager {
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    options.stats_source = Some(Arc::new(ManualStats::with_free(None, Some(AVAILABLE_MB))));
    options.admit_by_learned_profiles = admit_by_learned;
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    manager
}

fn hold(mib: u64, while_file: &std::path::Path, started: Option<&std::path::Path>) -> CallArgs {
    let call = CallArgs::new()
        .arg("hold_memory")
        .arg(mib)
        .arg(while_file.to_string_lossy().into_owned());
    match started {
        Some(started) => call.kwarg("started_file", started.to_string_lossy().into_owned()),
        None => call,
    }
}

/// Wait until the plugin's learned profile satisfies `done`.
async fn until_profile(
    manager: &PluginManager,
    name: &str,
    done: impl Fn(&ResourceProfile) -> bool,
) -> ResourceProfile {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(profile) = manager.learned_profile(name).unwrap() {
            if done(&profile) {
                return profile;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s profile never got there"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two calls at once, the first holding its memory until `gate` is removed: the
/// second's result.
async fn two_at_once(
    manager: &PluginManager,
    home: &TestHome,
    round: &str,
) -> Result<Value, ManagerError> {
    let gate = home.path().join(format!("gate-{round}"));
    let started = home.path().join(format!("started-{round}"));
    std::fs::write(&gate, "").unwrap();
    let holder = {
        let manager = manager.clone();
        let call = hold(HELD_MIB, &gate, Some(&started));
        tokio::spawn(async move { manager.execute_plugin("hog", call).await })
    };
    until_file(&started).await;
    let second = manager
        .execute_plugin("hog", hold(HELD_MIB, &home.path().join("no-gate"), None))
        .await;
    std::fs::remove_file(&gate).unwrap();
    holder.await.unwrap().unwrap();
    second
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_manifest_understates_its_memory_is_admitted_by_its_learned_profile() {
    let home = TestHome::new();
    home.write_manifest(
        "hog",
        json!({
            "name": "hog",
            "version": "0.1.0",
            "category": "test",
            "command": FAULTY,
            "resources": {"min_system_ram_mb": 1},
        }),
    );

    // Learning: one call alone.
    let manager = understating_manager(&home, true);
    manager.load_plugin("hog", None).await.unwrap();
    assert!(manager.learned_profile("hog").unwrap().is_none());
    let result = manager
        .execute_plugin("hog", hold(HELD_MIB, &home.path().join("no-gate"), None))
        .await
        .unwrap();
    assert_eq!(result["held_mib"], HELD_MIB);
    let profile = until_profile(&manager, "hog", |profile| profile.peak_rss_mb.count >= 1).await;
    assert!(
        profile.peak_rss_mb.max >= HELD_MIB as f64,
        "the peak of the call was seen: {profile:?}"
    );
    assert_eq!((profile.calls, profile.failures), (1, 0));

    // Two at once: the first is admitted by its learned need, which leaves too little
    // for the second, whatever the manifest says.
    let refused = two_at_once(&manager, &home, "learned").await.unwrap_err();
    let ManagerError::Refused(refusal) = &refused else {
        panic!("refused by the scheduler, not {refused}");
    };
    let shortfall = refusal
        .shortfalls
        .iter()
        .find(|shortfall| shortfall.resource == Resource::SystemMemory)
        .expect("short of system memory");
    assert!(shortfall.needed_mb >= HELD_MIB, "{refusal}");
    assert!(shortfall.reserved_mb >= HELD_MIB, "{refusal}");

    // It is in the API and in `cjm-ctl stats --profiles`, kept in the file.
    let profiles = manager.resource_profiles().await.unwrap();
    assert!(
        profiles.iter().any(|profile| profile.plugin == "hog"),
        "{profiles:?}"
    );
    let out = std::process::Command::new(CTL)
        .args(["stats", "--profiles", "--json"])
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hog = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["plugin"] == "hog")
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        hog["peak_rss_mb"]["max"].as_f64().unwrap() >= HELD_MIB as f64,
        "{hog}"
    );

    // A call dropped half-way is recorded too, as one that gave no result.
    let gate = home.path().join("gate-dropped");
    let started = home.path().join("started-dropped");
    std::fs::write(&gate, "").unwrap();
    let calls_before = manager.learned_profile("hog").unwrap().unwrap().calls;
    {
        let call = manager.execute_plugin("hog", hold(1, &gate, Some(&started)));
        tokio::pin!(call);
        tokio::select! {
            result = &mut call => panic!("the call ended first: {result:?}"),
            () = until_file(&started) => {}
        }
    }
    let profile = until_profile(&manager, "hog", |profile| profile.calls > calls_before).await;
    assert_eq!(profile.failures, 1, "{profile:?}");
    std::fs::remove_file(&gate).unwrap();
    manager.shutdown().await;
    drop(manager);

    // Without admission by learned profiles, the manifest's word alone: both fit.
    let declared_only = understating_manager(&home, false);
    declared_only.load_plugin("hog", None).await.unwrap();
    two_at_once(&declared_only, &home, "declared")
        .await
        .unwrap();
    declared_only.shutdown().await;
}
