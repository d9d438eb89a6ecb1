//! The policies against a stats source whose figures each test sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cjm_metadata::{Manifest, PluginMeta, ResourceRequirements};
use cjm_scheduling::{
    ManualStats, PermissiveScheduler, QueueScheduler, Resource, ResourceScheduler, SafetyScheduler,
};

fn gpu_plugin(name: &str, vram_mb: u64) -> PluginMeta {
    let mut meta = PluginMeta::from(&Manifest::native(name, "1.0.0", PathBuf::from("/x")));
    meta.resources = ResourceRequirements::default().with_gpu(vram_mb);
    meta
}

fn gpu_free(mb: f64) -> ManualStats {
    ManualStats::with_free(Some(mb), Some(64_000.0))
}

/// Wait (briefly polling, test-side only) until `scheduler` has `count` waiters.
async fn until_waiting(scheduler: &QueueScheduler, count: usize) {
    let start = Instant::now();
    while scheduler.waiting() < count {
        assert!(start.elapsed() < Duration::from_secs(10), "never queued");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn permissive_admits_without_looking() {
    let stats = ManualStats::default();
    stats.fail("no figures at all");
    let reservation = PermissiveScheduler
        .allocate(&gpu_plugin("big", 1_000_000), &stats)
        .await
        .unwrap();
    assert_eq!(reservation.demand().gpu_vram_mb, 0);
}

#[tokio::test]
async fn safety_refusal_names_what_was_needed_and_free() {
    let scheduler = SafetyScheduler::new();
    let refusal = scheduler
        .allocate(&gpu_plugin("whisper", 6000), &gpu_free(2000.0))
        .await
        .unwrap_err();
    assert!(refusal.is_short_of(Resource::GpuMemory));
    let text = refusal.to_string();
    assert!(text.contains("execution of whisper not admitted"), "{text}");
    assert!(
        text.contains("GPU memory needed 6000 MB, free 2000 MB"),
        "{text}"
    );

    let mut ram_hungry = gpu_plugin("llm", 0);
    ram_hungry.resources.requires_gpu = false;
    ram_hungry.resources.min_system_ram_mb = 100_000;
    let text = scheduler
        .allocate(&ram_hungry, &gpu_free(2000.0))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("system memory needed 100000 MB, free 64000 MB"),
        "{text}"
    );
}

#[tokio::test]
async fn safety_without_figures_refuses_and_says_why() {
    let scheduler = SafetyScheduler::new();
    let stats = ManualStats::default();
    stats.fail("monitor plugin crashed");
    let text = scheduler
        .allocate(&gpu_plugin("whisper", 100), &stats)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("monitor plugin crashed"), "{text}");
    stats.set(Default::default());
    let text = scheduler
        .allocate(&gpu_plugin("whisper", 100), &stats)
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("no gpu_free_memory_mb reported"), "{text}");
}

#[tokio::test]
async fn safety_reservations_prevent_oversubscription() {
    let scheduler = SafetyScheduler::new();
    let stats = gpu_free(8000.0);
    let first = scheduler
        .allocate(&gpu_plugin("a", 6000), &stats)
        .await
        .unwrap();
    let refusal = scheduler
        .allocate(&gpu_plugin("b", 6000), &stats)
        .await
        .unwrap_err();
    let text = refusal.to_string();
    assert!(text.contains("free 2000 MB"), "{text}");
    assert!(text.contains("6000 MB reserved"), "{text}");
    assert_eq!(scheduler.ledger().reserved().gpu_vram_mb, 6000);
    drop(first);
    assert_eq!(scheduler.ledger().reserved().gpu_vram_mb, 0);
    let _second = scheduler
        .allocate(&gpu_plugin("b", 6000), &stats)
        .await
        .unwrap();
}

/// On a paused clock: time moves only when every task waits, so the waiter has
/// surely gone to sleep on its poll timer, and a wake at the tick would show as 10 s.
#[tokio::test(start_paused = true)]
async fn queue_admits_a_waiter_on_release_not_at_the_poll_tick() {
    let scheduler = Arc::new(
        QueueScheduler::new(Duration::from_secs(30)).with_poll_interval(Duration::from_secs(10)),
    );
    let stats = gpu_free(8000.0);
    let holder = scheduler
        .allocate(&gpu_plugin("a", 6000), &stats)
        .await
        .unwrap();
    let waiter = {
        let (scheduler, stats) = (Arc::clone(&scheduler), stats.clone());
        tokio::spawn(async move {
            let reservation = scheduler
                .allocate(&gpu_plugin("b", 6000), &stats)
                .await
                .unwrap();
            (tokio::time::Instant::now(), reservation)
        })
    };
    until_waiting(&scheduler, 1).await;
    // Resumes only once the waiter, having checked, sleeps on its 10 s poll timer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    let released = tokio::time::Instant::now();
    drop(holder);
    let (admitted, reservation) = waiter.await.unwrap();
    // No time passes on a paused clock but for timers: a release wakes the waiter
    // at once, a poll tick would be 10 s on.
    let latency = admitted.duration_since(released);
    assert!(latency < Duration::from_millis(200), "{latency:?}");
    assert_eq!(reservation.demand().gpu_vram_mb, 6000);
    assert_eq!(scheduler.waiting(), 0);
}

#[tokio::test]
async fn queue_refuses_after_its_timeout() {
    let scheduler = QueueScheduler::new(Duration::from_millis(150));
    let stats = gpu_free(2000.0);
    let started = Instant::now();
    let refusal = scheduler
        .allocate(&gpu_plugin("whisper", 6000), &stats)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let text = refusal.to_string();
    assert!(text.contains("needed 6000 MB, free 2000 MB"), "{text}");
    assert!(text.contains("after waiting"), "{text}");
    assert_eq!(scheduler.waiting(), 0);
}

/// More than the machine's largest GPU has in all: no release could ever admit it,
/// so neither policy waits (the paused clock would show any wait).
#[tokio::test(start_paused = true)]
async fn a_never_admissible_request_is_refused_at_once_by_every_waiting_policy() {
    let stats = gpu_free(2000.0);
    stats.update(|figures| figures.gpu_total_memory_mb = Some(24_000.0));
    let huge = gpu_plugin("llm", 30_000);
    let queue = QueueScheduler::new(Duration::from_secs(300));
    let started = tokio::time::Instant::now();
    let refusal = queue.allocate(&huge, &stats).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(refusal.is_never_admissible());
    assert!(!refusal.is_short_of(Resource::GpuMemory));
    assert_eq!(
        refusal.to_string(),
        "execution of llm not admitted: never admissible: GPU memory needed 30000 MB, \
         available 24000 MB (the machine's total)"
    );
    assert_eq!(queue.waiting(), 0);
    let refusal = SafetyScheduler::new()
        .allocate(&huge, &stats)
        .await
        .unwrap_err();
    assert!(refusal.is_never_admissible());
    // What fits the machine but not what is free now still waits, as before.
    let fits = gpu_plugin("whisper", 20_000);
    let waiting = tokio::time::timeout(Duration::from_secs(1), queue.allocate(&fits, &stats));
    assert!(waiting.await.is_err(), "admitted with 2000 MB free");
}

#[tokio::test]
async fn queue_notices_memory_freed_outside_by_polling() {
    let scheduler =
        QueueScheduler::new(Duration::from_secs(30)).with_poll_interval(Duration::from_millis(20));
    let stats = gpu_free(1000.0);
    let freer = {
        let stats = stats.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stats.update(|figures| figures.gpu_free_memory_mb = Some(9000.0));
        })
    };
    let _admitted = scheduler
        .allocate(&gpu_plugin("whisper", 6000), &stats)
        .await
        .unwrap();
    freer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_never_exceed_capacity() {
    const CAPACITY_MB: u64 = 10_000;
    let scheduler = Arc::new(QueueScheduler::new(Duration::from_secs(60)));
    let stats = gpu_free(CAPACITY_MB as f64);
    let in_use = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for index in 0..50u64 {
        let (scheduler, stats) = (Arc::clone(&scheduler), stats.clone());
        let (in_use, peak) = (Arc::clone(&in_use), Arc::clone(&peak));
        tasks.push(tokio::spawn(async move {
            let need = 1000 + (index % 5) * 1000;
            let meta = gpu_plugin(&format!("p{index}"), need);
            let reservation = scheduler.allocate(&meta, &stats).await.unwrap();
            let now = in_use.fetch_add(need, Ordering::SeqCst) + need;
            peak.fetch_max(now, Ordering::SeqCst);
            // Long enough that the early admissions surely overlap.
            tokio::time::sleep(Duration::from_millis(20)).await;
            in_use.fetch_sub(need, Ordering::SeqCst);
            drop(reservation);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= CAPACITY_MB, "peak {peak} MB");
    assert!(peak > 5000, "executions never overlapped: peak {peak} MB");
    assert_eq!(scheduler.ledger().holders(), 0);
    assert_eq!(scheduler.ledger().reserved().gpu_vram_mb, 0);
}

/// On a paused clock: the test's sleep ends only when every waiter has had its turn
/// and waits again.
#[tokio::test(start_paused = true)]
async fn a_large_request_is_not_starved_by_later_small_ones() {
    let scheduler = Arc::new(QueueScheduler::new(Duration::from_secs(30)));
    let stats = gpu_free(10_000.0);
    let holder = scheduler
        .allocate(&gpu_plugin("holder", 6000), &stats)
        .await
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let spawn = |name: String, need: u64| {
        let (scheduler, stats, order) = (Arc::clone(&scheduler), stats.clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let reservation = scheduler
                .allocate(&gpu_plugin(&name, need), &stats)
                .await
                .unwrap();
            order.lock().unwrap().push(name);
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(reservation);
        })
    };
    let large = spawn(String::from("large"), 8000);
    until_waiting(&scheduler, 1).await;
    // Each small one would fit in the 4000 MB left beside the holder.
    let smalls: Vec<_> = (0..5).map(|i| spawn(format!("small{i}"), 2000)).collect();
    until_waiting(&scheduler, 6).await;
    // Every waiter has checked and gone back to waiting by the time this returns.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        order.lock().unwrap().is_empty(),
        "a later request overtook the large one"
    );
    drop(holder);
    large.await.unwrap();
    for small in smalls {
        small.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order[0], "large", "{order:?}");
    assert_eq!(order.len(), 6);
}

#[tokio::test]
async fn a_waiter_that_gives_up_lets_the_next_one_through() {
    let scheduler = Arc::new(QueueScheduler::new(Duration::from_secs(30)));
    let stats = gpu_free(4000.0);
    let head = {
        let (scheduler, stats) = (Arc::clone(&scheduler), stats.clone());
        tokio::spawn(async move { scheduler.allocate(&gpu_plugin("huge", 9000), &stats).await })
    };
    until_waiting(&scheduler, 1).await;
    let next = {
        let (scheduler, stats) = (Arc::clone(&scheduler), stats.clone());
        tokio::spawn(async move { scheduler.allocate(&gpu_plugin("small", 1000), &stats).await })
    };
    until_waiting(&scheduler, 2).await;
    head.abort();
    let started = Instant::now();
    let _admitted = next.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(scheduler.waiting(), 0);
}

#[tokio::test]
async fn try_allocate_never_waits_and_never_overtakes_the_queue() {
    let scheduler = Arc::new(QueueScheduler::new(Duration::from_secs(30)));
    let stats = gpu_free(4000.0);
    let started = Instant::now();
    let refusal = scheduler
        .try_allocate(&gpu_plugin("big", 6000), &stats)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(refusal.is_short_of(Resource::GpuMemory));
    let waiter = {
        let (scheduler, stats) = (Arc::clone(&scheduler), stats.clone());
        tokio::spawn(async move { scheduler.allocate(&gpu_plugin("big", 6000), &stats).await })
    };
    until_waiting(&scheduler, 1).await;
    let refusal = scheduler
        .try_allocate(&gpu_plugin("small", 1000), &stats)
        .await
        .unwrap_err();
    assert_eq!(refusal.queued_ahead, 1);
    assert!(
        refusal.to_string().contains("1 earlier request"),
        "{refusal}"
    );
    waiter.abort();
}
