//! Admission with real workers: eviction of idle GPU plugins (the successor's rule:
//! largest first, the least recently used first among equals, until 1.25 times the
//! shortfall is freed; never a hollow, busy or requesting one: stopped, and started
//! again on their next execution), a worker credited with its own GPU memory, and a
//! plugin as the system monitor.
//! GPU memory comes from a fake source in which each plugin's first worker holds its
//! share until that process is gone, as a driver would report it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cjm_manager::{
    CallArgs, ManagerError, ManualStats, PluginManager, PluginState, SafetyScheduler,
};
use cjm_scheduling::{BoxFuture, StatsError, StatsSource, SystemStats};
use serde_json::json;

use crate::common::*;

const CAPACITY_MB: f64 = 14_000.0;
const HELD_MB: f64 = 4_000.0;
const IDLE_PLUGINS: [&str; 3] = ["gpu-a", "gpu-b", "gpu-c"];
const REQUESTER: &str = "gpu-r";

/// GPU memory as the driver would see it: what each listed process holds is in use
/// while the process lives.
#[derive(Debug, Clone, Default)]
struct VramBook {
    holders: Arc<Mutex<Vec<(u32, f64)>>>,
}

impl VramBook {
    fn hold(&self, pid: u32, mb: f64) {
        self.holders.lock().unwrap().push((pid, mb));
    }
}

impl StatsSource for VramBook {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>> {
        let held: f64 = self
            .holders
            .lock()
            .unwrap()
            .iter()
            .filter(|(pid, _)| alive(*pid))
            .map(|(_, mb)| mb)
            .sum();
        Box::pin(std::future::ready(Ok(SystemStats::with_free(
            Some(CAPACITY_MB - held),
            Some(64_000.0),
        ))))
    }

    /// What the driver lists for `pid`: a live process holds its share, any other
    /// nothing.
    fn process_gpu_memory_mb(&self, pid: u32) -> Option<f64> {
        Some(
            self.holders
                .lock()
                .unwrap()
                .iter()
                .filter(|(holder, _)| *holder == pid && alive(pid))
                .map(|(_, mb)| mb)
                .sum(),
        )
    }
}

fn gpu_manifest(home: &TestHome, name: &str, vram_mb: u64) {
    home.write_manifest(
        name,
        json!({
            "name": name,
            "version": "0.1.0",
            "category": "test",
            "command": ECHO,
            "resources": {"requires_gpu": true, "min_gpu_vram_mb": vram_mb},
        }),
    );
}

/// Three idle GPU plugins holding 4000 MB each of 14000 (2000 free), and a requester
/// needing `requester_mb`, all under the safety policy.
async fn gpu_box(requester_mb: u64) -> (TestHome, PluginManager) {
    let home = TestHome::new();
    for name in IDLE_PLUGINS {
        // They declare little, so that they can run in the 2000 MB left.
        gpu_manifest(&home, name, 500);
    }
    gpu_manifest(&home, REQUESTER, requester_mb);
    let book = VramBook::default();
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    options.stats_source = Some(Arc::new(book.clone()));
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    for name in IDLE_PLUGINS.into_iter().chain([REQUESTER]) {
        manager.load_plugin(name, None).await.unwrap();
    }
    for name in IDLE_PLUGINS {
        book.hold(pid(&manager, name), HELD_MB);
    }
    (home, manager)
}

fn pid(manager: &PluginManager, name: &str) -> u32 {
    manager.worker_info(name).unwrap().pid
}

/// The current workers' pids; `None` for a plugin whose worker was stopped.
fn pids(manager: &PluginManager) -> Vec<Option<u32>> {
    IDLE_PLUGINS
        .into_iter()
        .chain([REQUESTER])
        .map(|name| manager.worker_info(name).map(|worker| worker.pid))
        .collect()
}

fn assert_stopped(manager: &PluginManager, name: &str) {
    let status = manager.plugin_status(name).unwrap();
    assert_eq!(status.state, PluginState::Stopped, "{name}: {status:?}");
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|why| why.contains("to free GPU memory for gpu-r")),
        "{status:?}"
    );
}

async fn run(manager: &PluginManager, name: &str) -> Result<serde_json::Value, ManagerError> {
    manager.execute_plugin(name, CallArgs::new().arg("x")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_least_recently_used_idle_plugin_is_stopped_when_it_frees_enough() {
    let (_home, manager) = gpu_box(5_000).await;
    for name in ["gpu-b", "gpu-a", "gpu-c"] {
        run(&manager, name).await.unwrap();
    }
    let before = pids(&manager);
    let result = run(&manager, REQUESTER).await.unwrap();
    assert_eq!(result["processed_by_pid"], before[3].unwrap());
    let after = pids(&manager);
    assert_eq!(after[0], before[0], "gpu-a was stopped");
    assert_eq!(after[1], None, "gpu-b, the least recently used, was kept");
    assert_stopped(&manager, "gpu-b");
    assert!(wait_group_gone(before[1].unwrap(), Duration::from_secs(10)).is_empty());
    assert_eq!(after[2], before[2], "gpu-c was stopped");
    assert_eq!(after[3], before[3], "the requester was stopped");
    // Stopped with its history: it stays the least recently used.
    assert!(manager.plugin_meta("gpu-b").unwrap().last_executed > 0.0);

    // Its next execution starts it again, transparently, with its configuration.
    let result = run(&manager, "gpu-b").await.unwrap();
    let restarted = pid(&manager, "gpu-b");
    assert_eq!(result["processed_by_pid"], restarted);
    assert_ne!(Some(restarted), before[1]);
    assert_eq!(
        manager.plugin_status("gpu-b").unwrap().state,
        PluginState::Running
    );
    assert_eq!(manager.plugin_status("gpu-b").unwrap().restarts, 0);
    manager.shutdown().await;
}

/// An instance is its own unit for eviction, and one measured holding under 64 MB
/// (this copy holds nothing) is never stopped: it would free nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hollow_instance_is_not_evicted_however_long_idle() {
    let (_home, manager) = gpu_box(5_000).await;
    manager
        .load_instance("gpu-a", "gpu-a-copy", None)
        .await
        .unwrap();
    for name in ["gpu-a-copy", "gpu-b", "gpu-a", "gpu-c"] {
        run(&manager, name).await.unwrap();
    }
    let copy = pid(&manager, "gpu-a-copy");
    run(&manager, REQUESTER).await.unwrap();
    assert_stopped(&manager, "gpu-b");
    assert_eq!(
        pid(&manager, "gpu-a-copy"),
        copy,
        "the hollow copy was stopped"
    );
    assert_eq!(
        manager.plugin_status("gpu-a").unwrap().state,
        PluginState::Running,
        "the plugin's other instance was not stopped"
    );
    manager.shutdown().await;
}

/// 7000 MB short: the old rule stopped plugins until exactly that was free (two of
/// 4000); the successor's frees 8750, a quarter more, so all three go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_frees_a_quarter_more_than_the_shortfall() {
    let (_home, manager) = gpu_box(9_000).await;
    for name in ["gpu-b", "gpu-a", "gpu-c"] {
        run(&manager, name).await.unwrap();
    }
    let before = pids(&manager);
    run(&manager, REQUESTER).await.unwrap();
    for name in IDLE_PLUGINS {
        assert_stopped(&manager, name);
    }
    assert_eq!(pids(&manager)[3], before[3]);
    manager.shutdown().await;

    // 6000 short: 7500 to free, two of 4000 do, least recently used first.
    let (_home, manager) = gpu_box(8_000).await;
    for name in ["gpu-b", "gpu-a", "gpu-c"] {
        run(&manager, name).await.unwrap();
    }
    let before = pids(&manager);
    run(&manager, REQUESTER).await.unwrap();
    assert_stopped(&manager, "gpu-b");
    assert_stopped(&manager, "gpu-a");
    assert_eq!(pids(&manager)[2], before[2], "gpu-c was stopped");
    manager.shutdown().await;
}

/// The largest idle plugin goes first, though others were idle longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_idle_plugin_is_stopped_first() {
    let home = TestHome::new();
    for name in IDLE_PLUGINS {
        gpu_manifest(&home, name, 500);
    }
    gpu_manifest(&home, REQUESTER, 5_000);
    let book = VramBook::default();
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    options.stats_source = Some(Arc::new(book.clone()));
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    for name in IDLE_PLUGINS.into_iter().chain([REQUESTER]) {
        manager.load_plugin(name, None).await.unwrap();
    }
    // 2000 + 7000 + 3000 of 14000 held: 2000 free, 3000 short, 3750 to free.
    for (name, held) in IDLE_PLUGINS.into_iter().zip([2_000.0, 7_000.0, 3_000.0]) {
        book.hold(pid(&manager, name), held);
    }
    for name in ["gpu-a", "gpu-c", "gpu-b"] {
        run(&manager, name).await.unwrap();
    }
    let before = pids(&manager);
    run(&manager, REQUESTER).await.unwrap();
    assert_stopped(&manager, "gpu-b");
    assert_eq!(
        pids(&manager)[0],
        before[0],
        "gpu-a, idle longest, was stopped"
    );
    assert_eq!(pids(&manager)[2], before[2], "gpu-c was stopped");
    manager.shutdown().await;
}

/// A worker that holds GPU memory already counts it as its own at its next
/// admission: otherwise it waits for memory it holds itself, which no eviction may
/// take (it is the requester), for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_credited_with_the_gpu_memory_it_holds() {
    let home = TestHome::new();
    gpu_manifest(&home, REQUESTER, 5_000);
    let book = VramBook::default();
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    options.stats_source = Some(Arc::new(book.clone()));
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    manager.load_plugin(REQUESTER, None).await.unwrap();
    run(&manager, REQUESTER).await.unwrap();
    // Its model stays loaded: 4000 of 14000 held by it, and 8000 by a program
    // not ours: 2000 free, less than the 5000 it declares.
    let worker = pid(&manager, REQUESTER);
    book.hold(worker, 4_000.0);
    book.hold(std::process::id(), 8_000.0);
    let result = run(&manager, REQUESTER).await.unwrap();
    assert_eq!(result["processed_by_pid"], worker);
    // Without its own memory it is refused, as any other would be.
    book.hold(std::process::id(), 1_500.0);
    let err = run(&manager, REQUESTER).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("GPU memory needed 1000 MB, free 500 MB"),
        "{err}"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_plugin_is_never_evicted_and_not_enough_is_a_clear_error() {
    let (_home, manager) = gpu_box(11_000).await;
    // gpu-c is the least recently used, but its stream is still open.
    let mut stream = manager
        .execute_plugin_stream("gpu-c", CallArgs::new().arg(1_000_000))
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap()["chunk"], 0);
    assert!(manager.plugin_meta("gpu-c").unwrap().last_executed > 0.0);
    for name in ["gpu-a", "gpu-b"] {
        run(&manager, name).await.unwrap();
    }
    let before = pids(&manager);

    let err = run(&manager, REQUESTER).await.unwrap_err();
    let ManagerError::NotEnoughGpuMemory { evicted, busy, .. } = &err else {
        panic!("not an eviction error: {err}");
    };
    assert_eq!(evicted, &["gpu-a", "gpu-b"]);
    assert_eq!(busy, &["gpu-c"]);
    let text = err.to_string();
    assert!(text.contains("execution of gpu-r not admitted"), "{text}");
    // 10000 MB reported free once gpu-a and gpu-b are gone. gpu-c reserved none of
    // it: the 500 MB it declares are within the 4000 its worker holds already.
    assert!(
        text.contains("GPU memory needed 11000 MB, free 10000 MB"),
        "{text}"
    );
    assert!(!text.contains("reserved by running executions"), "{text}");
    assert!(text.contains("gpu-a, gpu-b did not free enough"), "{text}");
    assert!(text.contains("executing, not evicted: gpu-c"), "{text}");

    let after = pids(&manager);
    assert_eq!(after[2], before[2], "the busy plugin was stopped");
    assert_eq!(after[3], before[3], "the requester was stopped");
    assert_eq!(stream.next().await.unwrap().unwrap()["chunk"], 1);
    drop(stream);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_monitor_plugin_is_the_source_of_the_figures() {
    let home = TestHome::new();
    home.native_manifest("cjm-sysmon", SYSMON, &[]);
    home.write_manifest(
        "ram-user",
        json!({
            "name": "ram-user",
            "version": "0.1.0",
            "command": ECHO,
            "resources": {"min_system_ram_mb": 50},
        }),
    );
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    // What the host would see without the monitor: almost no memory.
    options.stats_source = Some(Arc::new(ManualStats::with_free(None, Some(1.0))));
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    manager.load_plugin("ram-user", None).await.unwrap();

    let text = run(&manager, "ram-user").await.unwrap_err().to_string();
    assert!(
        text.contains("system memory needed 50 MB, free 1 MB"),
        "{text}"
    );
    let err = manager.register_system_monitor("cjm-sysmon").unwrap_err();
    assert!(matches!(err, ManagerError::NotLoaded { .. }), "{err}");

    manager.load_plugin("cjm-sysmon", None).await.unwrap();
    manager.register_system_monitor("cjm-sysmon").unwrap();
    assert_eq!(manager.system_monitor().as_deref(), Some("cjm-sysmon"));
    let stats = manager.system_stats().await.unwrap();
    let available = stats.memory_available_mb.unwrap();
    assert!(available > 50.0, "{stats:?}");
    assert!(stats.memory_total_mb.unwrap() >= available);
    run(&manager, "ram-user").await.unwrap();

    manager.unload_plugin("cjm-sysmon").await.unwrap();
    let text = run(&manager, "ram-user").await.unwrap_err().to_string();
    assert!(
        text.contains("system monitor plugin cjm-sysmon unavailable: it is not loaded"),
        "{text}"
    );
    assert_eq!(
        manager.unregister_system_monitor().as_deref(),
        Some("cjm-sysmon")
    );
    assert!(run(&manager, "ram-user").await.is_err());
    // Without a GPU driver the local figure is absent, never an error.
    let gpu = manager.plugin_gpu_memory_mb("ram-user").unwrap();
    assert!(gpu.is_none_or(|mb| mb >= 0.0));
    manager.shutdown().await;
}
