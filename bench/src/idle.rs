//! `idle_restart_ms`: a call to a plugin whose worker was stopped for idleness (its
//! keep-alive), from the call to its answer: the worker's start and configuration
//! included. Compare with `spawn_ready_ms`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cjm_manager::{CallArgs, PluginManager, PluginState};

use crate::measure::median_ms;
use crate::report::Results;
use crate::system::BenchHome;
use crate::Options;

pub async fn measure(options: &Options, results: &mut Results) -> Result<()> {
    if !options.wants(&["idle_restart_ms"]) {
        return Ok(());
    }
    let home = BenchHome::new(options, "idle", 1)?;
    let manager = home.manager_with(|manager_options| {
        manager_options
            .plugin_keep_alive
            .insert(String::from("echo"), Duration::from_millis(50));
    });
    manager.load_plugin("echo", None).await?;
    let mut samples = Vec::new();
    for _ in 0..(if options.quick { 3 } else { 15 }) {
        wait_stopped(&manager).await?;
        let start = Instant::now();
        manager
            .execute_plugin("echo", CallArgs::new().arg("hi"))
            .await?;
        samples.push(start.elapsed());
    }
    manager.shutdown().await;
    results.insert("idle_restart_ms", median_ms(samples), "ms");
    Ok(())
}

async fn wait_stopped(manager: &PluginManager) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.plugin_status("echo").map(|status| status.state) != Some(PluginState::Stopped) {
        if Instant::now() > deadline {
            bail!("echo was not stopped after its keep-alive");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
