//! Dead and hung workers: detection, restart policy, call timeouts; streams whose
//! consumer left; files and folders that fail.

use std::io;
use std::time::{Duration, Instant};

use cjm_manager::{
    CallArgs, FaultPolicy, FileBacked, ManagerError, OnTimeout, PluginManager, PluginState,
    ProxyError, RestartPolicy,
};
use serde_json::json;

use crate::common::*;

fn manager_with(home: &TestHome, policy: FaultPolicy) -> PluginManager {
    let mut options = home.options();
    options
        .plugin_fault_policies
        .insert(String::from("faulty"), policy);
    PluginManager::new(options)
}

async fn load_faulty(manager: &PluginManager) {
    manager.discover_manifests();
    let config = json!({"level": 1}).as_object().cloned();
    manager.load_plugin("faulty", config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_is_a_typed_error_within_100ms_and_marks_the_plugin_dead() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let pid = manager.worker_info("faulty").unwrap().pid;
    assert!(manager.is_running("faulty"));

    let started = home.path().join("started");
    let call = {
        let manager = manager.clone();
        let args = CallArgs::new()
            .arg("sleep")
            .arg(30_000)
            .kwarg("started_file", started.to_str().unwrap());
        tokio::spawn(async move {
            let result = manager.execute_plugin("faulty", args).await;
            (result, Instant::now())
        })
    };
    // Mid-call: once the call is in the plugin.
    until_file(&started).await;
    let killed_at = Instant::now();
    sigkill(pid);
    let (result, failed_at) = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call must not hang")
        .unwrap();
    let after = failed_at.duration_since(killed_at);
    assert!(after < Duration::from_millis(100), "error after {after:?}");
    match result {
        Err(ManagerError::Plugin(ProxyError::WorkerDied { status, .. })) => {
            assert!(status.is_some(), "exit status known");
        }
        other => panic!("unexpected {other:?}"),
    }

    let status = manager.plugin_status("faulty").unwrap();
    assert_eq!(status.state, PluginState::Dead);
    assert_eq!(
        status.last_failure.as_deref(),
        Some("was killed by signal 9")
    );
    assert!(!manager.is_running("faulty"));
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::NotRunning { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin faulty: worker is not running (it was killed by signal 9); \
         reload it, or set a restart policy"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_policy_brings_a_dead_plugin_back_with_its_config_until_its_limit() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = manager_with(
        &home,
        FaultPolicy::default().with_restart(RestartPolicy::up_to(2, Duration::from_millis(50))),
    );
    load_faulty(&manager).await;
    let mut pids = vec![manager.worker_info("faulty").unwrap().pid];
    for restart in 1..=2u32 {
        let err = manager
            .execute_plugin("faulty", CallArgs::new().arg("exit").arg(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exited with status 5"), "{err}");
        let started = Instant::now();
        let answer = manager
            .execute_plugin("faulty", CallArgs::new().arg("pid"))
            .await
            .unwrap();
        let waited = started.elapsed();
        let backoff = Duration::from_millis(50 * (1 << (restart - 1)));
        assert!(waited >= backoff, "restart {restart} after {waited:?}");
        let pid = answer["pid"].as_u64().unwrap() as u32;
        assert!(!pids.contains(&pid));
        pids.push(pid);
        let status = manager.plugin_status("faulty").unwrap();
        assert_eq!(
            (status.state, status.restarts),
            (PluginState::Running, restart)
        );
        let stats = manager.plugin_stats("faulty").await.unwrap();
        assert_eq!(stats.extra["restarts"], restart);
        assert_eq!(
            manager.plugin_config("faulty").await.unwrap(),
            json!({"level": 1})
        );
    }
    manager
        .execute_plugin("faulty", CallArgs::new().arg("exit").arg(5))
        .await
        .unwrap_err();
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin faulty: worker is not running (it exited with status 5); \
         gave up after 2 of 2 restarts; reload it"
    );
    // A reload starts afresh, with its count at zero.
    manager.reload_plugin("faulty", None).await.unwrap();
    assert_eq!(manager.plugin_status("faulty").unwrap().restarts, 0);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_times_out_and_its_worker_is_killed_then_restarted() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = manager_with(
        &home,
        FaultPolicy::default()
            .with_call_timeout(Duration::from_millis(300))
            .with_restart(RestartPolicy::up_to(1, Duration::ZERO)),
    );
    load_faulty(&manager).await;
    let pid = manager.worker_info("faulty").unwrap().pid;
    let started = Instant::now();
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("sleep").arg(60_000))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        matches!(
            err,
            ManagerError::Timeout {
                worker_killed: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin faulty: execution did not finish within 300ms; its worker was killed"
    );
    assert!(wait_gone(pid, Duration::from_secs(2)).is_some());
    assert_eq!(
        manager.plugin_status("faulty").unwrap().state,
        PluginState::Dead
    );
    // Quick calls still fit in the limit; the restart policy brought it back.
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("sleep").arg(10))
        .await
        .unwrap();
    assert_eq!(answer, json!({"slept_ms": 10}));
    assert_eq!(manager.plugin_status("faulty").unwrap().restarts, 1);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_call_timeout_overrides_the_policy_and_may_leave_the_worker_running() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = manager_with(
        &home,
        FaultPolicy::default().with_on_timeout(OnTimeout::LeaveRunning),
    );
    load_faulty(&manager).await;
    let pid = manager.worker_info("faulty").unwrap().pid;
    let err = manager
        .execute_plugin_with_timeout(
            "faulty",
            CallArgs::new().arg("sleep").arg(5_000),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::Timeout {
                worker_killed: false,
                ..
            }
        ),
        "{err:?}"
    );
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap();
    assert_eq!(answer["pid"], pid);
    assert_eq!(manager.active_executions("faulty"), Some(0));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_past_the_timeout_ends_with_a_timeout_error() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = manager_with(
        &home,
        FaultPolicy::default().with_call_timeout(Duration::from_millis(300)),
    );
    load_faulty(&manager).await;
    let progress_file = home.path().join("progress");
    let mut stream = progress_stream(&manager, &progress_file, 60_000)
        .await
        .unwrap();
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err:?}");
    assert!(stream.next().await.is_none());
    assert_eq!(
        manager.plugin_status("faulty").unwrap().state,
        PluginState::Dead
    );
    manager.shutdown().await;
}

/// The faulty plugin's endless stream, one chunk every `interval_ms`, counting the
/// chunks it made in `progress_file`.
async fn progress_stream(
    manager: &PluginManager,
    progress_file: &std::path::Path,
    interval_ms: u64,
) -> Result<cjm_manager::PluginStream, ManagerError> {
    manager
        .execute_plugin_stream(
            "faulty",
            CallArgs::new()
                .kwarg(
                    "progress_file",
                    progress_file.to_string_lossy().into_owned(),
                )
                .kwarg("interval_ms", interval_ms),
        )
        .await
}

fn progress(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_producers_chunk_arrives_before_its_next_one_is_made() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let progress_file = home.path().join("progress");
    let mut stream = progress_stream(&manager, &progress_file, 800)
        .await
        .unwrap();
    // Batching small chunks must never hold one back until the producer's next (made
    // 800 ms later: a margin no loaded test machine eats).
    for made in 1..=2 {
        let chunk = stream.next().await.unwrap().unwrap();
        assert_eq!(chunk["chunk"], made - 1);
        assert_eq!(progress(&progress_file), made, "chunk {made} was held back");
    }
    drop(stream);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_stops_producing_when_the_stream_consumer_goes_away() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let progress_file = home.path().join("progress");
    let mut stream = progress_stream(&manager, &progress_file, 1).await.unwrap();
    for i in 0..20 {
        assert_eq!(stream.next().await.unwrap().unwrap()["chunk"], i);
    }
    let call_id = stream.call_id().to_owned();
    drop(stream);
    // The worker counts the call as running until the plugin's endless iterator is
    // dropped: a producer that went on for a consumer that left never ends.
    until_call_ended(&manager, "faulty", &call_id).await;
    let stopped_at = progress(&progress_file);
    assert!(stopped_at >= 20);
    assert_eq!(
        progress(&progress_file),
        stopped_at,
        "the plugin produced after its call ended"
    );
    assert_eq!(manager.active_executions("faulty"), Some(0));
    assert!(manager.is_running("faulty"));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_log_folder_is_a_clear_error_and_starts_nothing() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    // As root, permissions do not stop us: a file where the folder should be does.
    let logs = home.path().join("logs");
    std::fs::write(&logs, "not a folder").unwrap();
    let manager = home.manager();
    manager.discover_manifests();
    let err = manager.load_plugin("faulty", None).await.unwrap_err();
    let text = error_chain(&err);
    assert!(
        text.starts_with("plugin faulty: cannot open its log file ")
            && text.contains(&format!("cannot create its folder {}", logs.display())),
        "{text}"
    );
    assert!(matches!(err, ManagerError::Plugin(ProxyError::Log { .. })));
    assert!(manager.list_plugins().is_empty());
}

/// A file-backed argument whose write fails part-way, as on a full disk.
struct DiskFull;

impl FileBacked for DiskFull {
    fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        out.write_all(&[b'x'; 4096])?;
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_for_a_temp_file_is_a_clear_error_that_leaves_no_file() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let err = manager
        .execute_plugin(
            "faulty",
            CallArgs::new()
                .arg("pid")
                .file_kwarg("first", b"fine".to_vec())
                .file_kwarg("second", DiskFull),
        )
        .await
        .unwrap_err();
    let text = error_chain(&err);
    assert!(
        text.contains("cannot write a file-backed argument") && text.contains("No space left"),
        "{text}"
    );
    assert!(entries(&home.temp_dir()).is_empty());
    // The plugin never saw the call and is fine.
    manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap();
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_go_when_the_caller_abandons_the_call() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let call = {
        let manager = manager.clone();
        tokio::spawn(async move {
            manager
                .execute_plugin(
                    "faulty",
                    CallArgs::new()
                        .arg("sleep")
                        .arg(30_000)
                        .file_kwarg("blob", String::from("payload")),
                )
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries(&home.temp_dir()).is_empty() {
        assert!(Instant::now() < deadline, "the temp file never appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert!(entries(&home.temp_dir()).is_empty());
    assert_eq!(manager.active_executions("faulty"), Some(0));
    manager.shutdown().await;
}

/// `serde_json::Value` cannot hold NaN: it becomes null when the value is built, so
/// a native plugin's result is always serialisable and no NaN reaches the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_in_a_native_result_arrives_as_null() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("nan"))
        .await
        .unwrap();
    assert_eq!(answer, json!({"value": null}));
    manager.shutdown().await;
}

/// A faulty plugin whose worker cannot start while the returned marker file exists.
fn startable_until_marked(home: &TestHome) -> std::path::PathBuf {
    let marker = home.path().join("no-start");
    let marker_arg = marker.to_str().unwrap().to_owned();
    home.native_manifest("faulty", FAULTY, &["--crash-at-start-if", &marker_arg]);
    marker
}

fn assert_dead_because_start_failed(manager: &PluginManager) {
    assert!(manager.is_loaded("faulty"), "the plugin vanished");
    assert!(manager
        .list_plugins()
        .iter()
        .any(|meta| meta.name == "faulty"));
    let status = manager.plugin_status("faulty").unwrap();
    assert_eq!(status.state, PluginState::Dead, "{status:?}");
    assert_eq!(status.pid, None, "{status:?}");
    let reason = status.last_failure.unwrap();
    assert!(reason.contains("could not be started"), "{reason}");
    assert!(reason.contains("crashing at start"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_start_leaves_the_plugin_dead_with_the_reason() {
    let home = TestHome::new();
    let marker = startable_until_marked(&home);
    let manager = home.manager();
    load_faulty(&manager).await;
    let old = manager.worker_info("faulty").unwrap().pid;

    std::fs::write(&marker, "").unwrap();
    let err = manager.reload_plugin("faulty", None).await.unwrap_err();
    assert!(
        matches!(err, ManagerError::Plugin(ProxyError::StartFailed { .. })),
        "{err}"
    );
    assert!(wait_gone(old, Duration::from_secs(5)).is_some());
    assert_dead_because_start_failed(&manager);
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::NotRunning { .. }), "{err}");

    // Once it can start again, a reload brings it back with its configuration.
    std::fs::remove_file(&marker).unwrap();
    manager.reload_plugin("faulty", None).await.unwrap();
    assert!(manager.is_running("faulty"));
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 1})
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_that_cannot_start_leaves_the_plugin_dead_and_counts_towards_the_limit() {
    let home = TestHome::new();
    let marker = startable_until_marked(&home);
    let manager = manager_with(
        &home,
        FaultPolicy::default().with_restart(RestartPolicy::up_to(2, Duration::from_millis(10))),
    );
    load_faulty(&manager).await;
    std::fs::write(&marker, "").unwrap();
    sigkill(manager.worker_info("faulty").unwrap().pid);
    while manager.is_running("faulty") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::Plugin(ProxyError::StartFailed { .. })),
        "{err}"
    );
    assert_dead_because_start_failed(&manager);
    assert_eq!(manager.plugin_status("faulty").unwrap().restarts, 1);

    // The second restart of two works once the plugin can start.
    std::fs::remove_file(&marker).unwrap();
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap();
    assert_eq!(answer["pid"], manager.worker_info("faulty").unwrap().pid);
    let status = manager.plugin_status("faulty").unwrap();
    assert_eq!((status.state, status.restarts), (PluginState::Running, 2));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_on_its_own_leaves_nothing_behind_and_unloads_later() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let pid = manager.worker_info("faulty").unwrap().pid;
    let child = manager
        .execute_plugin("faulty", CallArgs::new().arg("spawn_child"))
        .await
        .unwrap()["child_pid"]
        .as_u64()
        .unwrap() as u32;
    assert!(alive(child));

    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("exit").arg(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::Plugin(ProxyError::WorkerDied { .. })),
        "{err}"
    );
    // The worker was reaped (no zombie) and what it left in its group was killed
    // with it, before anything else could take its process group id.
    assert!(
        wait_gone(pid, Duration::from_secs(5)).is_some(),
        "worker left"
    );
    assert!(wait_group_gone(pid, Duration::from_secs(5)).is_empty());
    assert!(
        wait_gone(child, Duration::from_secs(5)).is_some(),
        "child left"
    );
    let status = manager.plugin_status("faulty").unwrap();
    assert_eq!(status.state, PluginState::Dead);
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|why| why.contains("exit")),
        "{status:?}"
    );

    // Unloaded later: nothing left to signal, and it goes at once.
    let started = Instant::now();
    manager.unload_plugin("faulty").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!manager.is_loaded("faulty"));
}

/// A native library that gives up prints why and aborts: those last words, printed a
/// moment before the signal, are in the call's error (the worker's output goes
/// through a pipe it reads, and the abort handler writes out what was unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_words_a_worker_prints_just_before_it_aborts_are_in_the_error() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    load_faulty(&manager).await;
    let words = "device-side assert triggered at kernel 7f3a";
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("abort").arg(words))
        .await
        .unwrap_err();
    let text = error_chain(&err);
    assert!(text.contains(words), "{text}");
    assert!(!manager.is_running("faulty"));
}
