//! `cjm-ctl jobs --follow`: jobs' changes as they happen, from whichever host runs
//! them. Through a daemon, its event stream (states, progress, block reasons, the
//! moment they happen); without one, the journal, looked at a few times a second
//! (states only: the journal keeps no progress).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use cjm_daemon::DaemonClient;
use cjm_manager::jobs::recent_jobs;
use serde_json::{json, Value};

use crate::out::outln;

/// How often the journal is read when no daemon serves.
const JOURNAL_EVERY: Duration = Duration::from_millis(250);
/// The journal's newest jobs compared at each look.
const JOURNAL_WINDOW: usize = 200;

/// One change, as text or as a JSON line.
fn print_change(change: &Value, json: bool) -> Result<()> {
    if json {
        outln!("{change}")?;
        return Ok(());
    }
    let id = change["id"].as_str().unwrap_or("?");
    let plugin = change["plugin"].as_str().unwrap_or("?");
    let what = if let Some(state) = change["state"].as_str() {
        match change["error"].as_str() {
            Some(error) => format!("{state}: {error}"),
            None => state.to_owned(),
        }
    } else if let Some(progress) = change.get("progress") {
        let message = progress["message"].as_str().unwrap_or_default();
        match progress["fraction"].as_f64() {
            Some(fraction) if fraction >= 0.0 => {
                format!("progress {:.0}% {message}", fraction * 100.0)
            }
            _ => format!("progress {message}"),
        }
    } else if let Some(reason) = change["waiting"].as_str() {
        format!("waiting: {reason}")
    } else {
        return Ok(());
    };
    outln!("{id}  {plugin}  {}", what.trim_end())?;
    Ok(())
}

pub(super) fn run(daemon: Option<DaemonClient>, journal: &Path, json: bool) -> Result<ExitCode> {
    crate::daemon_link::block_on(async {
        let follow = async {
            match &daemon {
                Some(client) => from_daemon(client, json).await,
                None => from_journal(journal, json).await,
            }
        };
        tokio::select! {
            result = follow => result.map(|()| ExitCode::SUCCESS),
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        }
    })?
}

async fn from_daemon(client: &DaemonClient, json: bool) -> Result<()> {
    let mut events = client.events("/api/events", None).await?;
    // Said once subscribed: from here on no change is missed.
    eprintln!(
        "cjm-ctl: following the jobs of the daemon at {} (Ctrl-C to stop)",
        client.socket().display()
    );
    // The daemon's events name jobs by their number there; the journal's id is what
    // `cjm-ctl jobs` shows, asked once per job.
    let mut journal_ids: HashMap<u64, String> = HashMap::new();
    while let Some(event) = events.next().await {
        let event = event.context("the daemon's event stream broke")?;
        if event.kind != "job" {
            continue;
        }
        let data: Value = serde_json::from_str(&event.data)?;
        let Some(number) = data["job"].as_u64() else {
            continue;
        };
        let id = match journal_ids.get(&number) {
            Some(id) => id.clone(),
            None => {
                let id = match client.get(&format!("/api/jobs/{number}")).await {
                    Ok(job) => job["journal_id"].as_str().map(str::to_owned),
                    Err(err) => {
                        tracing::debug!("job {number}: {err}");
                        None
                    }
                };
                let id = id.unwrap_or_else(|| format!("job-{number}"));
                journal_ids.insert(number, id.clone());
                id
            }
        };
        let plugin = &data["plugin"];
        let change = match data["change"].as_str() {
            Some("state") => json!({"id": id, "plugin": plugin, "state": data["state"]}),
            Some("progress") => json!({"id": id, "plugin": plugin, "progress": {
                "fraction": data["fraction"], "message": data["message"],
            }}),
            Some("blocked") if data["reason"].is_string() => {
                json!({"id": id, "plugin": plugin, "waiting": data["reason"]})
            }
            _ => continue,
        };
        print_change(&change, json)?;
    }
    Ok(())
}

async fn from_journal(journal: &Path, json: bool) -> Result<()> {
    // What is there when following starts is not news.
    let mut known: HashMap<String, String> = recent_jobs(journal, JOURNAL_WINDOW)?
        .into_iter()
        .map(|job| (job.id, job.state.as_str().to_owned()))
        .collect();
    eprintln!(
        "cjm-ctl: following the journal {} (Ctrl-C to stop)",
        journal.display()
    );
    loop {
        tokio::time::sleep(JOURNAL_EVERY).await;
        let mut jobs = recent_jobs(journal, JOURNAL_WINDOW)?;
        // Oldest first, as they happened.
        jobs.reverse();
        for job in jobs {
            let state = job.state.as_str();
            if known.get(&job.id).map(String::as_str) == Some(state) {
                continue;
            }
            known.insert(job.id.clone(), state.to_owned());
            print_change(
                &json!({"id": job.id, "plugin": job.plugin, "state": state}),
                json,
            )?;
        }
    }
}
