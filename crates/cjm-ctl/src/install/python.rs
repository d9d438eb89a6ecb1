//! A Python entry: a venv (or conda environment) under `$CJM_HOME/envs/<env_name>`,
//! `interface_libs` and `package` installed with pip, the manifest read as the
//! original reads it.
//!
//! Python environments cannot be moved once built (their scripts and, for conda,
//! many files hold absolute paths), so unlike a cargo entry the environment is built
//! in place. The previous one is moved aside first and put back if the install fails;
//! an interrupted install leaves it aside, and the next run puts it back before
//! anything else.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cjm_metadata::{Launch, Manifest};

use super::adapter_manifest::{self, AdapterFile};
use super::cargo::run_logged;
use super::config::{PluginEntry, PythonSpec};
use super::native::remove_if_present;
use super::progress::{Progress, StepError};
use super::stamp::{self, Stamp};
use super::{introspect, manifest_writer, python_env, Installed, Installer};

/// What the stamp records as the environment's launcher.
const STAMP_BIN: &str = "python";

pub fn install(
    installer: &Installer,
    entry: &PluginEntry,
    spec: &PythonSpec,
    progress: &Progress,
) -> Result<Installed, StepError> {
    let env = installer.home.envs_dir().join(&entry.env_name);
    let aside = env.with_file_name(format!(".{}.old", entry.env_name));
    let manifest_path = installer.home.manifest_path(&entry.name);
    let package = spec.package.as_deref().ok_or_else(|| {
        StepError::new(
            "checking",
            "a Python entry needs \"package\" to read the manifest from",
        )
    })?;

    progress.step("checking");
    recover_interrupted(&env, &aside).map_err(|reason| StepError::new("checking", reason))?;
    let fingerprint = stamp::fingerprint(entry, &local_package_dir(package));
    let python = python_env::env_python(&env);
    if !installer.force
        && Stamp::read(&env).is_some_and(|stamp| stamp.records(&fingerprint))
        && manifest_launches(&manifest_path, &python)
        && adapters_registered(&manifest_path, &entry.env_name, spec)
    {
        return Ok(Installed::Unchanged(manifest_path));
    }

    // Only now: an unchanged install keeps the log of the one that built it.
    let mut log = installer.open_log(&entry.name)?;
    progress.step(&format!(
        "creating environment (log: {})",
        installer.log_path(&entry.name).display()
    ));
    if env.exists() {
        std::fs::rename(&env, &aside).map_err(|err| {
            StepError::new(
                "creating environment",
                format!("cannot move {} aside: {err}", env.display()),
            )
        })?;
    }
    let built =
        build(entry, spec, package, &env, progress, &mut log).and_then(|(manifest, adapters)| {
            Stamp::new(Some(&fingerprint), STAMP_BIN)
                .write(&env)
                .map_err(|err| {
                    StepError::new("installing", format!("cannot write the stamp: {err}"))
                })?;
            progress.step("writing manifest");
            manifest_writer::write_atomically(&manifest_path, manifest.as_bytes()).map_err(
                |err| {
                    StepError::new(
                        "writing manifest",
                        format!("{}: {err}", manifest_path.display()),
                    )
                },
            )?;
            register_adapters(&manifest_path, &entry.env_name, &adapters)
        });
    match built {
        Ok(()) => {
            // The new environment is in use; the old one may go.
            if let Err(reason) = remove_if_present(&aside) {
                tracing::warn!("{reason}");
            }
            Ok(Installed::Fresh(manifest_path))
        }
        Err(err) => {
            restore(&env, &aside, &mut log);
            Err(err)
        }
    }
}

/// Create the environment at `env`, install the packages, read the manifest and
/// those of the adapters.
fn build(
    entry: &PluginEntry,
    spec: &PythonSpec,
    package: &str,
    env: &Path,
    progress: &Progress,
    log: &mut File,
) -> Result<(String, Vec<AdapterFile>), StepError> {
    python_env::create(spec, env, log)
        .map_err(|reason| StepError::new("creating environment", reason))?;
    let python = python_env::env_python(env);

    progress.step("installing packages");
    for requirement in spec
        .interface_libs
        .iter()
        .map(String::as_str)
        .chain(
            spec.adapters
                .iter()
                .filter_map(|adapter| adapter.lib.as_deref()),
        )
        .chain([package])
    {
        pip_install(&python, requirement, log)
            .map_err(|reason| StepError::new("installing packages", reason))?;
    }

    progress.step("reading manifest");
    let manifest = introspect::manifest_of(
        &python,
        &python,
        &introspect::module_name(package),
        &entry.name,
        &entry.env_name,
        log,
    )
    .map_err(|reason| StepError::new("reading manifest", reason))?;
    if !spec.adapters.is_empty() {
        progress.step("reading adapters");
    }
    let adapters = spec
        .adapters
        .iter()
        .map(|adapter| adapter_manifest::adapter_file_of(&python, adapter, &entry.env_name, log))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| StepError::new("reading adapters", reason))?;
    Ok((manifest, adapters))
}

/// Write the adapter manifests beside the plugin's, and drop those an earlier
/// install of the environment registered that it no longer has.
fn register_adapters(
    manifest_path: &Path,
    env_name: &str,
    adapters: &[AdapterFile],
) -> Result<(), StepError> {
    let Some(dir) = manifest_path.parent() else {
        return Ok(());
    };
    let stale = adapter_manifest::registered_for(dir, env_name);
    for adapter in adapters {
        let path = dir.join(&adapter.file_name);
        manifest_writer::write_atomically(&path, adapter.text.as_bytes()).map_err(|err| {
            StepError::new("writing manifest", format!("{}: {err}", path.display()))
        })?;
    }
    for (path, _) in stale {
        let kept = path
            .file_name()
            .is_some_and(|name| adapters.iter().any(|adapter| *name == *adapter.file_name));
        if !kept {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(
                    "cannot remove the stale adapter manifest {}: {err}",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether every adapter of the entry has its manifest beside the plugin's (a
/// deleted one makes the install run again).
fn adapters_registered(manifest_path: &Path, env_name: &str, spec: &PythonSpec) -> bool {
    let registered = manifest_path
        .parent()
        .map(|dir| adapter_manifest::registered_for(dir, env_name))
        .unwrap_or_default();
    spec.adapters.iter().all(|adapter| {
        registered.iter().any(|(_, manifest)| {
            manifest.module == adapter.module && manifest.class_name == adapter.class_name
        })
    })
}

/// `python -m pip install <requirement>`; a requirement is split into words as the
/// original's shell would (`-e ./pkg`, or several names in one string).
fn pip_install(python: &Path, requirement: &str, log: &mut File) -> Result<(), String> {
    let mut command = Command::new(python);
    command
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(requirement.split_whitespace())
        .stdin(Stdio::null());
    run_logged(&mut command, log)
}

/// A local package folder, whose contents then count in the fingerprint; a name or
/// URL counts as written (a new release or commit needs `--force`).
fn local_package_dir(package: &str) -> Vec<PathBuf> {
    let path = package.strip_prefix("-e ").unwrap_or(package).trim();
    let path = Path::new(path);
    if path.is_absolute() && path.is_dir() {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    }
}

/// An install killed while it built left the previous environment aside: put it
/// back. With both present, the aside one is a leftover of a finished install.
fn recover_interrupted(env: &Path, aside: &Path) -> Result<(), String> {
    if !aside.exists() {
        return Ok(());
    }
    if env.exists() && Stamp::read(env).is_some() {
        return remove_if_present(aside);
    }
    remove_if_present(env)?;
    std::fs::rename(aside, env).map_err(|err| format!("cannot restore {}: {err}", aside.display()))
}

/// After a failure: the half-built environment goes, the previous one comes back.
fn restore(env: &Path, aside: &Path, log: &mut File) {
    use std::io::Write;
    if let Err(reason) = remove_if_present(env) {
        let _ = writeln!(log, "{reason}");
        return;
    }
    if aside.exists() {
        if let Err(err) = std::fs::rename(aside, env) {
            let _ = writeln!(log, "cannot restore {}: {err}", aside.display());
        }
    }
}

/// Whether the manifest at `path` is valid and launches the environment's `python`,
/// which exists.
fn manifest_launches(path: &Path, python: &Path) -> bool {
    match Manifest::load(path) {
        Ok(manifest) => {
            python.is_file()
                && matches!(manifest.launch, Launch::Python { ref python_path, .. } if python_path == python)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(dir: &Path, name: &str, file: &str) -> PathBuf {
        let env = dir.join(name);
        std::fs::create_dir_all(&env).unwrap();
        std::fs::write(env.join(file), name).unwrap();
        env
    }

    #[test]
    fn an_interrupted_install_gets_the_previous_environment_back() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("e");
        // Killed after moving the old environment aside, before building anything.
        let aside = env_with(dir.path(), ".e.old", "previous");
        recover_interrupted(&env, &aside).unwrap();
        assert!(env.join("previous").is_file() && !aside.exists());

        // Killed halfway through building: no stamp yet in the new one.
        std::fs::rename(&env, &aside).unwrap();
        env_with(dir.path(), "e", "half-built");
        recover_interrupted(&env, &aside).unwrap();
        assert!(env.join("previous").is_file() && !env.join("half-built").exists());
        assert!(!aside.exists());
    }

    #[test]
    fn a_finished_install_drops_what_was_left_aside() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), "e", "new");
        Stamp::new(None, STAMP_BIN).write(&env).unwrap();
        let aside = env_with(dir.path(), ".e.old", "previous");
        recover_interrupted(&env, &aside).unwrap();
        assert!(env.join("new").is_file() && !aside.exists());
    }

    #[test]
    fn a_failed_install_puts_the_previous_environment_back() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(dir.path(), "e", "half-built");
        let aside = env_with(dir.path(), ".e.old", "previous");
        let mut log = File::create(dir.path().join("log")).unwrap();
        restore(&env, &aside, &mut log);
        assert!(env.join("previous").is_file() && !aside.exists());
    }
}
