//! Plugins' secrets: `$CJM_HOME/secrets.json`, mode 0600, `{"plugins": {plugin:
//! {VARIABLE: value}}}`. Here, beside `CjmHome`, because the CLI writes the file and
//! the manager reads it, and neither should own the format.
//!
//! The original 0.0.46 keeps `<data_dir>/secrets/secrets.json` keyed by a scope
//! first; it has one scope in practice, so the file here has none (a later scope is
//! a new top-level key). A value is only ever handed to a worker's environment:
//! never to a command line, and [`Secret`]'s `Debug` does not show it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A secret's value; `Debug` shows only that there is one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value wrapped.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the worker's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why the secret store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretStoreError {
    /// The file could not be read or written.
    #[error("secret store {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a secret store; it is left as it is.
    #[error(
        "secret store {} is not valid (fix or remove it; nothing was changed): {reason}",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Others may read the file: its secrets are not used until that is fixed.
    #[error("secret store {} can be read by others (mode {mode:o}); chmod 600 it", path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default)]
    plugins: BTreeMap<String, BTreeMap<String, Secret>>,
}

/// The secret store at a path (see the module's documentation).
#[derive(Debug, Clone)]
pub struct SecretStore {
    path: PathBuf,
}

impl SecretStore {
    /// The store in `path`; nothing is read or made until asked.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        SecretStore { path: path.into() }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Plugin `plugin`'s secret `variable`, if one is set.
    pub fn get(&self, plugin: &str, variable: &str) -> Result<Option<Secret>, SecretStoreError> {
        Ok(self
            .read()?
            .plugins
            .get(plugin)
            .and_then(|secrets| secrets.get(variable))
            .cloned())
    }

    /// The names of the variables set, by plugin (never the values).
    pub fn names(&self) -> Result<BTreeMap<String, Vec<String>>, SecretStoreError> {
        Ok(self
            .read()?
            .plugins
            .into_iter()
            .map(|(plugin, secrets)| (plugin, secrets.into_keys().collect()))
            .collect())
    }

    /// Set plugin `plugin`'s secret `variable`.
    pub fn set(&self, plugin: &str, variable: &str, value: Secret) -> Result<(), SecretStoreError> {
        let mut stored = self.read()?;
        stored
            .plugins
            .entry(plugin.to_owned())
            .or_default()
            .insert(variable.to_owned(), value);
        self.write(&stored)
    }

    /// Remove plugin `plugin`'s secret `variable`; whether there was one.
    pub fn remove(&self, plugin: &str, variable: &str) -> Result<bool, SecretStoreError> {
        let mut stored = self.read()?;
        let Some(secrets) = stored.plugins.get_mut(plugin) else {
            return Ok(false);
        };
        let removed = secrets.remove(variable).is_some();
        if secrets.is_empty() {
            stored.plugins.remove(plugin);
        }
        if removed {
            self.write(&stored)?;
        }
        Ok(removed)
    }

    fn read(&self) -> Result<Stored, SecretStoreError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| SecretStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(err) => return Err(io(err)),
        };
        let mode = std::fs::metadata(&self.path)
            .map_err(io)?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretStoreError::Exposed {
                path: self.path.clone(),
                mode,
            });
        }
        serde_json::from_str(&text).map_err(|err| SecretStoreError::Malformed {
            path: self.path.clone(),
            reason: err.to_string(),
        })
    }

    /// Written whole to a new file made 0600 before any byte goes in, then renamed
    /// over the old one: a reader sees the old store or the new, never half of one.
    fn write(&self, stored: &Stored) -> Result<(), SecretStoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecretStoreError::Io { path, source }
        };
        if let Some(folder) = self.path.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
        let temporary = self
            .path
            .with_extension(format!("json.tmp{}", std::process::id()));
        let text =
            serde_json::to_string_pretty(stored).map_err(|err| SecretStoreError::Malformed {
                path: self.path.clone(),
                reason: err.to_string(),
            })?;
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })();
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(io(&temporary)(err));
        }
        std::fs::rename(&temporary, &self.path).map_err(|err| {
            let _ = std::fs::remove_file(&temporary);
            io(&self.path)(err)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secrets_are_kept_0600_and_replaced_whole() {
        let home = tempfile::tempdir().unwrap();
        let store = SecretStore::at(home.path().join("secrets.json"));
        assert_eq!(store.get("whisper", "API_KEY").unwrap(), None);
        store
            .set("whisper", "API_KEY", Secret::new("s3cret"))
            .unwrap();
        store.set("whisper", "OTHER", Secret::new("x")).unwrap();
        assert_eq!(
            store.get("whisper", "API_KEY").unwrap(),
            Some(Secret::new("s3cret"))
        );
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.names().unwrap()["whisper"], ["API_KEY", "OTHER"]);
        assert!(store.remove("whisper", "API_KEY").unwrap());
        assert!(!store.remove("whisper", "API_KEY").unwrap());
        assert_eq!(
            store.get("whisper", "OTHER").unwrap(),
            Some(Secret::new("x"))
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 1);
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "Secret(..)");
    }

    #[test]
    fn a_malformed_or_exposed_store_is_refused_and_left_as_it_was() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("secrets.json");
        let store = SecretStore::at(&path);
        std::fs::write(&path, "{\"plugins\": [").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = store
            .set("p", "K", Secret::new("v"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not valid") && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"plugins\": [");

        std::fs::write(&path, "{\"plugins\": {\"p\": {\"K\": \"v\"}}}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.get("p", "K").unwrap_err().to_string();
        assert!(err.contains("can be read by others (mode 644)"), "{err}");
    }
}
