//! `cjm-ctl jobs show ID`: one job's timeline from the journal and its own log
//! records from the diagnostics beside it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use argh::FromArgs;
use cjm_manager::jobs::diagnostics::path_beside;
use cjm_manager::jobs::{job_diagnostics, journal_entry, DiagnosticRecord, JournalEntry};
use cjm_metadata::CjmHome;
use serde_json::json;

use super::costs::Costs;
use crate::out::outln;

/// Records read at a time.
const PAGE: usize = 1000;
/// How often --follow looks for new records.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Show one job: its states with their times, its attempts, and the log records of
/// its calls (only its own, whatever else its worker ran at the same time).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ShowCommand {
    /// the job's id, as `cjm-ctl jobs` lists it
    #[argh(positional)]
    id: String,
    /// keep printing new records until the job has ended
    #[argh(switch, short = 'f')]
    follow: bool,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
}

pub fn run(command: ShowCommand) -> Result<ExitCode> {
    let journal = CjmHome::from_env()?.journal_path();
    let diagnostics = path_beside(&journal);
    let Some(mut job) = journal_entry(&journal, &command.id)? else {
        bail!(
            "no job {:?} in the journal {} (`cjm-ctl jobs` lists the recent ones)",
            command.id,
            journal.display()
        );
    };
    let mut records = Vec::new();
    let mut after = None;
    let dropped = loop {
        let page = job_diagnostics(&diagnostics, &job.id, after, PAGE)?;
        after = page.last_seq().or(after);
        let full = page.records.len() == PAGE;
        records.extend(page.records);
        if !full {
            break page.dropped;
        }
    };
    let costs = Costs::read(&journal, &job.id)?;
    if command.json {
        let (metrics, accounts) = costs.json();
        let calls = attempts(&records);
        let records: Vec<_> = records.iter().map(record_json).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "job": super::as_json(&job),
                "attempts": calls,
                "call_metrics": metrics,
                "accounts": accounts,
                "dropped": dropped,
                "records": records,
            }))?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    print_timeline(&job, &records, dropped)?;
    costs.print()?;
    for record in &records {
        print_record(record)?;
    }
    if !command.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow while the job has not ended, then once more for its last lines.
    loop {
        let ended = job.finished_at.is_some();
        let page = job_diagnostics(&diagnostics, &job.id, after, PAGE)?;
        after = page.last_seq().or(after);
        for record in &page.records {
            print_record(record)?;
        }
        if ended && page.records.len() < PAGE {
            outln!("  ended: {}", super::state(&job))?;
            break;
        }
        std::thread::sleep(FOLLOW_EVERY);
        if let Some(now) = journal_entry(&journal, &command.id)? {
            job = now;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The call ids the records name, in the order they first appear.
fn attempts(records: &[DiagnosticRecord]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for call in records.iter().filter_map(|record| record.call_id.as_ref()) {
        if !seen.contains(call) {
            seen.push(call.clone());
        }
    }
    seen
}

fn print_timeline(job: &JournalEntry, records: &[DiagnosticRecord], dropped: u64) -> Result<()> {
    outln!(
        "job {} (plugin {}, priority {})",
        job.id,
        job.plugin,
        job.priority
    )?;
    outln!("  submitted  {}", super::clock(job.submitted_at))?;
    if let Some(started) = job.started_at {
        outln!(
            "  running    {}  (+{:.3} s)",
            super::clock(started),
            started - job.submitted_at
        )?;
    }
    match job.finished_at {
        Some(finished) => outln!(
            "  {:<10} {}  (+{:.3} s){}",
            job.state.as_str(),
            super::clock(finished),
            finished - job.submitted_at,
            job.error
                .as_ref()
                .map(|error| format!(": {error}"))
                .or_else(|| job.cancellation.as_ref().map(|how| format!(" ({how})")))
                .unwrap_or_default()
        )?,
        None => outln!("  {:<10} (not ended)", job.state.as_str())?,
    }
    let attempts = attempts(records);
    if !attempts.is_empty() {
        outln!("attempts: {}", attempts.join(", "))?;
    }
    outln!(
        "log: {} record(s){}",
        records.len(),
        if dropped > 0 {
            format!(", {dropped} older one(s) dropped")
        } else {
            String::new()
        }
    )?;
    Ok(())
}

fn print_record(record: &DiagnosticRecord) -> Result<()> {
    let target = if record.target.is_empty() {
        String::new()
    } else {
        format!(" {}:", record.target)
    };
    outln!(
        "  {} {:<6}{} {}",
        record.ts,
        record.level,
        target,
        record.message
    )?;
    Ok(())
}

fn record_json(record: &DiagnosticRecord) -> serde_json::Value {
    json!({
        "seq": record.seq,
        "ts": record.ts,
        "level": record.level,
        "target": record.target,
        "call_id": record.call_id,
        "message": record.message,
    })
}
