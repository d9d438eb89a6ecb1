//! A host process for `parent_death_ms`: loads the bench plugin, prints its worker's
//! pid and waits to be killed.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use cjm_manager::{CjmHome, ManagerOptions, PluginManager};

pub fn run(home: String) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let manager = PluginManager::new(ManagerOptions::with_home(CjmHome::at(&home)));
        manager.discover_manifests();
        manager.load_plugin("echo", None).await?;
        let pid = manager.worker_info("echo").context("not loaded")?.pid;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{pid}")?;
        stdout.flush()?;
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}
