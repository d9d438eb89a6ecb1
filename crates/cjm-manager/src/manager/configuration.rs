//! A loaded plugin's configuration: the one in force, a partial update checked
//! against its schema, and what its worker says of its fields.

use std::collections::BTreeMap;
use std::sync::Arc;

use cjm_interface::ConfigMap;
use serde_json::Value;

use super::{invalid_config, PluginConfig, PluginManager};
use crate::loaded::{LoadedPlugin, Worker};
use crate::ManagerError;

/// # Configuration
///
/// A loaded plugin's configuration: the one in force (and where it came from), a
/// partial update checked against the plugin's schema, the schema and the live
/// options its worker reports. A configuration given at load or reload is
/// [Lifecycle](#lifecycle)'s.
impl PluginManager {
    /// The configuration in force: the worker's own word while it runs, else (a
    /// worker stopped while idle or by eviction, or dead) the configuration the host
    /// keeps for it and will start it with. [`plugin_config_detail`] says which.
    ///
    /// [`plugin_config_detail`]: Self::plugin_config_detail
    pub async fn plugin_config(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.plugin_config_detail(name).await?.config)
    }

    /// [`plugin_config`](Self::plugin_config), and where it came from.
    pub async fn plugin_config_detail(&self, name: &str) -> Result<PluginConfig, ManagerError> {
        let plugin = self.loaded(name)?;
        match plugin.worker().await {
            Worker::Running(proxy) => Ok(PluginConfig {
                config: proxy.current_config().await?,
                worker_stopped: None,
            }),
            Worker::Stopped(reason) | Worker::Dead(reason) => Ok(PluginConfig {
                config: Value::Object(plugin.config()),
                worker_stopped: Some(reason),
            }),
        }
    }

    /// Re-configure a running plugin without restarting it. `update` is partial: its
    /// keys replace those of the configuration last given, the others stay. The
    /// result is checked against the config schema before it is sent; a refused
    /// configuration leaves the old one in force. A stopped plugin keeps the new
    /// configuration for its next start (and the next host too, with
    /// [`keep_configs`](crate::ManagerOptions::keep_configs)).
    pub async fn update_plugin_config(
        &self,
        name: &str,
        update: ConfigMap,
    ) -> Result<(), ManagerError> {
        let plugin = self.loaded(name)?;
        let config = plugin
            .config_validator
            .validate_update(&plugin.config(), &update)
            .map_err(|errors| invalid_config(name, errors))?;
        let one_at_a_time = plugin.lock_lifecycle().await;
        if let Some(proxy) = plugin.proxy().filter(|proxy| proxy.is_running()) {
            let fingerprint = plugin.config_validator.fingerprint();
            // The plugin's own reconfigure where it has one (it may keep a loaded
            // model), else a fresh initialize.
            let reconfigured = proxy
                .reconfigure(plugin.config(), config.clone(), fingerprint)
                .await?;
            if reconfigured == cjm_proxy::HookOutcome::NotSupported {
                proxy
                    .initialize_checked(config.clone(), fingerprint)
                    .await?;
            }
        }
        plugin.set_config(config.clone());
        drop(one_at_a_time);
        self.keep_config(name, &config, &plugin.config_validator)
            .await;
        Ok(())
    }

    /// The live domains of the plugin's configuration fields (the models present,
    /// the devices), as its worker tells them; `{}` when it has none to tell.
    pub async fn plugin_config_options(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.running_worker(name).await?.config_options().await?)
    }

    /// The config schema the plugin's worker reports.
    pub async fn plugin_config_schema(&self, name: &str) -> Result<Value, ManagerError> {
        Ok(self.running_worker(name).await?.config_schema().await?)
    }

    /// The configuration of every loaded plugin with a running worker that can report
    /// it.
    pub async fn all_plugin_configs(&self) -> BTreeMap<String, Value> {
        let plugins: Vec<Arc<LoadedPlugin>> = self.shared.loaded.read().values().cloned().collect();
        let mut configs = BTreeMap::new();
        for plugin in plugins {
            let Some(proxy) = plugin.proxy().filter(|proxy| proxy.is_running()) else {
                continue;
            };
            match proxy.current_config().await {
                Ok(config) => {
                    configs.insert(plugin.name().to_owned(), config);
                }
                Err(err) => tracing::warn!("{err}"),
            }
        }
        configs
    }
}
