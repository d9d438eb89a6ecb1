use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::{DiscoveredPlugin, ManagerOptions, PluginManager};
use cjm_metadata::Launch;

use crate::install::config::PluginsFile;
use crate::out::outln;

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
            Ok(file) => outln!(
                "ok       {} ({} plugins)",
                config.display(),
                file.entries.len()
            )?,
            Err(err) => {
                all_valid = false;
                outln!("invalid  {err}")?;
            }
        }
    }

    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    let found = manager.discovery();
    for plugin in &found.plugins {
        match launch_problem(plugin) {
            None => outln!("ok       {}", plugin.path.display())?,
            Some(problem) => {
                all_valid = false;
                outln!("invalid  {}: {problem}", plugin.path.display())?;
            }
        }
    }
    for problem in &found.problems {
        all_valid = false;
        outln!("invalid  {problem}")?;
    }
    for shadowed in &found.shadowed {
        outln!(
            "note     {} is shadowed by {}",
            shadowed.path.display(),
            shadowed.shadowed_by.display()
        )?;
    }
    if found.plugins.is_empty() && found.problems.is_empty() {
        outln!("note     no manifests found")?;
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What keeps a manifest that parses from launching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LaunchProblem {
    /// The program (`command`, or a Python manifest's `python_path`) is not there.
    Missing { field: &'static str, path: PathBuf },
    /// It is there but cannot be run; the reason names it.
    Unusable(String),
}

impl std::fmt::Display for LaunchProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchProblem::Missing { field, path } => {
                write!(f, "{field} {} does not exist", path.display())
            }
            LaunchProblem::Unusable(reason) => f.write_str(reason),
        }
    }
}

/// A manifest that parses can still point at a program that is not there.
pub(crate) fn launch_problem(plugin: &DiscoveredPlugin) -> Option<LaunchProblem> {
    // An attached worker is someone else's: its launch form is never run here.
    if matches!(
        plugin.manifest.placement(),
        Ok(cjm_metadata::WorkerPlacement::Attach(_))
    ) {
        return None;
    }
    match plugin.manifest.resolved_launch(plugin.path.parent()) {
        Launch::Native { command, .. } => executable_problem("command", &command),
        Launch::Python { python_path, .. } => executable_problem("python_path", &python_path),
    }
}

fn executable_problem(field: &'static str, path: &Path) -> Option<LaunchProblem> {
    let unusable = |what: String| Some(LaunchProblem::Unusable(what));
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some(LaunchProblem::Missing {
            field,
            path: path.to_owned(),
        }),
        Err(err) => unusable(format!("{field} {}: {err}", path.display())),
        Ok(meta) if !meta.is_file() => {
            unusable(format!("{field} {} is not a file", path.display()))
        }
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            unusable(format!("{field} {} is not executable", path.display()))
        }
        Ok(_) => None,
    }
}
