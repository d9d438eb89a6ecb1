//! Writing `plugins/<name>.json` so that a reader (or an interrupted install) only
//! ever sees the old file or the complete new one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary file's name: hidden and not ending in `.json`, so discovery never
/// reads it, and tagged with the writer's pid so that concurrent installs do not
/// collide.
fn temp_path(target: &Path) -> PathBuf {
    let file_name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()))
}

/// Write `contents` to `target` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over the target (and the folder synced so that the
/// rename itself survives a crash). On any error the temporary file is removed and
/// the target is left as it was.
pub fn write_atomically(target: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    remove_stale_temp_files(target);
    let temp = temp_path(target);
    let result = write_and_rename(&temp, target, contents);
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn write_and_rename(temp: &Path, target: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temp, target)?;
    if let Some(dir) = target.parent() {
        // Best effort: some file systems do not support syncing a folder.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// A process killed between creating its temporary file and renaming it (SIGKILL,
/// power loss) leaves the file behind; the next write of the same target removes it.
fn remove_stale_temp_files(target: &Path) {
    let (Some(dir), Some(file_name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", file_name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The manifest text to write: `fields` (a plugin's own metadata plus what the
/// installer adds), checked to be a usable manifest of the plugin plugins.yaml names.
pub fn checked_manifest_text(
    fields: &serde_json::Value,
    expected_name: &str,
) -> Result<String, String> {
    let text = serde_json::to_string_pretty(fields)
        .map_err(|err| format!("cannot serialise the manifest: {err}"))?;
    let manifest = cjm_metadata::Manifest::from_json(&text).map_err(|err| err.to_string())?;
    if manifest.name != expected_name {
        return Err(format!(
            "the plugin calls itself {:?}, but plugins.yaml names it {expected_name:?}",
            manifest.name
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_target_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("plugins/echo.json");
        write_atomically(&target, b"{\"v\": 1}").unwrap();
        std::fs::write(dir.path().join("plugins/.echo.json.tmp-1"), "stale").unwrap();
        write_atomically(&target, b"{\"v\": 2}").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"v\": 2}");
        assert_eq!(names(&dir.path().join("plugins")), ["echo.json"]);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_state_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the file should go: the rename fails.
        let target = dir.path().join("echo.json");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomically(&target, b"{}").is_err());
        assert!(target.join("inside").is_dir());
        assert_eq!(names(dir.path()), ["echo.json"]);
    }
}
