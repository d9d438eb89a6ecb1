//! A host for the journal test: loads `faulty` (from `CJM_HOME`), submits a job that
//! runs (and ignores cancellation) and one that waits behind it, prints their journal
//! ids and the worker's pid, then waits to be killed.

use std::time::Duration;

use anyhow::Context;
use cjm_manager::jobs::{JobOptions, JobState, Jobs};
use cjm_manager::{CallArgs, ManagerOptions, PluginManager};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await?;
    let jobs = Jobs::new(manager.clone(), JobOptions::default()).await?;
    let running = jobs.submit("faulty", CallArgs::new().arg("sleep").arg(600_000), 0)?;
    let queued = jobs.submit("faulty", CallArgs::new().arg("pid"), 0)?;
    while jobs.status(running).map(|status| status.state) != Some(JobState::Running) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = manager
        .worker_info("faulty")
        .context("faulty vanished")?
        .pid;
    // What the test then finds in the journal was on disk before the SIGKILL.
    jobs.sync_journal().await;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{} {} {pid}",
            jobs.journal_id(running).context("no journal id")?,
            jobs.journal_id(queued).context("no journal id")?
        );
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
