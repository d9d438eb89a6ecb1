//! A cargo entry: check whether it changed, build it into a fresh staging folder
//! (`cargo build` in its workspace for a path, `cargo install` for the others),
//! read its manifest, swap the staging folder in as the environment, write the
//! manifest. A failure at any step leaves the previous environment and manifest as
//! they were; an interrupted build leaves only the staging folder, removed on the
//! next run.

use std::path::{Path, PathBuf};

use cjm_metadata::{Launch, Manifest};

use super::cargo::{self, installed_binary};
use super::config::{CargoSource, PluginEntry};
use super::progress::{Progress, StepError};
use super::stamp::{self, Stamp};
use super::{manifest_writer, probe, Installed, Installer};

pub fn install(
    installer: &Installer,
    entry: &PluginEntry,
    source: &CargoSource,
    bin: Option<&str>,
    progress: &Progress,
) -> Result<Installed, StepError> {
    let envs_dir = installer.home.envs_dir();
    let env = envs_dir.join(&entry.env_name);
    let manifest_path = installer.home.manifest_path(&entry.name);
    let mut check_log = installer.open_log_for_check(&entry.name)?;

    progress.step("checking");
    let path_package = stamp::path_source(entry).map(|dir| {
        (
            dir,
            stamp::path_package(
                &installer.cargo.program,
                dir,
                installer.cargo.offline,
                &mut check_log.file,
            ),
        )
    });
    let fingerprint = match &path_package {
        None => Some(stamp::fingerprint(entry, &[])),
        Some((_, Ok(package))) => Some(stamp::fingerprint(entry, &package.local_dirs)),
        Some((_, Err(reason))) => {
            // Not fatal: the build itself may well work (and say better what is wrong).
            progress.note(&format!(
                "cannot tell whether it changed ({reason}; see the log), so it is built"
            ));
            None
        }
    };
    if !installer.force {
        if let (Some(fingerprint), Some(stamp)) = (&fingerprint, Stamp::read(&env)) {
            let binary = env.join("bin").join(&stamp.bin);
            if stamp.records(fingerprint) && manifest_launches(&manifest_path, &binary) {
                check_log.unchanged();
                return Ok(Installed::Unchanged(manifest_path));
            }
        }
    }

    let mut log = check_log.building();
    progress.step(&format!(
        "building with the {} profile (log: {})",
        installer.cargo.profile,
        installer.log_path(&entry.name).display()
    ));
    let staging = envs_dir.join(format!(".{}.staging", entry.env_name));
    remove_if_present(&staging).map_err(|reason| StepError::new("building", reason))?;
    match &path_package {
        Some((dir, Ok(package))) => {
            let mut ticker = progress.ticker("compiled");
            let built = cargo::build_in_workspace(
                package,
                dir,
                bin,
                &staging,
                &installer.cargo,
                &mut log,
                &mut |name, fresh| ticker.tick(name, fresh),
            );
            ticker.done();
            built
        }
        // A path whose metadata cargo could not give is left to cargo install, whose
        // message then says what is wrong with it.
        _ => cargo::install(source, bin, &staging, &installer.cargo, &mut log),
    }
    .map_err(|reason| StepError::new("building", reason))?;
    let (bin, staged_binary) =
        installed_binary(&staging, bin).map_err(|reason| StepError::new("building", reason))?;

    progress.step("reading manifest");
    let final_binary = env.join("bin").join(&bin);
    let manifest = probe::manifest_of(
        &staged_binary,
        &final_binary,
        &entry.name,
        Some(&entry.env_name),
        &mut log,
    )
    .map_err(|reason| StepError::new("reading manifest", reason))?;
    // An entry whose fingerprint could not be computed is never "unchanged".
    Stamp::new(fingerprint.as_ref(), bin)
        .write(&staging)
        .map_err(|err| StepError::new("installing", format!("cannot write the stamp: {err}")))?;

    progress.step("installing environment");
    swap_in(&staging, &env).map_err(|reason| StepError::new("installing", reason))?;

    progress.step("writing manifest");
    manifest_writer::write_atomically(&manifest_path, manifest.as_bytes()).map_err(|err| {
        StepError::new(
            "writing manifest",
            format!("{}: {err}", manifest_path.display()),
        )
    })?;
    Ok(Installed::Fresh(manifest_path))
}

/// Whether the manifest at `path` exists, is valid and launches `binary`, which
/// exists: the other half of "already installed".
fn manifest_launches(path: &Path, binary: &Path) -> bool {
    match Manifest::load(path) {
        Ok(manifest) => {
            binary.is_file()
                && matches!(manifest.launch, Launch::Native { ref command, .. } if command == binary)
        }
        Err(_) => false,
    }
}

pub(super) fn remove_if_present(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!("cannot remove {}: {err}", dir.display())),
    }
}

/// Replace `env` by `staging`: the old environment moves aside first and is removed
/// only once the new one is in place (and moved back if that fails).
fn swap_in(staging: &Path, env: &Path) -> Result<(), String> {
    let aside: PathBuf = env.with_file_name(format!(
        ".{}.old",
        env.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    remove_if_present(&aside)?;
    let had_env = env.exists();
    if had_env {
        std::fs::rename(env, &aside)
            .map_err(|err| format!("cannot move {} aside: {err}", env.display()))?;
    }
    if let Err(err) = std::fs::rename(staging, env) {
        if had_env {
            let _ = std::fs::rename(&aside, env);
        }
        return Err(format!(
            "cannot move the new environment to {}: {err}",
            env.display()
        ));
    }
    remove_if_present(&aside)
}
