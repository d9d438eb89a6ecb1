use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::{ManagerOptions, PluginManager};
use serde_json::json;

use crate::table::print_table;

/// List discovered plugins (which manifest shadows which, and broken manifests).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListCommand {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

pub fn run(command: ListCommand) -> Result<ExitCode> {
    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    let found = manager.discovery();
    if command.json {
        let plugins: Vec<_> = found
            .plugins
            .iter()
            .map(|plugin| {
                json!({
                    "name": plugin.meta.name,
                    "version": plugin.meta.version,
                    "category": plugin.meta.category,
                    "launch": plugin.manifest.launch.kind_name(),
                    "manifest": plugin.path,
                    "description": plugin.meta.description,
                })
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
            .map(|p| json!({"manifest": p.path, "reason": p.reason}))
            .collect();
        let report = json!({"plugins": plugins, "shadowed": shadowed, "problems": problems});
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    if found.plugins.is_empty() {
        println!("no plugins found in:");
        for path in &manager.options().search_paths {
            println!("  {}", path.display());
        }
    } else {
        let rows: Vec<[String; 5]> = found
            .plugins
            .iter()
            .map(|plugin| {
                [
                    plugin.meta.name.clone(),
                    plugin.meta.version.clone(),
                    plugin.meta.category.clone(),
                    plugin.manifest.launch.kind_name().to_owned(),
                    plugin.path.display().to_string(),
                ]
            })
            .collect();
        print_table(
            &["NAME", "VERSION", "CATEGORY", "LAUNCH", "MANIFEST"],
            &rows,
        );
    }
    for shadowed in &found.shadowed {
        println!(
            "shadowed: {} at {} (by {})",
            shadowed.name,
            shadowed.path.display(),
            shadowed.shadowed_by.display()
        );
    }
    for problem in &found.problems {
        eprintln!("skipped: {problem}");
    }
    Ok(ExitCode::SUCCESS)
}
