//! Workers that panic, die, hang or never start, and hosts that die.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cjm_manager::{CallArgs, ManagerError, ProxyError};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_answers_500_and_keeps_serving() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("panic"))
        .await
        .unwrap_err();
    match &err {
        ManagerError::Plugin(ProxyError::Http {
            status,
            detail,
            kind,
            ..
        }) => {
            assert_eq!(*status, 500);
            assert!(
                detail.contains("deliberate panic in faulty plugin"),
                "{detail}"
            );
            assert_eq!(kind.as_deref(), Some("panic"));
        }
        other => panic!("unexpected error {other:?}"),
    }
    let pid = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap();
    assert_eq!(pid["pid"], manager.worker_info("faulty").unwrap().pid);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_call_is_an_error_at_once_and_reload_brings_it_back() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let pid = manager.worker_info("faulty").unwrap().pid;

    let started = home.path().join("started");
    let call = {
        let manager = manager.clone();
        let args = CallArgs::new()
            .arg("sleep")
            .arg(30_000)
            .kwarg("started_file", started.to_str().unwrap());
        tokio::spawn(async move { manager.execute_plugin("faulty", args).await })
    };
    // Killed mid-call: once the call is in the plugin.
    until_file(&started).await;
    let killed_at = Instant::now();
    sigkill(pid);
    let err = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call must not hang")
        .unwrap()
        .unwrap_err();
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed_at.elapsed()
    );
    assert!(
        err.to_string()
            .contains("was killed by signal 9 during /execute"),
        "{err}"
    );

    let err = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("worker is not running"), "{err}");

    manager.reload_plugin("faulty", None).await.unwrap();
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("pid"))
        .await
        .unwrap();
    assert_ne!(answer["pid"], pid);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_execute_does_not_block_health_or_stats() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let marker = home.path().join("started");
    let long = {
        let manager = manager.clone();
        let args = CallArgs::new()
            .arg("sleep")
            .arg(1500)
            .kwarg("started_file", marker.to_str().unwrap());
        tokio::spawn(async move { manager.execute_plugin("faulty", args).await })
    };
    // Only a call that is running in the plugin can block anything.
    until_file(&marker).await;
    let started = Instant::now();
    manager.plugin_stats("faulty").await.unwrap();
    assert!(manager.is_running("faulty"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Answered while the call still ran: it had not ended before stats were asked.
    assert!(!long.is_finished(), "the call ended before stats answered");
    assert_eq!(manager.active_executions("faulty"), Some(1));
    assert_eq!(long.await.unwrap().unwrap(), json!({"slept_ms": 1500}));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_cleans_up_and_stops_what_the_plugin_started() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    let marker = home.path().join("cleaned.txt");
    let config = json!({"cleanup_marker": marker}).as_object().cloned();
    manager.load_plugin("faulty", config).await.unwrap();
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("spawn_child"))
        .await
        .unwrap();
    let child = answer["child_pid"].as_u64().unwrap() as u32;
    assert!(alive(child));
    let stats = manager.plugin_stats("faulty").await.unwrap();
    assert_eq!(stats.extra["process_count"], 2, "{stats:?}");
    manager.unload_plugin("faulty").await.unwrap();
    assert!(
        wait_gone(child, Duration::from_secs(5)).is_some(),
        "grandchild {child} survived"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "cleaned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_error_after_the_start_ends_the_stream_with_the_reason() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let mut stream = manager
        .execute_plugin_stream("faulty", CallArgs::new().arg(2))
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), json!({"chunk": 0}));
    assert_eq!(stream.next().await.unwrap().unwrap(), json!({"chunk": 1}));
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin faulty: stream failed: stream broke after 2 chunks"
    );
    assert!(stream.next().await.is_none());
    assert_eq!(manager.active_executions("faulty"), Some(0));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configuration_leaves_the_old_one_in_force() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    let config = json!({"level": 1}).as_object().cloned();
    manager.load_plugin("faulty", config).await.unwrap();
    let refused = json!({"refuse": true}).as_object().cloned().unwrap();
    let err = manager
        .update_plugin_config("faulty", refused)
        .await
        .unwrap_err();
    match &err {
        ManagerError::Plugin(ProxyError::Http {
            status: 400,
            detail,
            ..
        }) => {
            assert_eq!(detail, "refusing this configuration")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 1})
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_are_reported_promptly_with_the_log() {
    let home = TestHome::new();
    home.native_manifest("crasher", FAULTY, &["--crash-at-start"]);
    home.native_manifest("missing", "/no/such/binary", &[]);
    home.native_manifest("sleeper", FAULTY, &["--never-ready"]);
    let mut options = home.options();
    options.start_timeout = Duration::from_millis(700);
    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();

    let started = Instant::now();
    let err = manager.load_plugin("crasher", None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("exited with status 7 before it was ready"),
        "{text}"
    );
    assert!(text.contains("crashing at start as asked"), "{text}");

    let err = manager.load_plugin("missing", None).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot start /no/such/binary"),
        "{err}"
    );

    let started = Instant::now();
    let err = manager.load_plugin("sleeper", None).await.unwrap_err();
    assert!(
        matches!(err, ManagerError::Plugin(ProxyError::StartTimeout { .. })),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(manager.list_plugins().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_are_reported_and_the_good_ones_still_load() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    std::fs::write(home.plugins_dir().join("garbage.json"), "{ not json").unwrap();
    home.write_manifest("nameless", json!({"command": ECHO}));
    home.write_manifest(
        "two-forms",
        json!({"name": "x", "command": ECHO, "module": "m"}),
    );
    let manager = home.manager();
    let found = manager.discover_manifests();
    assert_eq!(
        found.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["cjm-echo"]
    );
    let problems = manager.discovery_problems();
    assert_eq!(problems.len(), 3, "{problems:?}");
    for (problem, file) in problems
        .iter()
        .zip(["garbage.json", "nameless.json", "two-forms.json"])
    {
        assert!(problem.path.ends_with(file), "{problem}");
    }
    manager.load_plugin("cjm-echo", None).await.unwrap();
    let err = manager.load_plugin("x", None).await.unwrap_err();
    assert_eq!(err.to_string(), "plugin x not found; discovered: cjm-echo");
    manager.shutdown().await;
}

/// Start a host process that loads `plugin`, SIGKILL it once its worker is up, and
/// return the worker's pid.
fn worker_of_killed_host(home: &TestHome, plugin: &str) -> u32 {
    let mut host = Command::new(HOST)
        .arg(plugin)
        .env("CJM_HOME", home.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let worker: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("host said {line:?}"));
    assert!(alive(worker));
    host.kill().unwrap();
    host.wait().unwrap();
    worker
}

#[test]
fn workers_exit_on_their_own_when_the_host_is_killed() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let worker = worker_of_killed_host(&home, "cjm-echo");
    let gone_after = wait_gone(worker, Duration::from_secs(5));
    assert!(gone_after.is_some(), "worker {worker} outlived its host");
    assert!(
        gone_after.unwrap() < Duration::from_millis(500),
        "{gone_after:?}"
    );
}

/// The worker below does not follow its host's pid: only PR_SET_PDEATHSIG ends it.
#[test]
fn the_kernel_kills_a_worker_whose_host_was_killed() {
    let home = TestHome::new();
    home.native_manifest("orphan", FAULTY, &["--no-parent-watch"]);
    let worker = worker_of_killed_host(&home, "orphan");
    let gone_after = wait_gone(worker, Duration::from_secs(5));
    if gone_after.is_none() {
        sigkill(worker);
    }
    assert!(gone_after.is_some(), "worker {worker} outlived its host");
    assert!(
        gone_after.unwrap() < Duration::from_millis(500),
        "{gone_after:?}"
    );
}

/// PR_SET_PDEATHSIG fires when the thread that forked the worker exits. Loading from
/// a thread that then ends must not take the worker with it.
#[test]
fn a_worker_outlives_the_thread_that_loaded_it() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let manager = home.manager();
    manager.discover_manifests();
    let loader = {
        let (manager, handle) = (manager.clone(), runtime.handle().clone());
        std::thread::spawn(move || {
            // This thread's entry in /proc, gone once the kernel is done with it.
            let task = std::fs::read_link("/proc/thread-self").unwrap();
            let loaded = handle.block_on(manager.load_plugin("faulty", None));
            (Path::new("/proc").join(task), loaded)
        })
    };
    let (task, loaded) = loader.join().unwrap();
    loaded.unwrap();
    let pid = manager.worker_info("faulty").unwrap().pid;
    // The thread is released only after its exit signalled whatever it was parent
    // of: from then on, a death signal it could trigger has been sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while task.exists() {
        assert!(Instant::now() < deadline, "{} stayed", task.display());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(alive(pid), "worker died with the thread that loaded it");
    let answer = runtime
        .block_on(manager.execute_plugin("faulty", CallArgs::new().arg("pid")))
        .unwrap();
    assert_eq!(answer["pid"], pid);
    runtime.block_on(manager.shutdown());
}
