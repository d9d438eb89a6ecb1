use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::{DiscoveredPlugin, ManagerOptions, PluginManager};
use cjm_metadata::Launch;

use crate::install::config::PluginsFile;

/// Check a plugins.yaml (the given one, else ./plugins.yaml if there is one) and
/// every discovered manifest; exit 0 only when all are valid.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "validate")]
pub struct ValidateCommand {
    /// the plugins file to check
    #[argh(option)]
    config: Option<PathBuf>,
}

pub fn run(command: ValidateCommand) -> Result<ExitCode> {
    let mut all_valid = true;
    let config = command
        .config
        .or_else(|| Some(PathBuf::from("plugins.yaml")).filter(|path| path.is_file()));
    if let Some(config) = config {
        match PluginsFile::load(&config) {
            Ok(file) => println!(
                "ok       {} ({} plugins)",
                config.display(),
                file.entries.len()
            ),
            Err(err) => {
                all_valid = false;
                println!("invalid  {err}");
            }
        }
    }

    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    let found = manager.discovery();
    for plugin in &found.plugins {
        match launch_problem(plugin) {
            None => println!("ok       {}", plugin.path.display()),
            Some(problem) => {
                all_valid = false;
                println!("invalid  {}: {problem}", plugin.path.display());
            }
        }
    }
    for problem in &found.problems {
        all_valid = false;
        println!("invalid  {problem}");
    }
    for shadowed in &found.shadowed {
        println!(
            "note     {} is shadowed by {}",
            shadowed.path.display(),
            shadowed.shadowed_by.display()
        );
    }
    if found.plugins.is_empty() && found.problems.is_empty() {
        println!("note     no manifests found");
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A manifest that parses can still point at a program that is not there.
fn launch_problem(plugin: &DiscoveredPlugin) -> Option<String> {
    match plugin.manifest.resolved_launch(plugin.path.parent()) {
        Launch::Native { command, .. } => executable_problem("command", &command),
        Launch::Python { python_path, .. } => executable_problem("python_path", &python_path),
    }
}

fn executable_problem(field: &str, path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(err) => Some(format!("{field} {}: {err}", path.display())),
        Ok(meta) if !meta.is_file() => Some(format!("{field} {} is not a file", path.display())),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Some(format!("{field} {} is not executable", path.display()))
        }
        Ok(_) => None,
    }
}
