mod cancel;
mod costs;
mod follow;
mod show;

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::jobs::{
    history, job_counts, recent_jobs, request_reorder, HistoryQuery, JobState, JournalEntry,
};
use cjm_metadata::CjmHome;
use serde_json::json;

use crate::out::outln;
use crate::table::print_table;

/// List recent jobs from the job journal ($CJM_HOME/jobs.sqlite3), newest first:
/// plugin, state, duration and error. Jobs a host left queued or running when it
/// ended show as interrupted once another host has opened the journal. The journal
/// is the record whoever ran the jobs (a daemon or in-process commands), so listing
/// and `show` read it here; --follow and `cancel` go through the daemon when one
/// serves CJM_HOME.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "jobs")]
pub struct JobsCommand {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
    /// how many jobs to show (default 20)
    #[argh(option, short = 'n', default = "20")]
    count: usize,
    /// print jobs' changes as they happen, until Ctrl-C: through the daemon its
    /// events (states, progress, waits), else the journal's states
    #[argh(switch, short = 'f')]
    follow: bool,
    /// read the journal here even when a daemon serves CJM_HOME (--follow, cancel)
    #[argh(switch)]
    local: bool,
    #[argh(subcommand)]
    action: Option<JobsAction>,
}

/// What `cjm-ctl jobs` does besides listing.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum JobsAction {
    Show(show::ShowCommand),
    Stats(StatsCommand),
    History(HistoryCommand),
    Reorder(ReorderCommand),
    Cancel(cancel::CancelCommand),
}

/// Give a queued job of a running host another priority (higher goes first). The
/// host carries it out and answers through the journal; a job that is not queued
/// any more, or whose host is gone, is refused.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reorder")]
struct ReorderCommand {
    /// the job, as `cjm-ctl jobs` lists it
    #[argh(positional)]
    id: String,
    /// its new priority
    #[argh(positional)]
    priority: i32,
}

/// How many jobs of the journal are in each state.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
struct StatsCommand {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

/// The journal's jobs, newest first, a page at a time, filtered by plugin and state.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "history")]
struct HistoryCommand {
    /// only this plugin's jobs
    #[argh(option)]
    plugin: Option<String>,
    /// only jobs in this state (queued, admitted, running, succeeded, failed,
    /// cancelled, interrupted)
    #[argh(option)]
    state: Option<String>,
    /// how many jobs (default 20)
    #[argh(option, default = "20")]
    limit: usize,
    /// skip this many of the newest first (the next page: offset + limit)
    #[argh(option, default = "0")]
    offset: usize,
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

pub fn run(command: JobsCommand) -> Result<ExitCode> {
    let path = CjmHome::from_env()?.journal_path();
    match command.action {
        Some(JobsAction::Show(asked)) => return show::run(asked),
        Some(JobsAction::Stats(stats)) => {
            let counts = job_counts(&path)?;
            if stats.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"journal": path, "counts": counts}))?
                )?;
            } else {
                let rows: Vec<[String; 2]> = counts
                    .iter()
                    .map(|(state, count)| [state.clone(), count.to_string()])
                    .collect();
                print_table(&["STATE", "JOBS"], &rows)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(JobsAction::Reorder(asked)) => {
            // The host looks for requests every 100 ms while it has queued jobs.
            let wait = Duration::from_secs(5);
            request_reorder(&path, &asked.id, asked.priority, wait)??;
            outln!("{}: priority {}", asked.id, asked.priority)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(JobsAction::History(asked)) => {
            let mut query = HistoryQuery::default().page(asked.offset, asked.limit);
            if let Some(plugin) = asked.plugin {
                query = query.plugin(plugin);
            }
            if let Some(state) = &asked.state {
                let Some(state) = JobState::from_name(state) else {
                    anyhow::bail!("--state {state}: not a job state (queued, admitted, running, succeeded, failed, cancelled, interrupted)");
                };
                query = query.state(state);
            }
            return show(&path, history(&path, &query)?, asked.json);
        }
        Some(JobsAction::Cancel(asked)) => {
            return cancel::run(crate::daemon_link::find(command.local)?, asked);
        }
        None => {}
    }
    if command.follow {
        let daemon = crate::daemon_link::find(command.local)?;
        return follow::run(daemon, &path, command.json);
    }
    let jobs = recent_jobs(&path, command.count)?;
    show(&path, jobs, command.json)
}

fn show(path: &std::path::Path, jobs: Vec<JournalEntry>, json: bool) -> Result<ExitCode> {
    if json {
        let jobs: Vec<_> = jobs.iter().map(as_json).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"journal": path, "jobs": jobs}))?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        outln!("no jobs in {}", path.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|job| {
            [
                job.id.clone(),
                job.plugin.clone(),
                state(job),
                clock(job.submitted_at),
                job.duration().map(seconds).unwrap_or_default(),
                job.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["JOB", "PLUGIN", "STATE", "SUBMITTED", "DURATION", "ERROR"],
        &rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn state(job: &JournalEntry) -> String {
    match (&job.error_category, &job.cancellation) {
        (Some(category), _) => format!("{} ({category})", job.state),
        (None, Some(how)) => format!("{} ({how})", job.state),
        _ => job.state.to_string(),
    }
}

pub(crate) fn as_json(job: &JournalEntry) -> serde_json::Value {
    json!({
        "id": job.id,
        "plugin": job.plugin,
        "priority": job.priority,
        "state": job.state.as_str(),
        "submitted_at": to_millis(job.submitted_at),
        "started_at": job.started_at.map(to_millis),
        "finished_at": job.finished_at.map(to_millis),
        "duration_s": job.duration().map(millis_as_seconds),
        "error_category": job.error_category,
        "error": job.error,
        "cancellation": job.cancellation,
        "host_pid": job.host_pid,
    })
}

/// Seconds to the millisecond, as JSON shows them: `0.912`, not the float noise of
/// `0.91200000000000003`.
pub(crate) fn millis_as_seconds(duration: Duration) -> f64 {
    to_millis(duration.as_secs_f64())
}

/// `value` rounded to three decimals (seconds to the millisecond, MiB to the KiB).
pub(crate) fn to_millis(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `2026-12-03T10:15:04Z`.
pub(crate) fn clock(seconds_since_epoch: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(seconds_since_epoch.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_in_json_carry_no_float_noise() {
        // A duration between two times the journal keeps as seconds since the epoch.
        let noisy = Duration::from_secs_f64(1_796_645_025.0_f64 - 1_796_645_024.088);
        assert_ne!(json!(noisy.as_secs_f64()).to_string(), "0.912");
        assert_eq!(json!(millis_as_seconds(noisy)).to_string(), "0.912");
        assert_eq!(
            json!(to_millis(1_796_645_024.016_862_9)).to_string(),
            "1796645024.017"
        );
    }
}
