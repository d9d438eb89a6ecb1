//! What the host keeps across its own lifetimes, in `CJM_HOME/host.sqlite3`: each
//! plugin's configuration and enabled flag (`config.rs`) and what its calls were seen
//! to use (`profiles.rs`), over one SQLite file and its thread (`db.rs`).

mod config;
mod db;
mod profiles;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cjm_interface::ConfigMap;
use parking_lot::Mutex;

pub use config::KeptConfig;
pub use db::StoreError;
pub(crate) use profiles::Sample;
pub use profiles::{Aggregate, ResourceProfile};

use db::HostDb;

/// The name of the file in `CJM_HOME`.
pub(crate) const FILE_NAME: &str = "host.sqlite3";

/// What a worker of a plugin held at the end of its last sampled call: admission asks
/// a running worker only for what it would take beyond that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Resident {
    pub(crate) pid: u32,
    pub(crate) rss_mb: f64,
    pub(crate) gpu_mb: f64,
}

/// The open store, with what this host holds of it in memory: the profiles (read at
/// every admission, so never from the disk on a call's way).
#[derive(Debug)]
pub(crate) struct HostStore {
    db: HostDb,
    /// By plugin, then by configuration fingerprint.
    profiles: std::sync::Arc<Mutex<HashMap<String, HashMap<String, ResourceProfile>>>>,
    /// Calls recorded in memory and not yet in the file.
    pending: std::sync::Arc<Mutex<Vec<Sample>>>,
    resident: Mutex<HashMap<String, Resident>>,
    /// Plugins with a sample under way: one at a time each, so that a plugin called
    /// in a tight loop does not have its worker asked `/stats` after every call.
    sampling: Mutex<HashSet<String>>,
}

impl HostStore {
    /// Open the store at `path`: the names it holds disabled come with it.
    pub(crate) fn open(path: &Path) -> Result<(HostStore, HashSet<String>), StoreError> {
        let schema = format!("{}{}", config::SCHEMA, profiles::SCHEMA);
        let (db, (disabled, known)) = HostDb::open(path, &schema, |connection| {
            Ok((config::disabled(connection)?, profiles::all(connection)?))
        })?;
        let mut profiles: HashMap<String, HashMap<String, ResourceProfile>> = HashMap::new();
        for profile in known {
            profiles
                .entry(profile.plugin.clone())
                .or_default()
                .insert(profile.config_fingerprint.clone(), profile);
        }
        Ok((
            HostStore {
                db,
                profiles: std::sync::Arc::new(Mutex::new(profiles)),
                pending: std::sync::Arc::new(Mutex::new(Vec::new())),
                resident: Mutex::new(HashMap::new()),
                sampling: Mutex::new(HashSet::new()),
            },
            disabled,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        self.db.path()
    }

    /// What is kept of `name`.
    pub(crate) async fn kept(&self, name: &str) -> Result<Option<KeptConfig>, StoreError> {
        let (path, name) = (self.path().to_owned(), name.to_owned());
        self.db
            .ask(move |connection| config::get(connection, &name))
            .await
            .unwrap_or(Ok(None))
            .map_err(|err| StoreError::new(&path, "cannot read a kept configuration", err))
    }

    /// Keep `config` for `name`, checked against the schema of `schema_fingerprint`;
    /// waits until it is written.
    pub(crate) async fn save_config(
        &self,
        name: &str,
        config: ConfigMap,
        schema_fingerprint: String,
    ) {
        let name = name.to_owned();
        let path = self.path().to_owned();
        self.db
            .ask(move |connection| {
                if let Err(err) =
                    config::save_config(connection, &name, &config, &schema_fingerprint)
                {
                    tracing::warn!(
                        "host store {}: cannot keep the configuration of {name}: {err}",
                        path.display()
                    );
                }
            })
            .await;
    }

    /// Keep `name`'s enabled flag, after every change asked before (call it under the
    /// lock that orders the changes); [`flush`](Self::flush) waits for it.
    pub(crate) fn save_enabled(&self, name: &str, enabled: bool) {
        let name = name.to_owned();
        let path = self.path().to_owned();
        self.db.submit(move |connection| {
            if let Err(err) = config::save_enabled(connection, &name, enabled) {
                tracing::warn!(
                    "host store {}: cannot keep whether {name} is enabled: {err}",
                    path.display()
                );
            }
        });
    }

    /// Wait until everything asked so far is written.
    pub(crate) async fn flush(&self) {
        self.db.ask(|_| ()).await;
    }

    /// Copy the original's `plugin_configs.db` rows that are not kept here yet.
    pub(crate) async fn import_original(&self, original: &Path) -> Result<usize, StoreError> {
        let source = original.to_owned();
        self.db
            .ask(move |connection| {
                config::import_original(connection, &source).map_err(|err| {
                    StoreError::new(
                        &source,
                        "cannot import the original's kept configurations",
                        err,
                    )
                })
            })
            .await
            .unwrap_or_else(|| {
                Err(StoreError::new(
                    original,
                    "cannot import: the host store's thread is gone",
                    std::io::Error::other("host store closed"),
                ))
            })
    }

    /// Fold one call in: at once in memory, then in the file with the others that
    /// piled up meanwhile, in one transaction (another host may have folded its own
    /// calls into the same rows: the file's rows, merged, are then kept).
    pub(crate) fn record(&self, sample: Sample) {
        self.profiles
            .lock()
            .entry(sample.plugin.clone())
            .or_default()
            .entry(sample.config_fingerprint.clone())
            .or_insert_with(|| ResourceProfile::empty(&sample.plugin, &sample.config_fingerprint))
            .fold(&sample);
        let first = {
            let mut pending = self.pending.lock();
            pending.push(sample);
            pending.len() == 1
        };
        if !first {
            // Already asked for: that write takes this sample too.
            return;
        }
        let path = self.path().to_owned();
        let memory = std::sync::Arc::clone(&self.profiles);
        let pending = std::sync::Arc::clone(&self.pending);
        self.db.submit(move |connection| {
            let samples = std::mem::take(&mut *pending.lock());
            match profiles::record_all(connection, &samples) {
                Ok(merged) => {
                    let mut memory = memory.lock();
                    for profile in merged {
                        memory
                            .entry(profile.plugin.clone())
                            .or_default()
                            .insert(profile.config_fingerprint.clone(), profile);
                    }
                }
                Err(err) => tracing::warn!(
                    "host store {}: cannot record {} call(s): {err}",
                    path.display(),
                    samples.len()
                ),
            }
        });
    }

    /// The profile of `plugin` on the configuration of `config_fingerprint`, as this
    /// host knows it.
    pub(crate) fn learned(
        &self,
        plugin: &str,
        config_fingerprint: &str,
    ) -> Option<ResourceProfile> {
        self.profiles
            .lock()
            .get(plugin)
            .and_then(|by_config| by_config.get(config_fingerprint))
            .cloned()
    }

    /// Whether any call of `plugin` (on any configuration) was seen using GPU memory.
    pub(crate) fn used_gpu(&self, plugin: &str) -> bool {
        self.profiles.lock().get(plugin).is_some_and(|by_config| {
            by_config
                .values()
                .any(|profile| profile.gpu_memory_mb.max > 0.0)
        })
    }

    /// Every profile in the file (other hosts' calls included).
    pub(crate) async fn all_profiles(&self) -> Result<Vec<ResourceProfile>, StoreError> {
        let path = self.path().to_owned();
        self.db
            .ask(profiles::all)
            .await
            .unwrap_or(Ok(Vec::new()))
            .map_err(|err| StoreError::new(&path, "cannot read the resource profiles", err))
    }

    pub(crate) fn resident(&self, plugin: &str) -> Option<Resident> {
        self.resident.lock().get(plugin).copied()
    }

    pub(crate) fn set_resident(&self, plugin: &str, resident: Resident) {
        self.resident.lock().insert(plugin.to_owned(), resident);
    }

    /// Claim the one sample of `plugin` under way; `false` if one is.
    pub(crate) fn begin_sampling(&self, plugin: &str) -> bool {
        self.sampling.lock().insert(plugin.to_owned())
    }

    pub(crate) fn end_sampling(&self, plugin: &str) {
        self.sampling.lock().remove(plugin);
    }
}
