//! Files only their owner may read, in folders only their owner may enter: what the
//! host keeps in `CJM_HOME` that holds secrets, plugin output or error messages (the
//! job journal, install logs, the secret store's lock).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

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
}
