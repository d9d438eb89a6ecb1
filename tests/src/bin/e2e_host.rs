//! A host program for the host-death test: loads the plugin named by its argument
//! (from `CJM_HOME`), prints the worker's pid, then waits to be killed.

use std::time::Duration;

use anyhow::Context;
use cjm_manager::{ManagerOptions, PluginManager};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).context("usage: e2e-host PLUGIN")?;
    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    manager.load_plugin(&name, None).await?;
    let worker = manager.worker_info(&name).context("plugin vanished")?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", worker.pid);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
