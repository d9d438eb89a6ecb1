//! Plugins' secrets: `$CJM_HOME/secrets.json`, mode 0600, `{"plugins": {plugin:
//! {VARIABLE: value}}}`. Here, beside `CjmHome`, because the CLI writes the file and
//! the manager reads it, and neither should own the format.
//!
//! The original 0.0.46 keeps `<data_dir>/secrets/secrets.json` keyed by a scope
//! first; it has one scope in practice, so the file here has none (a later scope is
//! a new top-level key). A value is only ever handed to a worker's environment:
//! never to a command line, and [`Secret`]'s `Debug` does not show it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::private::IfExists;

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
        /// What is wrong and where (line and column), never quoting the file: what is
        /// there may be a secret.
        reason: String,
    },
    /// The path is not a regular file (a folder, a device, a FIFO).
    #[error("secret store {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The variable is not one a manifest's `worker_env` can declare, so no worker
    /// would ever be given it.
    #[error("secret {variable:?}: {}", crate::worker_env::VARIABLE_NAME_RULE)]
    NotAVariable {
        /// The name as given.
        variable: String,
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
        Self::check_variable(variable)?;
        let _locked = self.lock()?;
        let mut stored = self.read()?;
        stored
            .plugins
            .entry(plugin.to_owned())
            .or_default()
            .insert(variable.to_owned(), value);
        self.write(&stored)
    }

    /// Refuse a `variable` that no manifest's `worker_env` can declare (so no worker
    /// would be given it): before asking anyone for its value.
    pub fn check_variable(variable: &str) -> Result<(), SecretStoreError> {
        if crate::worker_env::is_variable_name(variable) {
            return Ok(());
        }
        Err(SecretStoreError::NotAVariable {
            variable: variable.to_owned(),
        })
    }

    /// Remove plugin `plugin`'s secret `variable`; whether there was one.
    pub fn remove(&self, plugin: &str, variable: &str) -> Result<bool, SecretStoreError> {
        let _locked = self.lock()?;
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

    /// The lock file beside the store: `secrets.json.lock`.
    fn lock_path(&self) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Hold the store's exclusive lock until the file returned is dropped (closing it
    /// releases the lock, whoever else holds the store open).
    fn lock(&self) -> Result<File, SecretStoreError> {
        let path = self.lock_path();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecretStoreError::Io { path, source }
        };
        crate::private::create_private_parent(&self.path).map_err(io(&self.path))?;
        let file = crate::private::private_file_options()
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => return Err(io(&path)(err.into())),
            }
        }
    }

    fn read(&self) -> Result<Stored, SecretStoreError> {
        let io = |source| SecretStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(err) => return Err(io(err)),
        };
        // The mode of the file opened (fstat), not of whatever the path names a moment
        // later: what is checked is what is read.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SecretStoreError::NotAFile {
                path: self.path.clone(),
            });
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretStoreError::Exposed {
                path: self.path.clone(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        serde_json::from_str(&text).map_err(|err| SecretStoreError::Malformed {
            path: self.path.clone(),
            reason: describe_without_quoting(&err),
        })
    }

    /// Written whole to a new file made 0600 before any byte goes in, then renamed
    /// over the old one: a reader sees the old store or the new, never half of one.
    /// Called with the lock held.
    fn write(&self, stored: &Stored) -> Result<(), SecretStoreError> {
        let text =
            serde_json::to_string_pretty(stored).map_err(|err| SecretStoreError::Malformed {
                path: self.path.clone(),
                reason: describe_without_quoting(&err),
            })?;
        crate::private::write_private_file(&self.path, text.as_bytes(), IfExists::Replace)
            .map(|_| ())
            .map_err(|source| SecretStoreError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// What is wrong with a store that does not parse, and where, in words that quote
/// nothing of it: serde_json's own message can hold a value ("invalid type: string
/// \"...\"").
fn describe_without_quoting(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match err.classify() {
        Category::Io => "it cannot be read",
        Category::Syntax => "it is not JSON",
        Category::Eof => "it ends too early",
        Category::Data => {
            "it is not shaped as {\"plugins\": {plugin: {VARIABLE: \"value\"}}} \
             (a value of another type, or an unknown field)"
        }
    };
    format!("{what}, at line {} column {}", err.line(), err.column())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_name_no_worker_could_be_given_is_refused_and_nothing_is_written() {
        let home = tempfile::tempdir().unwrap();
        let store = SecretStore::at(home.path().join("secrets.json"));
        for bad in ["bad name", "1KEY", "api_key", "", "A-B"] {
            let err = store.set("p", bad, Secret::new("v")).unwrap_err();
            assert!(
                matches!(&err, SecretStoreError::NotAVariable { variable } if variable == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("not a variable name"), "{err}");
        }
        assert!(!store.path().exists());
    }

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
        // No temporary file is left behind: the store and its lock file only.
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 2);
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

    #[test]
    fn a_malformed_store_is_described_without_quoting_a_value() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("secrets.json");
        let store = SecretStore::at(&path);
        for text in [
            // A value where a plugin's map belongs: serde_json would quote it.
            "{\"plugins\": {\"p\": \"sk-live-5ecret\"}}",
            "{\"plugins\": {\"p\": {\"K\": [\"sk-live-5ecret\"]}}}",
            "{\"sk-live-5ecret\": 1}",
            "{\"plugins\": {\"p\": {\"K\": \"sk-live-5ecret\"}} trailing",
        ] {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let err = store.get("p", "K").unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("5ecret"), "{text}: {shown}");
                assert!(shown.contains("at line 1 column"), "{text}: {shown}");
            }
        }
    }

    #[test]
    fn a_store_that_is_not_a_file_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("secrets.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = SecretStore::at(&path).get("p", "K").unwrap_err();
        assert!(matches!(err, SecretStoreError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn concurrent_changes_are_never_lost() {
        const WRITERS: usize = 8;
        const KEYS: usize = 15;
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("secrets.json");
        // Each writer its own store value and its own keys; all start at once.
        let start = std::sync::Arc::new(std::sync::Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = SecretStore::at(&path);
                let start = std::sync::Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    for key in 0..KEYS {
                        store
                            .set("p", &format!("K{writer}_{key}"), Secret::new("v"))
                            .unwrap();
                        if key % 3 == 0 {
                            store
                                .set("gone", &format!("K{writer}_{key}"), Secret::new("x"))
                                .unwrap();
                            assert!(store.remove("gone", &format!("K{writer}_{key}")).unwrap());
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let names = SecretStore::at(&path).names().unwrap();
        assert_eq!(names["p"].len(), WRITERS * KEYS, "{names:?}");
        assert!(!names.contains_key("gone"), "{names:?}");
        let lock = home.path().join("secrets.json.lock");
        assert_eq!(
            std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The store and its lock, no temporary file.
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 2);
    }

    /// The writer [`concurrent_processes_never_lose_a_change`] runs in a process of its
    /// own (this test binary again); without its variables it does nothing.
    #[test]
    fn writer_in_a_child_process() {
        let (Some(path), Some(writer)) = (
            std::env::var_os("CJM_TEST_SECRETS_PATH"),
            std::env::var_os("CJM_TEST_SECRETS_WRITER"),
        ) else {
            return;
        };
        let store = SecretStore::at(path);
        let writer = writer.to_string_lossy().into_owned();
        for key in 0..20 {
            store
                .set("p", &format!("K{writer}_{key}"), Secret::new("v"))
                .unwrap();
        }
    }

    #[test]
    fn concurrent_processes_never_lose_a_change() {
        const WRITERS: usize = 4;
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("secrets.json");
        let test_binary = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..WRITERS)
            .map(|writer| {
                std::process::Command::new(&test_binary)
                    .args(["--exact", "secrets::tests::writer_in_a_child_process"])
                    .args(["--test-threads", "1"])
                    .env("CJM_TEST_SECRETS_PATH", &path)
                    .env("CJM_TEST_SECRETS_WRITER", writer.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let names = SecretStore::at(&path).names().unwrap();
        assert_eq!(names["p"].len(), WRITERS * 20, "{names:?}");
    }
}
