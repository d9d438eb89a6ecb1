use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use argh::FromArgs;
use cjm_scheduling::LocalMonitor;
use serde_json::Value;

use cjm_manager::{Aggregate, ManagerOptions, PluginManager, ResourceProfile};

use crate::out::outln;

/// Show this machine's telemetry as the scheduler sees it, or (--profiles) what each
/// plugin's calls were seen to use. When a daemon serves CJM_HOME, its scheduler's
/// figures and its admission (who waits for what).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
pub struct StatsCommand {
    /// print JSON (the scheduler's keys)
    #[argh(switch)]
    json: bool,
    /// the learned resource profiles kept in CJM_HOME: per plugin and configuration,
    /// calls, failures, peak memory, GPU memory and duration (mean, max, last)
    #[argh(switch)]
    profiles: bool,
    /// the figures of a monitor plugin instead of this machine's own reading: it is
    /// loaded, asked (its /get_system_status, else execute("get_system_status")) as
    /// the scheduler would ask it, and stopped
    #[argh(option)]
    monitor: Option<String>,
    /// read this machine here even when a daemon serves CJM_HOME (through the
    /// daemon, the figures are its scheduler's, and the text adds who waits for what)
    #[argh(switch)]
    local: bool,
}

pub fn run(command: StatsCommand) -> Result<ExitCode> {
    if command.profiles {
        return profiles(command.json);
    }
    if command.monitor.is_none() {
        if let Some(client) = crate::daemon_link::find(command.local)? {
            let system = crate::daemon_link::block_on(client.get("/api/system"))??;
            if let Some(error) = system["stats_error"].as_str() {
                anyhow::bail!("the daemon cannot read this machine's figures: {error}");
            }
            print_stats(system["stats"].clone(), command.json)?;
            if !command.json {
                print_admission(&system["admission"])?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    let stats = match &command.monitor {
        Some(plugin) => serde_json::to_value(from_monitor_plugin(plugin)?)?,
        None => {
            let monitor = LocalMonitor::new()?;
            // CPU load is measured between two readings; a short wait gives the
            // second one something to measure.
            let _ = monitor.snapshot();
            std::thread::sleep(Duration::from_millis(250));
            serde_json::to_value(monitor.snapshot())?
        }
    };
    print_stats(stats, command.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_stats(stats: Value, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&stats)?)?;
        return Ok(());
    }
    // Printed key by key from the serialised form, so that figures added to
    // SystemStats show up without changes here.
    if let Value::Object(fields) = stats {
        let width = fields.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in fields {
            let value = match value {
                Value::Number(number) => match number.as_f64() {
                    Some(float) if number.is_f64() => format!("{float:.1}"),
                    _ => number.to_string(),
                },
                other => other.to_string(),
            };
            outln!("{key:<width$}  {value}")?;
        }
    }
    Ok(())
}

/// The daemon's admission: how many jobs wait and run, and what holds each waiting one.
fn print_admission(admission: &Value) -> Result<()> {
    let count = |key: &str| admission[key].as_u64().unwrap_or(0);
    outln!(
        "admission  {} queued, {} admitted, {} running",
        count("queued"),
        count("admitted"),
        count("running")
    )?;
    for waiting in admission["waiting"].as_array().into_iter().flatten() {
        outln!(
            "  job {} ({}, {}): {}",
            waiting["job"],
            waiting["plugin"].as_str().unwrap_or("?"),
            waiting["state"].as_str().unwrap_or("?"),
            waiting["reason"]
                .as_str()
                .unwrap_or("its turn has not come")
        )?;
    }
    Ok(())
}

/// What monitor plugin `plugin` reports, read as the scheduler reads it.
fn from_monitor_plugin(plugin: &str) -> Result<cjm_scheduling::SystemStats> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let manager = PluginManager::new(ManagerOptions::from_env()?);
        manager.discover_manifests();
        let read = async {
            manager.load_plugin(plugin, None).await?;
            manager.register_system_monitor(plugin)?;
            anyhow::Ok(manager.system_stats().await?)
        }
        .await;
        manager.shutdown().await;
        read
    })
}

fn profiles(json: bool) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let profiles = runtime.block_on(async {
        let manager = PluginManager::new(ManagerOptions::from_env()?);
        anyhow::Ok(manager.resource_profiles().await?)
    })?;
    if json {
        let rows: Vec<Value> = profiles.iter().map(profile_json).collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if profiles.is_empty() {
        outln!("no resource profiles learned yet")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24} {:<16} {:>6} {:>6} {:>22} {:>22} {:>22}",
        "PLUGIN",
        "CONFIG",
        "CALLS",
        "FAILED",
        "PEAK RSS MB mean/max/last",
        "GPU MB mean/max/last",
        "SECONDS mean/max/last"
    )?;
    for profile in &profiles {
        outln!(
            "{:<24} {:<16} {:>6} {:>6} {:>22} {:>22} {:>22}",
            profile.plugin,
            profile.config_fingerprint,
            profile.calls,
            profile.failures,
            figures(&profile.peak_rss_mb, 1),
            figures(&profile.gpu_memory_mb, 1),
            figures(&profile.duration_s, 3)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `mean/max/last`, or `-` for a measure no call took.
fn figures(aggregate: &Aggregate, decimals: usize) -> String {
    if aggregate.count == 0 {
        return String::from("-");
    }
    format!(
        "{:.decimals$}/{:.decimals$}/{:.decimals$}",
        aggregate.mean, aggregate.max, aggregate.last
    )
}

fn profile_json(profile: &ResourceProfile) -> Value {
    let aggregate = |aggregate: &Aggregate| {
        serde_json::json!({
            "count": aggregate.count,
            "mean": crate::jobs::to_millis(aggregate.mean),
            "max": crate::jobs::to_millis(aggregate.max),
            "last": crate::jobs::to_millis(aggregate.last),
        })
    };
    serde_json::json!({
        "plugin": profile.plugin,
        "config_fingerprint": profile.config_fingerprint,
        "calls": profile.calls,
        "failures": profile.failures,
        "peak_rss_mb": aggregate(&profile.peak_rss_mb),
        "gpu_memory_mb": aggregate(&profile.gpu_memory_mb),
        "duration_s": aggregate(&profile.duration_s),
        "updated_at": crate::jobs::to_millis(profile.updated_at),
    })
}
