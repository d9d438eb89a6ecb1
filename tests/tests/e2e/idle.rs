//! Idle stop: a worker idle past its keep-alive is stopped and the next call is served
//! by a new one with the same configuration; a call longer than the keep-alive is not
//! cut short.

use std::time::{Duration, Instant, SystemTime};

use cjm_manager::{CallArgs, PluginState};
use serde_json::json;

use crate::common::*;

fn idle_home(keep_alive_secs: f64) -> TestHome {
    let home = TestHome::new();
    for (name, binary) in [("echo", ECHO), ("faulty", FAULTY)] {
        home.write_manifest(
            name,
            json!({
                "name": name,
                "version": "0.1.0",
                "command": binary,
                "keep_alive_secs": keep_alive_secs,
            }),
        );
    }
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_stopped_after_its_keep_alive_and_the_next_call_starts_it_again() {
    let home = idle_home(0.3);
    let manager = home.manager();
    manager.discover_manifests();
    let config = json!({"prefix": "> "}).as_object().cloned();
    manager.load_plugin("echo", config).await.unwrap();
    let first = manager.worker_info("echo").unwrap().pid;
    let status = manager.plugin_status("echo").unwrap();
    assert_eq!(status.keep_alive, Some(Duration::from_millis(300)));
    let stop_at = status.idle_stop_at.expect("resident, with a deadline");
    assert!(stop_at > std::time::SystemTime::now());

    let gone = wait_gone(first, Duration::from_secs(5)).expect("stopped after its keep-alive");
    assert!(gone < Duration::from_secs(3), "{gone:?}");
    // The process ends a moment before the manager records the stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while manager.plugin_status("echo").unwrap().state != PluginState::Stopped
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = manager.plugin_status("echo").unwrap();
    assert_eq!(status.state, PluginState::Stopped, "{status:?}");
    assert!(
        status
            .last_failure
            .as_deref()
            .unwrap_or("")
            .contains("keep-alive"),
        "{status:?}"
    );
    assert_eq!(status.idle_stop_at, None, "not resident");

    // The next call is served, transparently, by a new worker with the configuration.
    let answer = manager
        .execute_plugin("echo", CallArgs::new().arg("again"))
        .await
        .unwrap();
    assert_eq!(answer["result"], "> again");
    let second = manager.worker_info("echo").unwrap().pid;
    assert_ne!(second, first);
    assert_eq!(
        manager.plugin_status("echo").unwrap().state,
        PluginState::Running
    );
    manager.shutdown().await;
    assert!(!alive(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_keep_alive_is_not_cut_short_and_idleness_counts_from_its_end() {
    let home = idle_home(0.3);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let pid = manager.worker_info("faulty").unwrap().pid;
    let called = SystemTime::now();
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("sleep").arg(900))
        .await
        .unwrap();
    assert_eq!(answer["slept_ms"], 900);
    assert!(alive(pid), "the worker was stopped under its call");
    // Idle from the call's end: its stop is due a keep-alive after the 900 ms call,
    // not a keep-alive after the call began.
    let stop_at = manager
        .plugin_status("faulty")
        .unwrap()
        .idle_stop_at
        .expect("resident again, with a deadline");
    let earliest = called + Duration::from_millis(900 + 300);
    assert!(stop_at >= earliest, "{stop_at:?} < {earliest:?}");
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
    assert!(SystemTime::now() >= stop_at, "stopped before its deadline");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_may_set_or_override_a_keep_alive() {
    let home = TestHome::new();
    home.native_manifest("echo", ECHO, &[]);
    let mut options = home.options();
    options
        .plugin_keep_alive
        .insert(String::from("echo"), Duration::from_millis(200));
    // Without one, a worker stays: one loaded first, idle longer than the other
    // when the other is stopped for its keep-alive.
    let resident_home = TestHome::new();
    resident_home.native_manifest("echo", ECHO, &[]);
    let resident = resident_home.manager();
    resident.discover_manifests();
    resident.load_plugin("echo", None).await.unwrap();
    let resident_pid = resident.worker_info("echo").unwrap().pid;
    assert_eq!(resident.plugin_status("echo").unwrap().idle_stop_at, None);

    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();
    manager.load_plugin("echo", None).await.unwrap();
    let pid = manager.worker_info("echo").unwrap().pid;
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
    assert!(
        alive(resident_pid),
        "a worker without a keep-alive was stopped"
    );
    assert_eq!(resident.plugin_status("echo").unwrap().idle_stop_at, None);
    resident.shutdown().await;
    manager.shutdown().await;
}

/// The mapped code pages of a process, in KiB (what `resident.rs` gives back).
fn file_backed_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssFile:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Poll until `pid`'s file-backed RSS is below `below` KiB; its value then.
fn wait_file_backed_below(pid: u32, below: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = file_backed_kib(pid);
        if now < below {
            return Some(now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_gives_back_its_code_pages_and_still_answers_every_call() {
    let home = idle_home(600.0);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("echo", None).await.unwrap();
    let pid = manager.worker_info("echo").unwrap().pid;
    let started = file_backed_kib(pid);
    assert!(started > 0, "no RssFile for {pid}");
    // Idle: what startup touched of its binary and libc is unmapped, down to less
    // than half.
    let idle = tokio::task::spawn_blocking(move || wait_file_backed_below(pid, started / 2))
        .await
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "RssFile stayed at {} KiB of {started}",
                file_backed_kib(pid)
            )
        });
    // Every kind of call works as before: the pages come back from the files.
    for round in 0..3 {
        let out = manager
            .execute_plugin("echo", CallArgs::new().arg(format!("round {round}")))
            .await
            .unwrap();
        assert_eq!(out["result"], format!("round {round}"));
        let mut stream = manager
            .execute_plugin_stream("echo", CallArgs::new().arg(3))
            .await
            .unwrap();
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
            chunks += 1;
        }
        assert_eq!(chunks, 3);
        let serving = file_backed_kib(pid);
        assert!(
            serving > idle,
            "calls ran with {serving} KiB mapped of {idle}"
        );
        // And idle again after them.
        let again = tokio::task::spawn_blocking(move || wait_file_backed_below(pid, serving))
            .await
            .unwrap();
        assert!(again.is_some(), "round {round}: stayed at {serving} KiB");
    }
    assert_eq!(
        manager.worker_info("echo").unwrap().pid,
        pid,
        "never restarted"
    );
    manager.shutdown().await;
}
