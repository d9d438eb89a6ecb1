//! An entry naming an executable that already exists: nothing to build, only its
//! manifest to read and write. It has no environment, so there is nothing to skip:
//! the manifest is re-read on every run (one `--manifest` call).

use std::path::{Path, PathBuf};

use super::config::PluginEntry;
use super::progress::{Progress, StepError};
use super::{manifest_writer, probe, Installer};

pub fn install(
    installer: &Installer,
    entry: &PluginEntry,
    executable: &Path,
    progress: &Progress,
) -> Result<PathBuf, StepError> {
    let mut log = installer.open_log(&entry.name)?;
    progress.step("reading manifest");
    let command = std::fs::canonicalize(executable).map_err(|err| {
        StepError::new(
            "reading manifest",
            format!("{}: {err}", executable.display()),
        )
    })?;
    let manifest = probe::manifest_of(&command, &command, &entry.name, None, &mut log)
        .map_err(|reason| StepError::new("reading manifest", reason))?;
    progress.step("writing manifest");
    let path = installer.home.manifest_path(&entry.name);
    manifest_writer::write_atomically(&path, manifest.as_bytes())
        .map_err(|err| StepError::new("writing manifest", format!("{}: {err}", path.display())))?;
    Ok(path)
}
