//! The daemon's figures (`cjm-ctl serve`, release build, on its Unix socket):
//! - `daemon_submit_running_us`: `POST /api/jobs` until `GET /api/events` says the
//!   job runs, beside `job_submit_running_us`, the same path in-process (submit until
//!   the job's event says it runs), in the same run;
//! - `daemon_sse_latency_ms` / `_p99_ms`: from the ticker plugin's progress report
//!   (its message is the report's wall-clock time) to the SSE client reading it;
//! - `daemon_idle_rss_mib`: a daemon on an empty home, ready and idle for a moment;
//! - `cli_exec_daemon_ms` / `cli_exec_local_ms`: a whole `cjm-ctl exec` through the
//!   daemon (warm worker) and with `--local` (host and worker started per command),
//!   alternately.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use cjm_daemon::{EventStream, SseEvent};
use cjm_manager::jobs::{JobChange, JobOptions, JobState, Jobs};
use cjm_manager::CallArgs;
use serde_json::{json, Value};

use crate::measure::{anonymous_mib, median_ms, percentiles_us, rss_mib};
use crate::report::Results;
use crate::served::Served;
use crate::system::BenchHome;
use crate::Options;

/// How long one job may take to run or end before the measurement gives up.
const JOB_LIMIT: Duration = Duration::from_secs(30);
/// How long a daemon on an empty home idles before its RSS is read: long enough for
/// its start-up allocations to settle (the first CPU reading, the event pump).
const IDLE_FOR: Duration = Duration::from_secs(1);

pub async fn measure(options: &Options, results: &mut Results) -> Result<()> {
    let reps = |full: usize, quick: usize| if options.quick { quick } else { full };
    let cjm_ctl = options.bin_dir.join("cjm-ctl");
    if options.wants(&["daemon_idle_rss_mib", "daemon_idle_anon_mib"]) {
        idle_rss(options, &cjm_ctl, reps(3, 1), results).await?;
    }
    let submit = options.wants(&["daemon_submit_running_us", "job_submit_running_us"]);
    let sse = options.wants(&["daemon_sse_latency_ms", "daemon_sse_latency_p99_ms"]);
    let exec = options.wants(&["cli_exec_daemon_ms", "cli_exec_local_ms"]);
    if !(submit || sse || exec) {
        return Ok(());
    }
    let home = BenchHome::new(options, "daemon", 1)?;
    let served = Served::start(&cjm_ctl, &home.root, &["--load", "ticker"]).await?;
    if submit {
        submit_running(&home, &served, reps(300, 30), results).await?;
    }
    if sse {
        let samples = sse_latency(&served, reps(400, 60)).await?;
        let (p50, p99) = percentiles_us(samples);
        results.insert("daemon_sse_latency_ms", p50 / 1000.0, "ms");
        results.insert("daemon_sse_latency_p99_ms", p99 / 1000.0, "ms");
    }
    if exec {
        cli_exec(&cjm_ctl, &served, reps(20, 4), results).await?;
    }
    drop(served);
    Ok(())
}

/// A daemon with no plugins, ready and idle: its resident and its own (anonymous)
/// memory, median over `starts` fresh daemons.
async fn idle_rss(
    options: &Options,
    cjm_ctl: &Path,
    starts: usize,
    results: &mut Results,
) -> Result<()> {
    let home = options.out.with_file_name("home-daemon-empty");
    let (mut rss, mut anon) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home)?;
        let served = Served::start(cjm_ctl, &home, &[]).await?;
        tokio::time::sleep(IDLE_FOR).await;
        rss.push(rss_mib(served.pid()).context("the daemon's RSS")?);
        anon.push(anonymous_mib(served.pid()).context("the daemon's anonymous memory")?);
    }
    results.insert("daemon_idle_rss_mib", median(rss), "MiB");
    results.insert("daemon_idle_anon_mib", median(anon), "MiB");
    Ok(())
}

/// Submit until running, through the API and in-process, in alternating rounds so
/// that both see the same machine.
async fn submit_running(
    home: &BenchHome,
    served: &Served,
    jobs_count: usize,
    results: &mut Results,
) -> Result<()> {
    const ROUNDS: usize = 3;
    let manager = home.manager();
    manager.load_plugin("ticker", None).await?;
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().journal(home.root.join("inproc-jobs.sqlite3")),
    )
    .await?;
    let mut events = served.client.events("/api/events", None).await?;
    let (mut api, mut local) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..jobs_count / ROUNDS {
            api.push(api_submit_running(served, &mut events).await?);
        }
        for _ in 0..jobs_count / ROUNDS {
            local.push(local_submit_running(&jobs).await?);
        }
    }
    drop(jobs);
    manager.shutdown().await;
    results.insert("daemon_submit_running_us", percentiles_us(api).0, "us");
    results.insert("job_submit_running_us", percentiles_us(local).0, "us");
    Ok(())
}

/// A one-tick ticker job: from `POST /api/jobs` to the SSE event saying it runs; then
/// its end is awaited, so that the next one starts on an idle queue.
async fn api_submit_running(served: &Served, events: &mut EventStream) -> Result<Duration> {
    let body = json!({"plugin": "ticker", "args": [1, 0]});
    let start = Instant::now();
    let submitted = served.client.post("/api/jobs", Some(&body)).await?;
    let id = submitted["id"]
        .as_u64()
        .with_context(|| format!("POST /api/jobs answered {submitted} (no id)"))?;
    wait_state(events, id, |state| state == "running").await?;
    let elapsed = start.elapsed();
    let ended = wait_state(events, id, is_final).await?;
    if ended != "succeeded" {
        bail!("ticker job {id} ended {ended}");
    }
    Ok(elapsed)
}

/// The same in-process: from `submit` to the job's event saying it runs.
async fn local_submit_running(jobs: &Jobs) -> Result<Duration> {
    let mut events = jobs.events();
    let start = Instant::now();
    let id = jobs.submit("ticker", CallArgs::new().arg(1).arg(0), 0)?;
    let deadline = tokio::time::Instant::now() + JOB_LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .with_context(|| format!("{id} did not run within {JOB_LIMIT:?}"))?
            .context("the job events ended")??;
        if event.job == id && event.change == JobChange::State(JobState::Running) {
            break;
        }
    }
    let elapsed = start.elapsed();
    let ended = jobs.wait(id).await?;
    if ended.status.state != JobState::Succeeded {
        bail!("ticker {id} ended {:?}", ended.status);
    }
    Ok(elapsed)
}

/// Read `events` until job `id` reaches a state `wanted` accepts; that state.
async fn wait_state(
    events: &mut EventStream,
    id: u64,
    wanted: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + JOB_LIMIT;
    loop {
        let event = next_event(events, deadline).await?;
        if let Some((job, state)) = state_change(&event) {
            if job == id && wanted(&state) {
                return Ok(state);
            }
        }
    }
}

async fn next_event(events: &mut EventStream, deadline: tokio::time::Instant) -> Result<SseEvent> {
    let event = tokio::time::timeout_at(deadline, events.next())
        .await
        .context("no event from the daemon in time")?
        .context("the daemon ended the event stream")??;
    if event.kind == "lagged" {
        bail!("the event stream lagged: {}", event.data);
    }
    Ok(event)
}

/// One ticker job reporting `ticks` times, 5 ms apart: for each report, the time from
/// the plugin's report (its message) to this client reading the event.
async fn sse_latency(served: &Served, ticks: usize) -> Result<Vec<Duration>> {
    let mut events = served.client.events("/api/events", None).await?;
    let body = json!({"plugin": "ticker", "args": [ticks, 5]});
    let submitted = served.client.post("/api/jobs", Some(&body)).await?;
    let id = submitted["id"]
        .as_u64()
        .with_context(|| format!("POST /api/jobs answered {submitted} (no id)"))?;
    let deadline =
        tokio::time::Instant::now() + JOB_LIMIT + Duration::from_millis(10 * ticks as u64);
    let mut samples = Vec::with_capacity(ticks);
    loop {
        let event = next_event(&mut events, deadline).await?;
        let received = SystemTime::now().duration_since(UNIX_EPOCH)?;
        if let Some(latency) = report_latency(&event, id, received)? {
            samples.push(latency);
        } else if let Some((job, state)) = state_change(&event) {
            if job == id && is_final(&state) {
                break;
            }
        }
    }
    // Reports may be merged when the reader falls behind; most must arrive.
    if samples.len() < ticks / 2 {
        bail!(
            "only {} of {ticks} progress reports arrived over SSE",
            samples.len()
        );
    }
    Ok(samples)
}

/// `cjm-ctl exec echo` through the daemon and with `--local`, alternately (ABBA, so
/// that neither always runs on the cache the other warmed); each the whole command.
async fn cli_exec(
    cjm_ctl: &Path,
    served: &Served,
    runs: usize,
    results: &mut Results,
) -> Result<()> {
    let home = &served.home;
    let before = daemon_jobs(served, "echo").await?;
    // The first call through the daemon loads echo there; it stays loaded.
    let warm = worker_pid(&exec_once(cjm_ctl, home, Mode::Daemon)?.1)?;
    let (mut daemon, mut local) = (Vec::new(), Vec::new());
    for mode in alternation(runs) {
        let (elapsed, stdout) = exec_once(cjm_ctl, home, mode)?;
        // Through the daemon, the warm worker answers; with --local, a fresh one.
        let pid = worker_pid(&stdout)?;
        if (mode == Mode::Daemon) != (pid == warm) {
            bail!("cjm-ctl exec ({mode:?}) ran on worker {pid}, the daemon's is {warm}");
        }
        match mode {
            Mode::Daemon => daemon.push(elapsed),
            Mode::Local => local.push(elapsed),
        }
    }
    // The daemon's own count proves the runs without --local went through it.
    let through = daemon_jobs(served, "echo").await? - before;
    if through != runs + 1 {
        bail!(
            "{through} echo jobs ran in the daemon, expected {}",
            runs + 1
        );
    }
    results.insert("cli_exec_daemon_ms", median_ms(daemon), "ms");
    results.insert("cli_exec_local_ms", median_ms(local), "ms");
    Ok(())
}

/// How many of the daemon's jobs ran `plugin`.
async fn daemon_jobs(served: &Served, plugin: &str) -> Result<usize> {
    let listed = served.client.get("/api/jobs").await?;
    let jobs = listed
        .get("jobs")
        .and_then(Value::as_array)
        .with_context(|| format!("GET /api/jobs answered {listed}"))?;
    Ok(jobs.iter().filter(|job| job["plugin"] == plugin).count())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Daemon,
    Local,
}

/// One `cjm-ctl exec echo --args '["hi"]'`: its wall time and what it printed.
fn exec_once(cjm_ctl: &Path, home: &Path, mode: Mode) -> Result<(Duration, String)> {
    let mut command = Command::new(cjm_ctl);
    command
        .args(["exec", "echo", "--args", r#"["hi"]"#])
        .env("CJM_HOME", home)
        .current_dir(home)
        .stdin(Stdio::null());
    if mode == Mode::Local {
        command.arg("--local");
    }
    let start = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", cjm_ctl.display()))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "cjm-ctl exec ({mode:?}) failed: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok((
        elapsed,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// The worker that answered, from cjm-echo's result (`processed_by_pid`), which must
/// be the echo of `hi`.
fn worker_pid(stdout: &str) -> Result<u64> {
    let result: Value = serde_json::from_str(stdout)
        .with_context(|| format!("cjm-ctl exec printed {stdout:?}, not JSON"))?;
    if result["result"] != "hi" {
        bail!("cjm-ctl exec echo printed {result}, not the echo of hi");
    }
    result["processed_by_pid"]
        .as_u64()
        .with_context(|| format!("cjm-ctl exec echo printed {result}, without its pid"))
}

/// `runs` of each mode, in pairs that swap which goes first: D L L D D L ...
fn alternation(runs: usize) -> Vec<Mode> {
    (0..runs)
        .flat_map(|pair| {
            if pair % 2 == 0 {
                [Mode::Daemon, Mode::Local]
            } else {
                [Mode::Local, Mode::Daemon]
            }
        })
        .collect()
}

fn is_final(state: &str) -> bool {
    JobState::from_name(state).is_some_and(JobState::is_final)
}

/// The job and its new state, when `event` is a job's state change.
fn state_change(event: &SseEvent) -> Option<(u64, String)> {
    if event.kind != "job" {
        return None;
    }
    let data: Value = serde_json::from_str(&event.data).ok()?;
    if data["change"] != "state" {
        return None;
    }
    Some((data["job"].as_u64()?, data["state"].as_str()?.to_owned()))
}

/// For a progress event of job `id`: `received` less the report's time, which the
/// ticker writes as nanoseconds since the Unix epoch in the message.
fn report_latency(event: &SseEvent, id: u64, received: Duration) -> Result<Option<Duration>> {
    if event.kind != "job" {
        return Ok(None);
    }
    let data: Value = serde_json::from_str(&event.data)
        .with_context(|| format!("a job event's data is not JSON: {}", event.data))?;
    if data["change"] != "progress" || data["job"].as_u64() != Some(id) {
        return Ok(None);
    }
    let message = data["message"].as_str().unwrap_or_default();
    let sent: u128 = message
        .parse()
        .with_context(|| format!("a tick's message {message:?} is not a time in nanoseconds"))?;
    let late = received.as_nanos().saturating_sub(sent);
    Ok(Some(Duration::from_nanos(
        u64::try_from(late).unwrap_or(u64::MAX),
    )))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job(data: Value) -> SseEvent {
        SseEvent {
            id: Some(String::from("s:1")),
            kind: String::from("job"),
            data: data.to_string(),
        }
    }

    #[test]
    fn a_state_change_names_its_job_and_state_and_nothing_else_does() {
        let running =
            job(json!({"job": 7, "plugin": "ticker", "change": "state", "state": "running"}));
        assert_eq!(state_change(&running), Some((7, String::from("running"))));
        let progress =
            job(json!({"job": 7, "change": "progress", "fraction": 0.5, "message": "1"}));
        assert_eq!(state_change(&progress), None);
        let plugin = SseEvent {
            kind: String::from("plugin"),
            ..running
        };
        assert_eq!(state_change(&plugin), None);
    }

    #[test]
    fn a_reports_latency_is_its_receipt_less_the_time_in_its_message() {
        let sent = Duration::from_secs(1_700_000_000);
        let event = job(json!({"job": 3, "change": "progress", "fraction": 0.1,
            "message": sent.as_nanos().to_string()}));
        let received = sent + Duration::from_micros(1_250);
        assert_eq!(
            report_latency(&event, 3, received).unwrap(),
            Some(Duration::from_micros(1_250))
        );
        // Another job's report, or a state change, is not a sample.
        assert_eq!(report_latency(&event, 4, received).unwrap(), None);
        let state = job(json!({"job": 3, "change": "state", "state": "running"}));
        assert_eq!(report_latency(&state, 3, received).unwrap(), None);
        // A clock that went back counts as no delay, not as a huge one.
        assert_eq!(
            report_latency(&event, 3, sent - Duration::from_millis(1)).unwrap(),
            Some(Duration::ZERO)
        );
        // A message that is not a time is an error, not a sample.
        let garbled = job(json!({"job": 3, "change": "progress", "message": "tick"}));
        assert!(report_latency(&garbled, 3, received).is_err());
    }

    #[test]
    fn the_modes_alternate_in_pairs_that_swap_who_goes_first() {
        use Mode::{Daemon as D, Local as L};
        assert_eq!(alternation(3), vec![D, L, L, D, D, L]);
        let modes = alternation(20);
        assert_eq!(modes.iter().filter(|mode| **mode == D).count(), 20);
        assert_eq!(modes.iter().filter(|mode| **mode == L).count(), 20);
    }

    #[test]
    fn the_worker_is_read_from_the_echo_and_a_wrong_answer_is_an_error() {
        let echo = r#"{"config_used": {"prefix": ""}, "processed_by_pid": 28009, "result": "hi"}"#;
        assert_eq!(worker_pid(echo).unwrap(), 28009);
        assert!(worker_pid(r#"{"processed_by_pid": 1, "result": "ho"}"#).is_err());
        assert!(worker_pid(r#"{"result": "hi"}"#).is_err());
        assert!(worker_pid("Error: no plugin echo").is_err());
    }

    #[test]
    fn final_states_are_the_jobs_own() {
        assert!(is_final("succeeded") && is_final("cancelled") && is_final("failed"));
        assert!(!is_final("running") && !is_final("queued") && !is_final("nonsense"));
    }
}
