//! `cjm-ctl install-all`: install every plugin of a plugins.yaml into its own
//! environment under `$CJM_HOME/envs/` and write its manifest.

pub(crate) mod adapter_manifest;
mod cargo;
pub mod config;
#[cfg(test)]
mod config_properties;
mod introspect;
pub(crate) mod manifest_writer;
mod native;
mod prebuilt;
mod probe;
mod progress;
mod python;
mod python_env;
mod stamp;

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_metadata::CjmHome;

use self::cargo::CargoSettings;
use self::config::{PluginEntry, PluginsFile, Source};
use self::progress::{Outcome, Progress, StepError};

/// Install the plugins of a plugins.yaml, each into its own environment under
/// $CJM_HOME/envs, and write their manifests. A cargo path builds in its workspace's
/// target folder, git and crates.io entries in $CJM_HOME/cache/cargo-target;
/// CJM_CARGO_TARGET_DIR overrides both.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "install-all")]
pub struct InstallAllCommand {
    /// the plugins file (default: plugins.yaml)
    #[argh(option, default = "PathBuf::from(\"plugins.yaml\")")]
    config: PathBuf,
    /// reinstall even when an environment is installed and unchanged
    #[argh(switch)]
    force: bool,
    /// install only this plugin (repeatable)
    #[argh(option)]
    only: Vec<String>,
    /// pass --offline to cargo
    #[argh(switch)]
    offline: bool,
    /// pass --locked to cargo
    #[argh(switch)]
    locked: bool,
    /// the cargo profile to build with (default: release)
    #[argh(option, default = "String::from(cargo::DEFAULT_PROFILE)")]
    cargo_profile: String,
}

/// What every entry's install shares.
#[derive(Debug)]
pub(crate) struct Installer {
    home: CjmHome,
    cargo: CargoSettings,
    force: bool,
}

/// An install log while its entry is checked: the last install's lines, then the
/// check's from `start`.
pub(crate) struct InstallLog {
    pub(crate) file: File,
    start: u64,
}

impl InstallLog {
    /// Unchanged: the log is the last install's again.
    pub(crate) fn unchanged(self) {
        let _ = self.file.set_len(self.start);
    }

    /// Going on to build: the log holds this install's lines only, the check's first.
    pub(crate) fn building(mut self) -> File {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut checked = Vec::new();
        let kept = self
            .file
            .seek(SeekFrom::Start(self.start))
            .and_then(|_| self.file.read_to_end(&mut checked))
            .and_then(|_| self.file.set_len(0))
            .and_then(|()| self.file.write_all(&checked));
        if let Err(err) = kept {
            tracing::warn!("the install log could not be started afresh: {err}");
        }
        self.file
    }
}

/// A successful install: the manifest written, or found current.
#[derive(Debug)]
pub(crate) enum Installed {
    Fresh(PathBuf),
    Unchanged(PathBuf),
}

impl Installer {
    fn log_path(&self, name: &str) -> PathBuf {
        self.home.logs_dir().join(format!("install-{name}.log"))
    }

    /// The plugin's install log, emptied: it holds the latest install only. The
    /// user's alone (0600 in a 0700 folder), as the workers' logs are: a build's
    /// output can show paths, environment and whatever the plugin prints.
    fn open_log(&self, name: &str) -> Result<File, StepError> {
        self.open_log_with(name, true)
    }

    /// The plugin's install log, its last install's lines kept after `start`: a check
    /// that finds the install unchanged takes its own lines out again
    /// ([`InstallLog::unchanged`]), one that goes on to build leaves only its own
    /// ([`InstallLog::building`]).
    fn open_log_for_check(&self, name: &str) -> Result<InstallLog, StepError> {
        let file = self.open_log_with(name, false)?;
        let start = file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|err| {
                StepError::new(
                    "starting",
                    format!("{}: {err}", self.log_path(name).display()),
                )
            })?;
        Ok(InstallLog { file, start })
    }

    fn open_log_with(&self, name: &str, truncate: bool) -> Result<File, StepError> {
        use cjm_metadata::private::{create_private_parent, make_private, private_file_options};
        let path = self.log_path(name);
        create_private_parent(&path)
            .and_then(|()| {
                let mut options = private_file_options();
                if truncate {
                    options.write(true).truncate(true);
                } else {
                    options.append(true).read(true);
                }
                options.open(&path)
            })
            .and_then(|file| {
                // One made by an earlier release, readable by others, is closed to them.
                make_private(&file)?;
                Ok(file)
            })
            .map_err(|err| StepError::new("starting", format!("{}: {err}", path.display())))
    }

    fn install(&self, entry: &PluginEntry, progress: &Progress) -> Result<Installed, StepError> {
        match &entry.source {
            Source::Cargo { crate_source, bin } => {
                native::install(self, entry, crate_source, bin.as_deref(), progress)
            }
            Source::Executable(executable) => {
                prebuilt::install(self, entry, executable, progress).map(Installed::Fresh)
            }
            Source::Python(spec) => python::install(self, entry, spec, progress),
        }
    }
}

pub fn run(command: InstallAllCommand) -> Result<ExitCode> {
    let file = PluginsFile::load(&command.config)?;
    let entries = select(&file, &command.only)?;
    let home = CjmHome::from_env()?;
    let root = std::path::absolute(home.root())
        .with_context(|| format!("cannot resolve {}", home.root().display()))?;
    let home = CjmHome::at(root);
    let target_dir_override = std::env::var_os("CJM_CARGO_TARGET_DIR").filter(|v| !v.is_empty());
    let target_dir_overridden = target_dir_override.is_some();
    let target_dir = match target_dir_override {
        Some(dir) => PathBuf::from(dir),
        None => home.root().join("cache").join("cargo-target"),
    };
    let installer = Installer {
        cargo: CargoSettings {
            program: std::env::var_os("CARGO")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("cargo"), PathBuf::from),
            target_dir,
            target_dir_override: target_dir_overridden,
            profile: command.cargo_profile,
            offline: command.offline,
            locked: command.locked,
        },
        home,
        force: command.force,
    };
    let total = entries.len();
    let mut outcomes = Vec::with_capacity(total);
    for (index, entry) in entries.into_iter().enumerate() {
        let progress = Progress {
            index: index + 1,
            total,
            name: entry.name.clone(),
        };
        let started = Instant::now();
        let result = installer.install(entry, &progress);
        let (result, manifest) = match result {
            Ok(Installed::Fresh(path)) => {
                progress.note("installed");
                (progress::Result::Installed, Some(path))
            }
            Ok(Installed::Unchanged(path)) => {
                progress.note("unchanged, skipped (--force reinstalls)");
                (progress::Result::Skipped, Some(path))
            }
            Err(err) => {
                progress.note(&format!("failed while {}: {}", err.step, err.reason));
                (progress::Result::Failed(err), None)
            }
        };
        outcomes.push(Outcome {
            name: entry.name.clone(),
            result,
            elapsed: started.elapsed(),
            manifest,
            log: installer.log_path(&entry.name),
        });
    }
    progress::print_summary(&outcomes)?;
    Ok(if outcomes.iter().any(Outcome::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The entries to install: all, or those `--only` names (every one must exist).
fn select<'a>(file: &'a PluginsFile, only: &[String]) -> Result<Vec<&'a PluginEntry>> {
    if only.is_empty() {
        return Ok(file.entries.iter().collect());
    }
    let unknown: Vec<&str> = only
        .iter()
        .filter(|name| !file.entries.iter().any(|entry| &entry.name == *name))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        bail!(
            "--only names plugins that {} does not list: {}",
            file.path.display(),
            unknown.join(", ")
        );
    }
    Ok(file
        .entries
        .iter()
        .filter(|entry| only.contains(&entry.name))
        .collect())
}
