//! Files only their owner may read, in folders only their owner may enter: what the
//! host keeps in `CJM_HOME` that holds secrets, keys, plugin output or error messages
//! (the job journal, install logs, the secret store and its lock, the host's TLS
//! identity). Here, beneath every crate that keeps such a file, so that there is one
//! way to write one.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Make `path`'s folder (0700, with its parents) when it does not exist; an existing
/// one is left as it is (it may be shared on purpose).
pub fn create_private_parent(path: &Path) -> io::Result<()> {
    match path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        Some(folder) => DirBuilder::new().recursive(true).mode(0o700).create(folder),
        None => Ok(()),
    }
}

/// Options that create a file readable by its owner alone (0600); the caller adds
/// read, write, truncate or append.
pub fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true).mode(0o600);
    options
}

/// Close `file` to group and others when it was made otherwise before (by an older
/// release, under the default umask). On the open file, so that what is checked is
/// what is written to.
pub fn make_private(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
}

/// What [`write_private_file`] does with a file already at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IfExists {
    /// Replace it whole (renamed over): a reader sees the old file or the new, never
    /// half of one.
    Replace,
    /// Keep it and write nothing (linked into place, which never replaces a file): of
    /// several writers at once, the first one's file is the one all of them read.
    Keep,
}

/// Write `bytes` to `path` as one unit, readable by its owner alone (0600): into a
/// temporary file of this call's own beside it, made 0600 before any byte goes in and
/// synced, then put in place as `if_exists` says. Whether `bytes` went in (`false`:
/// [`IfExists::Keep`] found a file there). No temporary file stays behind, whatever
/// fails; the folder must exist (see [`create_private_parent`]).
pub fn write_private_file(path: &Path, bytes: &[u8], if_exists: IfExists) -> io::Result<bool> {
    let temporary = write_temporary(path, bytes)?;
    let placed = match if_exists {
        IfExists::Replace => std::fs::rename(&temporary, path).map(|()| true),
        IfExists::Keep => match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err),
        },
    };
    // After a rename there is nothing left to remove; after a link, or a failure, the
    // temporary name goes.
    let _ = std::fs::remove_file(&temporary);
    placed
}

/// `bytes` in a new 0600 file beside `path`, under a name no other writer uses (this
/// process's id and a counter; `create_new`, so that a name left by a writer that died
/// is never written into, only passed over).
fn write_temporary(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    static TEMPORARIES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut attempts = 0;
    loop {
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        temporary_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            TEMPORARIES.fetch_add(1, Ordering::Relaxed)
        ));
        let temporary = path.with_file_name(temporary_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary);
        let mut file = match file {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
                continue;
            }
            Err(err) => return Err(err),
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        return match written {
            Ok(()) => Ok(temporary),
            Err(err) => {
                let _ = std::fs::remove_file(&temporary);
                Err(err)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_and_its_folder_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        create_private_parent(&path).unwrap();
        let file = private_file_options().write(true).open(&path).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .unwrap();
        make_private(&file).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_private_file_is_written_whole_replaced_or_kept_and_leaves_nothing_beside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert!(write_private_file(&path, b"first", IfExists::Keep).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert!(!write_private_file(&path, b"second", IfExists::Keep).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert!(write_private_file(&path, b"third", IfExists::Replace).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"third");
        assert_eq!(mode(&path), 0o600);
        // The file alone: no temporary is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A folder that is not there is an error, and leaves nothing either.
        let err =
            write_private_file(&dir.path().join("no/file"), b"x", IfExists::Replace).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
