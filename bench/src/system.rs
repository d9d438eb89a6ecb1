//! Our system's figures, measured through the public manager API as a host would.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cjm_manager::{CallArgs, CjmHome, ManagerOptions, PluginManager};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::measure::{alive, anonymous_mib, median_ms, percentiles_us, rss_mib};
use crate::report::Results;
use crate::Options;

/// The bare hyper server's manifest name (see `bin/bench_bare_hyper.rs`).
const BARE_HYPER: &str = "bare-hyper";

/// cjm-echo built without the `remote` feature (see `cargo xtask bench`).
const PLAIN_ECHO: &str = "echo-plain";

/// Rounds of the side-by-side measurements: ours and the bare server take turns, so
/// that a swing of this noisy machine's load falls on both alike.
const ROUNDS: usize = 3;
/// Long enough for a worker's idle check (each second) to have seen a whole second
/// without requests: up to two periods after the last one.
const IDLE_SETTLED: Duration = Duration::from_millis(2_300);

/// A fresh CJM_HOME with manifests named `echo`, `echo-1`.. pointing at cjm-echo, and
/// `wordcount`, written as `cjm-ctl install-all` writes them (the binary's own
/// `--manifest`, config schema included).
#[derive(Debug)]
pub(crate) struct BenchHome {
    pub(crate) root: PathBuf,
}

impl BenchHome {
    pub(crate) fn new(options: &Options, label: &str, echo_copies: usize) -> Result<Self> {
        let root = options.out.with_file_name(format!("home-{label}"));
        let _ = std::fs::remove_dir_all(&root);
        let plugins = root.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        let echo = options.bin_dir.join("cjm-echo");
        let echo_manifest = own_manifest(&echo)?;
        for index in 0..echo_copies {
            let name = if index == 0 {
                String::from("echo")
            } else {
                format!("echo-{index}")
            };
            write_manifest(&plugins, &name, &echo, echo_manifest.clone())?;
        }
        let wordcount = options.bin_dir.join("cjm-wordcount");
        write_manifest(&plugins, "wordcount", &wordcount, own_manifest(&wordcount)?)?;
        let ticker = options.bin_dir.join("bench-ticker");
        write_manifest(&plugins, "ticker", &ticker, own_manifest(&ticker)?)?;
        let plain = options.bin_dir.join("cjm-echo-plain");
        write_manifest(&plugins, PLAIN_ECHO, &plain, own_manifest(&plain)?)?;
        let bare = options.bin_dir.join("bench-bare-hyper");
        write_manifest(&plugins, BARE_HYPER, &bare, own_manifest(&bare)?)?;
        Ok(BenchHome { root })
    }

    pub(crate) fn manager(&self) -> PluginManager {
        self.manager_with(|_| {})
    }

    /// A manager over this home, with `adjust` applied to its options.
    pub(crate) fn manager_with(&self, adjust: impl FnOnce(&mut ManagerOptions)) -> PluginManager {
        let mut options = ManagerOptions::with_home(CjmHome::at(&self.root));
        options.search_paths = vec![self.root.join("plugins")];
        options.temp_dir = self.root.clone();
        adjust(&mut options);
        let manager = PluginManager::new(options);
        manager.discover_manifests();
        manager
    }
}

/// What `<binary> --manifest` prints: the plugin's metadata and config schema.
fn own_manifest(binary: &Path) -> Result<Value> {
    let output = Command::new(binary)
        .arg("--manifest")
        .output()
        .with_context(|| format!("running {} --manifest", binary.display()))?;
    if !output.status.success() {
        bail!("{} --manifest failed: {}", binary.display(), output.status);
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the manifest printed by {}", binary.display()))
}

fn write_manifest(dir: &Path, name: &str, command: &Path, mut manifest: Value) -> Result<()> {
    let Some(fields) = manifest.as_object_mut() else {
        bail!("the manifest of {} is not a JSON object", command.display());
    };
    fields.insert(String::from("name"), json!(name));
    fields.insert(String::from("command"), json!(command));
    std::fs::write(dir.join(format!("{name}.json")), manifest.to_string())?;
    Ok(())
}

pub async fn measure_all(options: &Options, results: &mut Results) -> Result<()> {
    let reps = |full: usize, quick: usize| if options.quick { quick } else { full };
    // First, while this host process holds nothing else: its RSS is part of the figure.
    if options.wants(&["load_all_100_ms", "host_rss_100_mib"]) {
        load_all_100(options, results).await?;
    }
    let home = BenchHome::new(options, "main", 4)?;
    let manager = home.manager();

    if options.wants(&["spawn_ready_ms"]) {
        let mut spawn = Vec::new();
        for _ in 0..reps(30, 5) {
            let start = Instant::now();
            manager.load_plugin("echo", None).await?;
            spawn.push(start.elapsed());
            manager.unload_plugin("echo").await?;
        }
        results.insert("spawn_ready_ms", median_ms(spawn), "ms");
    }
    manager.load_plugin("echo", None).await?;
    if options.wants(&[
        "worker_idle_rss_mib",
        "worker_idle_rss_remote_mib",
        "worker_start_rss_mib",
        "worker_idle_after_calls_rss_mib",
    ]) {
        // A plain plugin (built without `remote`: no TLS linked) and the same plugin
        // as the examples ship it (able to serve `--listen`), alternately, idle.
        // Each read twice: just started (200 ms), and idle (after the worker's first
        // idle second, when it gives back the pages of its startup code).
        manager.load_plugin(PLAIN_ECHO, None).await?;
        let (mut plain, mut remote, mut plain_anon) = (Vec::new(), Vec::new(), Vec::new());
        let (mut started, mut after_calls) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for (name, samples) in [(PLAIN_ECHO, &mut plain), ("echo", &mut remote)] {
                manager.reload_plugin(name, None).await?;
                let pid = manager.worker_info(name).context("echo not loaded")?.pid;
                tokio::time::sleep(Duration::from_millis(200)).await;
                if name == PLAIN_ECHO {
                    started.push(rss_mib(pid).unwrap_or(f64::NAN));
                }
                tokio::time::sleep(IDLE_SETTLED).await;
                samples.push(rss_mib(pid).unwrap_or(f64::NAN));
                if name == PLAIN_ECHO {
                    plain_anon.push(anonymous_mib(pid).unwrap_or(f64::NAN));
                    // And idle again after serving calls.
                    for _ in 0..100 {
                        manager
                            .execute_plugin(name, CallArgs::new().arg("hi"))
                            .await?;
                    }
                    tokio::time::sleep(IDLE_SETTLED).await;
                    after_calls.push(rss_mib(pid).unwrap_or(f64::NAN));
                }
            }
        }
        manager.unload_plugin(PLAIN_ECHO).await?;
        results.insert("worker_start_rss_mib", median(started), "MiB");
        results.insert(
            "worker_idle_after_calls_rss_mib",
            median(after_calls),
            "MiB",
        );
        results.insert("worker_idle_rss_mib", median(plain), "MiB");
        results.insert("worker_idle_rss_remote_mib", median(remote), "MiB");
        results.insert("worker_idle_anon_mib", median(plain_anon), "MiB");
    }
    if options.wants(&["start_failure_ms"]) {
        start_failure(options, results, reps(10, 3)).await?;
    }
    let against_bare = options.wants(&["exec_rps_c32_bare_hyper", "exec_p50_bare_hyper_us"]);
    if against_bare {
        manager.load_plugin(BARE_HYPER, None).await?;
    }
    if options.wants(&["exec_p50_us", "exec_p99_us", "exec_p50_bare_hyper_us"]) {
        let calls = reps(20_000, 2_000) / ROUNDS;
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.extend(sequential_exec(&manager, "echo", calls).await?);
            if against_bare {
                bare.extend(sequential_exec(&manager, BARE_HYPER, calls).await?);
            }
        }
        let (p50, p99) = percentiles_us(ours);
        results.insert("exec_p50_us", p50, "us");
        results.insert("exec_p99_us", p99, "us");
        if against_bare {
            let (p50, _) = percentiles_us(bare);
            results.insert("exec_p50_bare_hyper_us", p50, "us");
        }
    }
    let window = Duration::from_millis(if options.quick { 500 } else { 3_000 });
    if options.wants(&["exec_rps_c32", "exec_rps_c32_bare_hyper"]) {
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.push(concurrent_rps(&manager, &["echo"], 32, window / 3).await?);
            if against_bare {
                bare.push(concurrent_rps(&manager, &[BARE_HYPER], 32, window / 3).await?);
            }
        }
        results.insert("exec_rps_c32", median(ours), "calls/s");
        if against_bare {
            results.insert("exec_rps_c32_bare_hyper", median(bare), "calls/s");
        }
    }
    if options.wants(&["exec_rps_c32_4w"]) {
        for name in ["echo-1", "echo-2", "echo-3"] {
            manager.load_plugin(name, None).await?;
        }
        let rps = concurrent_rps(
            &manager,
            &["echo", "echo-1", "echo-2", "echo-3"],
            32,
            window,
        )
        .await?;
        results.insert("exec_rps_c32_4w", rps, "calls/s");
    }
    if options.wants(&["stream_chunks_per_s"]) {
        stream(&manager, results).await?;
    }
    for (mib, key) in [(1, "payload_1mib_mib_s"), (10, "payload_10mib_mib_s")] {
        if options.wants(&[key]) {
            results.insert(key, payload(&manager, mib, reps(20, 3)).await?, "MiB/s");
        }
    }
    if options.wants(&["filebacked_100mib_ms"]) {
        manager.load_plugin("wordcount", None).await?;
        results.insert(
            "filebacked_100mib_ms",
            file_backed(&manager, reps(5, 1)).await?,
            "ms",
        );
    }
    manager.shutdown().await;

    if options.wants(&["parent_death_ms"]) {
        parent_death(options, results, reps(10, 3))?;
    }
    if options.wants(&["queue_wake_ms"]) {
        queue_wake(options, results).await?;
    }
    Ok(())
}

async fn start_failure(options: &Options, results: &mut Results, reps: usize) -> Result<()> {
    let home = BenchHome::new(options, "failure", 0)?;
    let fails = json!({"version": "0.1.0"});
    write_manifest(
        &home.root.join("plugins"),
        "fails",
        Path::new("/bin/false"),
        fails,
    )?;
    let manager = home.manager();
    let mut samples = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        if manager.load_plugin("fails", None).await.is_ok() {
            bail!("a worker that exits at once was reported ready");
        }
        samples.push(start.elapsed());
    }
    results.insert("start_failure_ms", median_ms(samples), "ms");
    Ok(())
}

/// The time of each of `calls` sequential calls to `plugin`.
async fn sequential_exec(
    manager: &PluginManager,
    plugin: &str,
    calls: usize,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        manager
            .execute_plugin(plugin, CallArgs::new().arg("hi"))
            .await?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Calls per second with `in_flight` calls outstanding at all times, spread round-robin
/// over `plugins`.
async fn concurrent_rps(
    manager: &PluginManager,
    plugins: &[&str],
    in_flight: usize,
    window: Duration,
) -> Result<f64> {
    let deadline = Instant::now() + window;
    let names: Arc<Vec<String>> = Arc::new(plugins.iter().map(|name| name.to_string()).collect());
    let mut tasks = JoinSet::new();
    for lane in 0..in_flight {
        let manager = manager.clone();
        let names = Arc::clone(&names);
        tasks.spawn(async move {
            let name = &names[lane % names.len()];
            let mut done = 0u64;
            while Instant::now() < deadline {
                manager
                    .execute_plugin(name, CallArgs::new().arg("hi"))
                    .await?;
                done += 1;
            }
            Ok::<u64, cjm_manager::ManagerError>(done)
        });
    }
    let start = Instant::now();
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        total += joined??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn stream(manager: &PluginManager, results: &mut Results) -> Result<()> {
    const CHUNKS: u64 = 100_000;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut stream = manager
            .execute_plugin_stream("echo", CallArgs::new().arg(CHUNKS))
            .await?;
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            chunk?;
            received += 1;
        }
        if received != CHUNKS {
            bail!("stream delivered {received} of {CHUNKS} chunks");
        }
        rates.push(CHUNKS as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    results.insert("stream_chunks_per_s", rates[rates.len() / 2], "chunks/s");
    Ok(())
}

/// A string of `mib` MiB in and back, inline JSON; MiB of payload per second.
async fn payload(manager: &PluginManager, mib: usize, reps: usize) -> Result<f64> {
    let text = "x".repeat(mib * 1024 * 1024);
    let mut samples = Vec::new();
    for _ in 0..reps {
        // The caller's copy of its own data is not the system's work: the clock
        // starts once the call is handed over, as a caller moving a String would.
        let call = CallArgs::new().arg(text.as_str());
        let start = Instant::now();
        let result = manager.execute_plugin("echo", call).await?;
        samples.push(start.elapsed());
        if result["result"].as_str().map(str::len) != Some(text.len()) {
            bail!("payload came back altered");
        }
    }
    Ok(mib as f64 / (median_ms(samples) / 1000.0))
}

async fn file_backed(manager: &PluginManager, reps: usize) -> Result<f64> {
    let text = "lorem ipsum dolor sit amet\n".repeat(100 * 1024 * 1024 / 27);
    let mut samples = Vec::new();
    for _ in 0..reps {
        let start = Instant::now();
        let result = manager
            .execute_plugin("wordcount", CallArgs::new().file_arg(text.clone()))
            .await?;
        samples.push(start.elapsed());
        if result["bytes"].as_u64() != Some(text.len() as u64) {
            bail!("wordcount read {} of {} bytes", result["bytes"], text.len());
        }
    }
    Ok(median_ms(samples))
}

async fn load_all_100(options: &Options, results: &mut Results) -> Result<()> {
    let home = BenchHome::new(options, "hundred", 100)?;
    // Only the hundred echo workers.
    for other in ["wordcount", "ticker", PLAIN_ECHO, BARE_HYPER] {
        std::fs::remove_file(home.root.join(format!("plugins/{other}.json")))?;
    }
    let manager = home.manager();
    let start = Instant::now();
    let loaded = manager.load_all(HashMap::new()).await;
    let elapsed = start.elapsed();
    let failed: Vec<&String> = loaded
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| name)
        .collect();
    if loaded.len() != 100 || !failed.is_empty() {
        bail!(
            "load_all loaded {} plugins; failed: {failed:?}",
            loaded.len()
        );
    }
    results.insert("load_all_100_ms", elapsed.as_secs_f64() * 1000.0, "ms");
    results.insert(
        "host_rss_100_mib",
        rss_mib(std::process::id()).unwrap_or(f64::NAN),
        "MiB",
    );
    manager.shutdown().await;
    Ok(())
}

/// A host process SIGKILLed -> its worker gone.
fn parent_death(options: &Options, results: &mut Results, reps: usize) -> Result<()> {
    let home = BenchHome::new(options, "death", 1)?;
    let mut samples = Vec::new();
    for _ in 0..reps {
        let mut host = Command::new(std::env::current_exe()?)
            .arg("host-child")
            .arg(&home.root)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(host.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let worker: u32 = line
            .trim()
            .parse()
            .with_context(|| format!("host said {line:?}"))?;
        let start = Instant::now();
        host.kill()?;
        while alive(worker) {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("worker {worker} outlived its host by 10 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(start.elapsed());
        host.wait()?;
    }
    results.insert("parent_death_ms", median_ms(samples), "ms");
    Ok(())
}

/// Keys of the Python script's output that are figures of the original.
pub fn python_keys(value: &Value) -> Vec<(String, f64, String)> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(key, entry)| {
                    let number = entry.get("value")?.as_f64()?;
                    let unit = entry.get("unit")?.as_str()?.to_owned();
                    Some((key.clone(), number, unit))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// QueueScheduler: one execution holds the GPU memory a waiter needs; the time from
/// its release to the waiter's admission. The poll interval is long, so only the
/// release notification can explain a fast admission.
pub async fn queue_wake(options: &Options, results: &mut Results) -> Result<()> {
    use cjm_manager::{ManualStats, PluginMeta, QueueScheduler, ResourceScheduler};

    let scheduler = Arc::new(
        QueueScheduler::new(Duration::from_secs(30)).with_poll_interval(Duration::from_secs(10)),
    );
    let stats = Arc::new(ManualStats::with_free(Some(8000.0), None));
    let mut meta = PluginMeta::from(&cjm_manager::Manifest::native(
        "needy",
        "0",
        PathBuf::from("/bin/true"),
    ));
    meta.resources.requires_gpu = true;
    meta.resources.min_gpu_vram_mb = 6000;
    let meta = Arc::new(meta);
    let mut samples = Vec::new();
    for _ in 0..if options.quick { 20 } else { 200 } {
        let holder = scheduler.allocate(&meta, stats.as_ref()).await?;
        let waiter = {
            let (scheduler, stats, meta) = (
                Arc::clone(&scheduler),
                Arc::clone(&stats),
                Arc::clone(&meta),
            );
            tokio::spawn(async move {
                let reservation = scheduler.allocate(&meta, stats.as_ref()).await;
                (Instant::now(), reservation)
            })
        };
        while scheduler.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // Let the waiter park on its notification.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let released = Instant::now();
        drop(holder);
        let (admitted, reservation) = waiter.await?;
        drop(reservation?);
        samples.push(admitted.duration_since(released));
    }
    results.insert("queue_wake_ms", median_ms(samples), "ms");
    Ok(())
}
