//! The job queue's figures: submitting, throughput, cancellation, progress, and a
//! host's memory with 10 000 jobs waiting.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use cjm_manager::jobs::{JobChange, JobId, JobOptions, JobState, Jobs};
use cjm_manager::{CallArgs, CjmHome, ManagerOptions, PluginManager};

use crate::measure::{median_ms, rss_mib};
use crate::report::Results;
use crate::system::BenchHome;
use crate::Options;

/// Jobs queued for `job_submit_us` and `host_rss_10k_queued_mib`.
const QUEUED: usize = 10_000;

pub async fn measure(options: &Options, results: &mut Results) -> Result<()> {
    let reps = |full: usize, quick: usize| if options.quick { quick } else { full };
    let home = BenchHome::new(options, "jobs", 1)?;
    let manager = home.manager();
    manager.load_plugin("ticker", None).await?;
    manager.load_plugin("echo", None).await?;
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default()
            .journal(home.root.join("jobs.sqlite3"))
            .concurrency("echo", 4)
            .max_queued(QUEUED + 10)
            .cancel_timeout(Duration::ZERO),
    )
    .await?;
    // Also beside the daemon's submit, in the same run (the daemon issue).
    if options.wants(&["job_submit_us", "daemon_submit_running_us"]) {
        results.insert("job_submit_us", submit_us(&jobs, reps(3, 1)).await?, "us");
    }
    if options.wants(&["jobs_per_s"]) {
        results.insert(
            "jobs_per_s",
            jobs_per_s(&jobs, reps(5_000, 500)).await?,
            "jobs/s",
        );
    }
    if options.wants(&["cancel_coop_ms"]) {
        let samples = cancel_samples(&jobs, false, reps(10, 3)).await?;
        results.insert("cancel_coop_ms", median_ms(samples), "ms");
    }
    if options.wants(&["cancel_forced_ms"]) {
        let samples = forced_cancel_samples(&jobs, &manager, reps(5, 2)).await?;
        results.insert("cancel_forced_ms", median_ms(samples), "ms");
    }
    if options.wants(&["progress_latency_ms"]) {
        results.insert(
            "progress_latency_ms",
            progress_latency_ms(&jobs, reps(200, 40)).await?,
            "ms",
        );
    }
    drop(jobs);
    manager.shutdown().await;
    if options.wants(&["host_rss_10k_queued_mib"]) {
        results.insert("host_rss_10k_queued_mib", queued_host_rss(&home)?, "MiB");
    }
    Ok(())
}

/// A ticker job that runs until cancelled, and its id once it runs.
async fn blocker(jobs: &Jobs, deaf: bool) -> Result<JobId> {
    let call = CallArgs::new().arg(100_000).arg(1_000).arg(deaf);
    let id = jobs.submit("ticker", call, 0)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs.status(id).map(|status| status.state) != Some(JobState::Running) {
        if Instant::now() > deadline {
            bail!("the ticker job never started: {:?}", jobs.status(id));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(id)
}

/// Microseconds per `submit` of 10 000 jobs behind a running one.
async fn submit_us(jobs: &Jobs, rounds: usize) -> Result<f64> {
    let mut per_job = Vec::new();
    for _ in 0..rounds {
        let running = blocker(jobs, false).await?;
        let start = Instant::now();
        let mut queued = Vec::with_capacity(QUEUED);
        for _ in 0..QUEUED {
            queued.push(jobs.submit("ticker", CallArgs::new().arg(1).arg(0), 0)?);
        }
        per_job.push(start.elapsed().as_secs_f64() * 1e6 / QUEUED as f64);
        for id in queued.into_iter().chain([running]) {
            jobs.cancel(id)?;
        }
        jobs.wait(running).await?;
    }
    per_job.sort_by(f64::total_cmp);
    Ok(per_job[per_job.len() / 2])
}

/// Trivial jobs through the queue, four at once on one echo worker.
async fn jobs_per_s(jobs: &Jobs, count: usize) -> Result<f64> {
    let start = Instant::now();
    let ids: Vec<JobId> = (0..count)
        .map(|_| jobs.submit("echo", CallArgs::new().arg("x"), 0))
        .collect::<Result<_, _>>()?;
    for id in ids {
        let ended = jobs.wait(id).await?;
        if ended.status.state != JobState::Succeeded {
            bail!("an echo job ended {:?}", ended.status);
        }
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// From `cancel` to the job's end, for a plugin that stops when asked.
async fn cancel_samples(jobs: &Jobs, deaf: bool, reps: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let id = blocker(jobs, deaf).await?;
        let start = Instant::now();
        jobs.cancel(id)?;
        let ended = jobs.wait(id).await?;
        samples.push(start.elapsed());
        if ended.status.state != JobState::Cancelled {
            bail!("a cancelled job ended {:?}", ended.status);
        }
    }
    Ok(samples)
}

/// From `cancel` of a job whose plugin does not stop to its worker replaced and
/// ready (the cancel timeout set to zero, so the force comes at once).
async fn forced_cancel_samples(
    jobs: &Jobs,
    manager: &PluginManager,
    reps: usize,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let id = blocker(jobs, true).await?;
        let old = manager
            .worker_info("ticker")
            .context("ticker not loaded")?
            .pid;
        let start = Instant::now();
        jobs.cancel(id)?;
        jobs.wait(id).await?;
        while manager
            .worker_info("ticker")
            .is_none_or(|worker| worker.pid == old)
            || !manager.is_running("ticker")
        {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the ticker worker was not replaced");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// From the plugin's report (its message holds the time it was made) to the event
/// the host's listener receives, median over `ticks` reports 5 ms apart.
async fn progress_latency_ms(jobs: &Jobs, ticks: usize) -> Result<f64> {
    let id = jobs.submit("ticker", CallArgs::new().arg(ticks).arg(5), 0)?;
    let mut events = jobs.events_for(id);
    let mut latencies = Vec::new();
    while let Some(event) = events.next().await {
        match event?.change {
            JobChange::Progress { message, .. } => {
                let sent: u128 = message.parse().context("a tick's time")?;
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
                latencies.push(now.saturating_sub(sent) as f64 / 1e6);
            }
            JobChange::State(state) if state.is_final() => break,
            _ => {}
        }
    }
    if latencies.len() < ticks / 2 {
        bail!(
            "only {} of {ticks} progress reports arrived",
            latencies.len()
        );
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies[latencies.len() / 2])
}

/// The RSS of a fresh host process with 10 000 jobs waiting (`jobs-child`).
fn queued_host_rss(home: &BenchHome) -> Result<f64> {
    let output = Command::new(std::env::current_exe()?)
        .arg("jobs-child")
        .arg(&home.root)
        .output()?;
    if !output.status.success() {
        bail!(
            "jobs-child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("jobs-child's RSS")
}

/// `cjm-bench jobs-child HOME`: queue 10 000 jobs behind a running one, print this
/// process's RSS in MiB.
pub fn child(home: String) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut options = ManagerOptions::with_home(CjmHome::at(&home));
        options.search_paths = vec![CjmHome::at(&home).plugins_dir()];
        let manager = PluginManager::new(options);
        manager.discover_manifests();
        manager.load_plugin("ticker", None).await?;
        let jobs = Jobs::new(
            manager.clone(),
            JobOptions::default()
                .journal(std::path::Path::new(&home).join("child-jobs.sqlite3"))
                .max_queued(QUEUED),
        )
        .await?;
        let running = blocker(&jobs, false).await?;
        for _ in 0..QUEUED {
            jobs.submit("ticker", CallArgs::new().arg(1).arg(0), 0)?;
        }
        jobs.sync_journal().await;
        let rss = rss_mib(std::process::id()).context("own RSS")?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{rss:.2}")?;
        stdout.flush()?;
        jobs.cancel(running)?;
        drop(jobs);
        manager.shutdown().await;
        Ok(())
    })
}
