//! Kept configuration: each plugin's (and instance's) configuration and enabled flag
//! across the host's lifetimes, and the drift check that guards a kept
//! configuration when its plugin's config schema has changed since.

use std::path::Path;

use cjm_interface::ConfigMap;
use cjm_proxy::RemotePluginProxy;
use cjm_validation::{schema_fingerprint, ConfigValidator, InvalidConfig};
use serde_json::Value;

use super::PluginManager;
use crate::store::{KeptConfig, StoreError};
use crate::ManagerError;

/// A kept configuration refused at load: the plugin's live config schema is not the
/// one it was checked against, and it breaks the new one. The plugin started on its
/// defaults instead; nothing of the refused configuration was sent to its worker.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "plugin {plugin}: its kept configuration was refused: its config schema changed \
     ({} -> {live_fingerprint}): {refused}; it started on its defaults",
    kept_fingerprint.as_deref().unwrap_or("unknown")
)]
#[non_exhaustive]
pub struct ConfigDrift {
    /// The plugin or instance.
    pub plugin: String,
    /// The fingerprint of the schema the kept configuration was checked against
    /// (`None`: unknown, as for one imported from the original's host).
    pub kept_fingerprint: Option<String>,
    /// The fingerprint of the schema its worker reports now.
    pub live_fingerprint: String,
    /// The refused configuration.
    pub kept: ConfigMap,
    /// Each field of it that breaks the new schema, and why.
    pub refused: InvalidConfig,
}

/// # Kept configuration
///
/// With [`ManagerOptions::keep_configs`] (on by default) the host keeps, in
/// `CJM_HOME/host.sqlite3`, each plugin's configuration (given at load or reload, or
/// updated), the fingerprint of the config schema it was checked against, and
/// whether the plugin is enabled. A plugin loaded without a configuration starts on
/// the kept one; when its worker's live `/config_schema` is not the one the kept
/// configuration was checked against, it is checked against the new schema first,
/// and a refusal ([`config_drift`](Self::config_drift)) starts the plugin on its
/// defaults. A disabled plugin stays disabled across restarts.
///
/// [`ManagerOptions::keep_configs`]: crate::ManagerOptions::keep_configs
impl PluginManager {
    /// What is kept of `name` (a plugin or instance, loaded or not); `None` when
    /// nothing is, or configurations are not kept.
    pub async fn kept_config(&self, name: &str) -> Result<Option<KeptConfig>, ManagerError> {
        match self.config_store() {
            Some(store) => Ok(store.kept(name).await?),
            None => Ok(None),
        }
    }

    /// Why `name`'s kept configuration was refused at its last load, if it was.
    pub fn config_drift(&self, name: &str) -> Option<ConfigDrift> {
        self.shared.drifts.lock().get(name).cloned()
    }

    /// Import the original host's kept configurations (its `plugin_configs.db`,
    /// `~/.cjm/plugin_configs.db` by default): each plugin with nothing kept here yet
    /// gets its configuration and enabled flag, with no schema fingerprint, so that
    /// its first load checks it against its worker's live schema. The number
    /// imported. Enabled flags take effect for the next host.
    pub async fn import_original_configs(&self, original: &Path) -> Result<usize, ManagerError> {
        let Some(store) = self.config_store() else {
            return Err(StoreError::new(
                original,
                "cannot import: configurations are not kept (ManagerOptions::keep_configs is off)",
                std::io::Error::other("keep_configs is off"),
            )
            .into());
        };
        Ok(store.import_original(original).await?)
    }
}

/// The configuration a worker is initialized with at load, and whether it is to be
/// kept (again).
pub(super) struct StartConfig {
    pub(super) config: ConfigMap,
    pub(super) keep: bool,
}

impl PluginManager {
    fn config_store(&self) -> Option<&crate::store::HostStore> {
        self.shared
            .store
            .as_ref()
            .filter(|_| self.shared.options.keep_configs)
    }

    /// What is kept of `name` to start it on, if anything; a store that cannot be read
    /// is said and the plugin starts as if nothing were kept.
    pub(super) async fn kept_for_start(&self, name: &str) -> Option<KeptConfig> {
        match self.kept_config(name).await {
            Ok(kept) => kept.filter(|kept| kept.config.is_some()),
            Err(err) => {
                tracing::warn!("{err}; plugin {name} starts as if nothing were kept");
                None
            }
        }
    }

    /// Ask the new worker of `name` its config schema (when configurations are kept)
    /// and remember its fingerprint; the schema, when it answered.
    pub(super) async fn live_schema(
        &self,
        name: &str,
        proxy: &RemotePluginProxy,
        manifest_validator: &ConfigValidator,
    ) -> Option<Value> {
        self.config_store()?;
        let (schema, fingerprint) = match proxy.config_schema().await {
            Ok(schema) => {
                let fingerprint = schema_fingerprint(&schema);
                (Some(schema), fingerprint)
            }
            Err(err) => {
                tracing::debug!(
                    "plugin {name}: no live config schema ({err}); the manifest's stands for it"
                );
                (None, manifest_validator.fingerprint().to_owned())
            }
        };
        self.shared
            .live_schemas
            .lock()
            .insert(name.to_owned(), fingerprint);
        schema
    }

    /// The configuration `name` starts on: `given` (checked already), else the kept
    /// one if the schema it was checked against is the live one, or it satisfies the
    /// live one, else the defaults.
    pub(super) fn start_config(
        &self,
        name: &str,
        manifest_validator: &ConfigValidator,
        given: Option<ConfigMap>,
        kept: Option<KeptConfig>,
        live_schema: Option<&Value>,
    ) -> StartConfig {
        if let Some(config) = given {
            return StartConfig { config, keep: true };
        }
        let defaults = StartConfig {
            config: manifest_validator.defaults().clone(),
            keep: false,
        };
        let Some(KeptConfig {
            config: Some(kept),
            schema_fingerprint: kept_fingerprint,
            ..
        }) = kept
        else {
            return defaults;
        };
        self.shared.drifts.lock().remove(name);
        let live_fingerprint = self.live_fingerprint(name, manifest_validator);
        if kept_fingerprint.as_deref() == Some(live_fingerprint.as_str()) {
            return match manifest_validator.validate_map(kept.clone()) {
                Ok(config) => {
                    tracing::info!("plugin {name} starts on its kept configuration");
                    StartConfig {
                        config,
                        keep: false,
                    }
                }
                Err(refused) => self.refuse(
                    name,
                    kept_fingerprint,
                    live_fingerprint,
                    kept,
                    refused,
                    defaults,
                ),
            };
        }
        // The schema changed since: the kept configuration must satisfy the new one.
        let live_validator = match live_schema.map(ConfigValidator::new) {
            Some(Ok(validator)) => validator,
            Some(Err(err)) => {
                tracing::warn!(
                    "plugin {name}: its live config schema cannot check its kept configuration \
                     ({err}); it starts on its defaults"
                );
                return defaults;
            }
            None => (*manifest_validator).clone(),
        };
        match live_validator.validate_map(kept.clone()) {
            Ok(config) => {
                tracing::info!(
                    "plugin {name} starts on its kept configuration, which its changed config \
                     schema still accepts"
                );
                StartConfig { config, keep: true }
            }
            Err(refused) => {
                let defaults = StartConfig {
                    config: live_validator.defaults().clone(),
                    keep: false,
                };
                self.refuse(
                    name,
                    kept_fingerprint,
                    live_fingerprint,
                    kept,
                    refused,
                    defaults,
                )
            }
        }
    }

    fn refuse(
        &self,
        name: &str,
        kept_fingerprint: Option<String>,
        live_fingerprint: String,
        kept: ConfigMap,
        refused: InvalidConfig,
        defaults: StartConfig,
    ) -> StartConfig {
        for violation in refused.violations() {
            tracing::warn!(
                plugin = name,
                field = violation.path.as_str(),
                "plugin {name}: kept configuration refused by its changed config schema: \
                 field {:?}: {}",
                violation.path,
                violation.message
            );
        }
        let drift = ConfigDrift {
            plugin: name.to_owned(),
            kept_fingerprint,
            live_fingerprint,
            kept,
            refused,
        };
        tracing::warn!("{drift}");
        self.shared.drifts.lock().insert(name.to_owned(), drift);
        defaults
    }

    fn live_fingerprint(&self, name: &str, manifest_validator: &ConfigValidator) -> String {
        self.shared
            .live_schemas
            .lock()
            .get(name)
            .cloned()
            .unwrap_or_else(|| manifest_validator.fingerprint().to_owned())
    }

    /// Keep `config` as `name`'s, checked against its live schema (the manifest's
    /// where the worker did not say); waits until it is written.
    pub(super) async fn keep_config(
        &self,
        name: &str,
        config: &ConfigMap,
        manifest_validator: &ConfigValidator,
    ) {
        let Some(store) = self.config_store() else {
            return;
        };
        let fingerprint = self.live_fingerprint(name, manifest_validator);
        store.save_config(name, config.clone(), fingerprint).await;
    }

    /// Keep whether `name` is enabled, in the order of the calls (call it under the
    /// lock of the disabled set); [`kept_written`](Self::kept_written) waits for it.
    pub(super) fn keep_enabled(&self, name: &str, enabled: bool) {
        if let Some(store) = self.config_store() {
            store.save_enabled(name, enabled);
        }
    }

    /// Wait until every change kept so far is written.
    pub(super) async fn kept_written(&self) {
        if let Some(store) = self.config_store() {
            store.flush().await;
        }
    }
}
