//! `cjm-ctl jobs cancel ID`: a job the daemon runs, cancelled (cooperatively, or
//! with --force its worker killed at once).

use std::process::ExitCode;

use anyhow::{bail, Result};
use argh::FromArgs;
use cjm_daemon::DaemonClient;

use crate::out::outln;

/// Cancel a job the daemon runs: the plugin is asked to stop (its worker killed if
/// it does not in time), or with --force killed at once. Needs a daemon: a job of
/// an in-process host is cancelled with Ctrl-C where it runs.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "cancel")]
pub struct CancelCommand {
    /// the job: its id as `cjm-ctl jobs` lists it, or the daemon's number
    #[argh(positional)]
    id: String,
    /// kill the worker at once instead of asking the plugin to stop
    #[argh(switch)]
    force: bool,
    /// print JSON instead of text
    #[argh(switch)]
    json: bool,
}

pub(super) fn run(daemon: Option<DaemonClient>, command: CancelCommand) -> Result<ExitCode> {
    let Some(client) = daemon else {
        bail!(
            "jobs cancel {}: no daemon serves CJM_HOME (`cjm-ctl serve`); a job of an \
             in-process host is cancelled with Ctrl-C in its terminal",
            command.id
        );
    };
    crate::daemon_link::block_on(async {
        let number = daemon_number(&client, &command.id).await?;
        let force = if command.force { "?force=true" } else { "" };
        let answer = client
            .post(&format!("/api/jobs/{number}/cancel{force}"), None)
            .await?;
        if command.json {
            outln!("{}", serde_json::to_string_pretty(&answer)?)?;
        } else if answer["cancelled"] == true {
            outln!("{}: cancelling", command.id)?;
        } else {
            outln!("{}: had ended already", command.id)?;
        }
        Ok(ExitCode::SUCCESS)
    })?
}

/// The daemon's number of job `id`: a number (or `job-N`) as it is, a journal id
/// looked up among the daemon's jobs.
async fn daemon_number(client: &DaemonClient, id: &str) -> Result<u64> {
    if let Ok(number) = id.strip_prefix("job-").unwrap_or(id).parse::<u64>() {
        return Ok(number);
    }
    let listed = client.get("/api/jobs").await?;
    let found = listed["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|job| job["journal_id"].as_str() == Some(id))
        .and_then(|job| job["id"].as_u64());
    match found {
        Some(number) => Ok(number),
        None => bail!(
            "jobs cancel {id}: the daemon runs no such job (`cjm-ctl jobs` lists the \
             journal's; a job another host ran is not the daemon's to cancel)"
        ),
    }
}
