//! What the manager can tell of its loaded plugins: which, their metadata, their
//! worker and its state, their calls in flight, their logs.

use cjm_metadata::PluginMeta;

use super::{categories, last_lines, PluginManager, WorkerInfo};
use crate::loaded::Worker;
use crate::{ManagerError, PluginState, PluginStatus};

/// # Loaded plugins and their status
///
/// Which plugins are loaded, their metadata and categories, their current worker
/// (pid, endpoint, version, log), whether it is up, stopped or dead and why, the
/// calls in flight, and the plugin's log.
impl PluginManager {
    /// Metadata of the loaded plugins, sorted by name.
    pub fn list_plugins(&self) -> Vec<PluginMeta> {
        let mut metas: Vec<PluginMeta> = self
            .shared
            .loaded
            .read()
            .values()
            .map(|plugin| self.with_enabled(plugin.meta()))
            .collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        metas
    }

    /// The current worker of a loaded plugin: its pid, endpoint, version and log.
    /// `None` when the plugin is not loaded or has no worker now (stopped, or its
    /// last start failed).
    pub fn worker_info(&self, name: &str) -> Option<WorkerInfo> {
        let proxy = self.loaded(name).ok()?.proxy()?;
        Some(WorkerInfo {
            pid: proxy.worker_pid(),
            location: proxy.location().to_owned(),
            local: proxy.is_local(),
            endpoint: proxy.endpoint().clone(),
            version: proxy.version().to_owned(),
            log_path: proxy.log_path().to_path_buf(),
            substrate_version: proxy.python_runtime().substrate_version.clone(),
            python_executable: proxy.python_runtime().python_executable.clone(),
        })
    }

    /// Metadata of a loaded plugin.
    pub fn plugin_meta(&self, name: &str) -> Option<PluginMeta> {
        self.loaded(name)
            .ok()
            .map(|plugin| self.with_enabled(plugin.meta()))
    }

    /// Executions of the plugin admitted and not yet finished (streams included).
    pub fn active_executions(&self, name: &str) -> Option<usize> {
        self.loaded(name)
            .ok()
            .map(|plugin| plugin.active_executions())
    }

    /// Whether the plugin is loaded (whatever its worker's state).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.shared.loaded.read().contains_key(name)
    }

    /// Loaded plugins of one category.
    pub fn plugins_by_category(&self, category: &str) -> Vec<PluginMeta> {
        self.list_plugins()
            .into_iter()
            .filter(|meta| meta.category == category)
            .collect()
    }

    /// The categories of the loaded plugins, sorted, without the empty one.
    pub fn loaded_categories(&self) -> Vec<String> {
        categories(self.list_plugins())
    }

    /// Whether a loaded plugin's worker is up, stopped or dead (`None`: not loaded).
    pub fn plugin_status(&self, name: &str) -> Option<PluginStatus> {
        let plugin = self.loaded(name).ok()?;
        let (state, last_failure) = match plugin.worker_now() {
            Some(Worker::Running(_)) => (PluginState::Running, None),
            Some(Worker::Stopped(reason)) => (PluginState::Stopped, Some(reason)),
            Some(Worker::Dead(reason)) => (PluginState::Dead, Some(reason)),
            None => (PluginState::Restarting, None),
        };
        Some(PluginStatus {
            state,
            pid: plugin.proxy().and_then(|proxy| proxy.pid()),
            restarts: plugin.restarts(),
            last_failure,
            keep_alive: self.keep_alive_of(&plugin),
            idle_stop_at: self.idle_stop_at(&plugin),
        })
    }

    /// Loaded and its worker up.
    pub fn is_running(&self, name: &str) -> bool {
        self.plugin_status(name)
            .is_some_and(|status| status.state == PluginState::Running)
    }

    /// The last `lines` lines of the plugin's log (of every run, not only the current
    /// one). Works for plugins that are not loaded, too.
    pub fn plugin_logs(&self, name: &str, lines: usize) -> Result<String, ManagerError> {
        let path = self.shared.options.home.log_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(last_lines(&String::from_utf8_lossy(&bytes), lines)),
            Err(source) => Err(ManagerError::Log {
                name: name.to_owned(),
                path,
                source,
            }),
        }
    }
}
