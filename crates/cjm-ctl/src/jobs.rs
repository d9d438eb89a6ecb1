mod show;

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::jobs::{recent_jobs, JournalEntry};
use cjm_metadata::CjmHome;
use serde_json::json;

use crate::out::outln;
use crate::table::print_table;

/// List recent jobs from the job journal ($CJM_HOME/jobs.sqlite3), newest first:
/// plugin, state, duration and error. Jobs a host left queued or running when it
/// ended show as interrupted once another host has opened the journal.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "jobs")]
pub struct JobsCommand {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
    /// how many jobs to show (default 20)
    #[argh(option, short = 'n', default = "20")]
    count: usize,
    #[argh(subcommand)]
    show: Option<JobsSubcommand>,
}

/// What `cjm-ctl jobs` does besides listing.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum JobsSubcommand {
    Show(show::ShowCommand),
}

pub fn run(command: JobsCommand) -> Result<ExitCode> {
    if let Some(JobsSubcommand::Show(show)) = command.show {
        return show::run(show);
    }
    let path = CjmHome::from_env()?.journal_path();
    let jobs = recent_jobs(&path, command.count)?;
    if command.json {
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
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration_s": job.duration().map(|duration| duration.as_secs_f64()),
        "error_category": job.error_category,
        "error": job.error,
        "cancellation": job.cancellation,
        "host_pid": job.host_pid,
    })
}

/// `2026-12-03T10:15:04Z`.
pub(crate) fn clock(seconds_since_epoch: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(seconds_since_epoch.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}
