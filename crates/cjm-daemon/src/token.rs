//! The daemon's bearer token: 32 random bytes, hex, kept in `$CJM_HOME/daemon.token`
//! (0600 in a 0700 folder), made at the first start and kept across restarts, so that
//! clients configured with it go on working.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cjm_interface::private::{write_private_file, IfExists};
use subtle::ConstantTimeEq;

use crate::error::DaemonError;

/// The token file's name in the home.
pub(crate) const TOKEN_FILE: &str = "daemon.token";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A secret compared in constant time, never shown (its `Debug` says only that it
/// is one).
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    /// A fresh one: `bytes` random bytes, as hex.
    pub(crate) fn random(bytes: usize) -> Result<Secret, DaemonError> {
        cjm_interface::random_hex(bytes)
            .map(Secret)
            .map_err(DaemonError::Random)
    }

    /// Whether `offered` is this secret; how long the comparison takes says nothing
    /// of how much of it matched.
    pub(crate) fn matches(&self, offered: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(offered.as_bytes()))
    }

    /// The value, for the one place it is shown or sent.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The token kept in `home`, made there on first use. A token file another user
/// could read is made private first (with a warning): whoever read it may already
/// hold it, which the warning says.
pub(crate) fn load_or_create(home: &Path) -> Result<Secret, DaemonError> {
    let path = home.join(TOKEN_FILE);
    let io = |what: &'static str, path: &Path| {
        let path: PathBuf = path.to_path_buf();
        move |source| DaemonError::Io { what, path, source }
    };
    private_folder(home)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)
                .map_err(io("cannot read the token file", &path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} was {:o}, readable by others: made 0600; delete it and restart \
                     to make a new token if others may have read it",
                    path.display(),
                    mode & 0o777
                );
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("cannot make private", &path))?;
            }
            let token = text.trim();
            if token.len() < 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DaemonError::BadToken { path });
            }
            Ok(Secret(token.to_owned()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let token = Secret::random(TOKEN_BYTES)?;
            // Keep: the lock makes a second writer impossible, but never replace a
            // token clients may hold.
            let written = write_private_file(&path, token.0.as_bytes(), IfExists::Keep)
                .map_err(io("cannot write the token file", &path))?;
            if written {
                tracing::info!("made a new API token in {}", path.display());
                Ok(token)
            } else {
                load_or_create(home)
            }
        }
        Err(err) => Err(io("cannot read the token file", &path)(err)),
    }
}

/// Make `folder` (the home) 0700 if others may enter it: it holds the token.
fn private_folder(folder: &Path) -> Result<(), DaemonError> {
    let io = |what: &'static str| {
        let path = folder.to_path_buf();
        move |source| DaemonError::Io { what, path, source }
    };
    let mode = std::fs::metadata(folder)
        .map_err(io("cannot read the home folder"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} was {:o}, open to others; made 0700: it holds the daemon's token",
            folder.display(),
            mode & 0o777
        );
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(mode & 0o7700))
            .map_err(io("cannot make private"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_token_is_made_once_kept_private_and_compared_whole() {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let first = load_or_create(home.path()).unwrap();
        assert_eq!(first.expose().len(), 64);
        let path = home.path().join(TOKEN_FILE);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(home.path()), 0o700);
        let again = load_or_create(home.path()).unwrap();
        assert_eq!(again.expose(), first.expose());
        assert!(first.matches(again.expose()));
        assert!(!first.matches(&first.expose()[..63]));
        assert!(!first.matches(""));
        assert_eq!(format!("{first:?}"), "Secret(..)");

        std::fs::write(&path, "not hex").unwrap();
        let refused = load_or_create(home.path()).unwrap_err().to_string();
        assert!(refused.contains("daemon.token"), "{refused}");
    }
}
