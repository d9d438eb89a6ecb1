use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::{DiscoveredPlugin, ManagerOptions, ManifestProblem, PluginManager};
use cjm_metadata::WorkerPlacement;
use serde_json::json;

mod health;
mod loaded;

use crate::out::outln;
use crate::table::print_table;
use crate::validate::{launch_problem, LaunchProblem};

/// List discovered plugins with their status (ok, broken manifests, missing
/// commands) and which manifest shadows which; exit 1 when any is not ok. When a
/// daemon serves CJM_HOME, what it has loaded (state, worker pid, running jobs).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListCommand {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
    /// start each plugin's worker once, show what its /health says (the
    /// successor's worker: its cjm-substrate release and Python), and stop it
    #[argh(switch)]
    health: bool,
    /// do not ask a daemon serving CJM_HOME what it has loaded
    #[argh(switch)]
    local: bool,
}

/// A plugin's STATUS cell: `ok`, `broken: <reason>` or `command missing: <path>`.
fn plugin_status(plugin: &DiscoveredPlugin) -> String {
    match launch_problem(plugin) {
        None => "ok".to_owned(),
        Some(LaunchProblem::Missing { path, .. }) => {
            format!("command missing: {}", path.display())
        }
        Some(LaunchProblem::Unusable(reason)) => format!("broken: {reason}"),
    }
}

/// Where the plugin's worker runs: `local`, `attach <url>` or `ray <address>`.
fn plugin_location(plugin: &DiscoveredPlugin) -> String {
    match plugin.manifest.placement() {
        Ok(WorkerPlacement::Attach(spec)) => format!("attach {}", spec.url),
        Ok(WorkerPlacement::Ray(spec)) => format!("ray {}", spec.address),
        _ => "local".to_owned(),
    }
}

fn problem_status(problem: &ManifestProblem) -> String {
    format!("broken: {}", problem.reason)
}

/// A broken manifest has no name to read; its file stem is the name it would have
/// had (the installer writes `<name>.json`).
fn problem_name(path: &Path) -> String {
    match (path.extension(), path.file_stem()) {
        (Some(ext), Some(stem)) if ext == "json" => stem.to_string_lossy().into_owned(),
        _ => "-".to_owned(),
    }
}

pub fn run(command: ListCommand) -> Result<ExitCode> {
    // What is installed is read here either way (the daemon's discovery is from its
    // start); a daemon adds what it has loaded.
    let daemon = match crate::daemon_link::find(command.local)? {
        Some(client) => Some(loaded::read(&client)?),
        None => None,
    };
    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    let found = manager.discovery();
    let statuses: Vec<String> = found.plugins.iter().map(plugin_status).collect();
    let all_ok = found.problems.is_empty() && statuses.iter().all(|status| status == "ok");
    let healths = if command.health {
        let names: Vec<String> = found
            .plugins
            .iter()
            .zip(&statuses)
            .filter(|(_, status)| *status == "ok")
            .map(|(plugin, _)| plugin.meta.name.clone())
            .collect();
        let probed = health::probe(&manager, &names)?;
        Some(
            names
                .into_iter()
                .zip(probed)
                .collect::<std::collections::HashMap<_, _>>(),
        )
    } else {
        None
    };
    let health_of = |name: &str| {
        healths
            .as_ref()
            .map(|all| all.get(name).cloned().unwrap_or_default())
    };
    let code = if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if command.json {
        let plugins: Vec<_> = found
            .plugins
            .iter()
            .zip(&statuses)
            .map(|(plugin, status)| {
                let mut entry = json!({
                    "name": plugin.meta.name,
                    "version": plugin.meta.version,
                    "category": plugin.meta.category,
                    "launch": plugin.manifest.launch.kind_name(),
                    "where": plugin_location(plugin),
                    "manifest": plugin.path,
                    "description": plugin.meta.description,
                    "status": status,
                });
                if let Some(health) = health_of(&plugin.meta.name) {
                    entry["health"] = json!({
                        "worker_version": health.worker_version,
                        "substrate_version": health.substrate_version,
                        "python_executable": health.python_executable,
                        "error": health.error,
                    });
                }
                entry
            })
            .collect();
        let shadowed: Vec<_> = found
            .shadowed
            .iter()
            .map(|s| json!({"name": s.name, "manifest": s.path, "shadowed_by": s.shadowed_by}))
            .collect();
        let problems: Vec<_> = found
            .problems
            .iter()
            .map(|p| {
                json!({
                    "name": problem_name(&p.path),
                    "manifest": p.path,
                    "reason": p.reason,
                    "status": problem_status(p),
                })
            })
            .collect();
        let mut report = json!({"plugins": plugins, "shadowed": shadowed, "problems": problems});
        if let Some(daemon) = daemon {
            report["daemon"] = daemon;
        }
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(code);
    }
    if found.plugins.is_empty() && found.problems.is_empty() {
        outln!("no plugins found in:")?;
        for path in &manager.options().search_paths {
            outln!("  {}", path.display())?;
        }
    } else {
        let dash = || "-".to_owned();
        let rows: Vec<[String; 7]> = found
            .plugins
            .iter()
            .zip(statuses)
            .map(|(plugin, status)| {
                [
                    plugin.meta.name.clone(),
                    plugin.meta.version.clone(),
                    plugin.meta.category.clone(),
                    plugin.manifest.launch.kind_name().to_owned(),
                    plugin_location(plugin),
                    status,
                    plugin.path.display().to_string(),
                ]
            })
            .chain(found.problems.iter().map(|problem| {
                [
                    problem_name(&problem.path),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    problem_status(problem),
                    problem.path.display().to_string(),
                ]
            }))
            .collect();
        print_table(
            &[
                "NAME", "VERSION", "CATEGORY", "LAUNCH", "WHERE", "STATUS", "MANIFEST",
            ],
            &rows,
        )?;
    }
    if let Some(healths) = &healths {
        let mut rows: Vec<[String; 3]> = healths
            .iter()
            .map(|(name, health)| [name.clone(), health.substrate_cell(), health.python_cell()])
            .collect();
        rows.sort();
        if !rows.is_empty() {
            outln!()?;
            print_table(&["NAME", "SUBSTRATE", "PYTHON"], &rows)?;
        }
    }
    if let Some(daemon) = &daemon {
        loaded::print(daemon)?;
    }
    for shadowed in &found.shadowed {
        outln!(
            "shadowed: {} at {} (by {})",
            shadowed.name,
            shadowed.path.display(),
            shadowed.shadowed_by.display()
        )?;
    }
    Ok(code)
}
