//! Task adapters (the original 0.0.46's typed task channel): the adapters discovered
//! beside the plugins, which plugins each fits (its protocol against the structural
//! surface the plugin's manifest records), and calls of a task's method.

use cjm_interface::wire::CallOutput;
use cjm_interface::CallArgs;
use cjm_metadata::{AdapterManifest, SurfaceMatch};
use cjm_proxy::CallTarget;
use serde_json::Value;

use super::PluginManager;
use crate::discovery::DiscoveredPlugin;
use crate::ManagerError;

/// A plugin that can serve a task, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskServer {
    /// The plugin.
    pub plugin: String,
    /// The adapter that fits it (bound in its worker at start), by name; `None` for
    /// an adapter built into the plugin's own worker (one of ours).
    pub adapter: Option<String>,
}

/// # Task adapters
///
/// The adapters the last discovery found, which plugins they fit, and calls of a
/// task's method (`POST /task`) on a loaded plugin: claimed, admitted and timed as
/// [`execute_plugin`](Self::execute_plugin) is. A Python worker of the original is
/// started with every discovered adapter that fits it (`--adapters module:Class,..`).
impl PluginManager {
    /// Every adapter the last discovery pass found.
    pub fn adapter_manifests(&self) -> Vec<AdapterManifest> {
        self.shared
            .discovery
            .read()
            .adapters
            .iter()
            .map(|found| found.manifest.clone())
            .collect()
    }

    /// The discovered adapters of task `task`.
    pub fn adapters_for_task(&self, task: &str) -> Vec<AdapterManifest> {
        self.adapter_manifests()
            .into_iter()
            .filter(|adapter| adapter.task_name == task)
            .collect()
    }

    /// Whether adapter `adapter` (by name) fits discovered plugin `plugin`: the
    /// original's verdict; `None` when either is unknown.
    pub fn check_adapter_compatibility(&self, adapter: &str, plugin: &str) -> Option<SurfaceMatch> {
        let found = self.discovered_plugin(plugin)?;
        let discovery = self.shared.discovery.read();
        let adapter = discovery
            .adapters
            .iter()
            .find(|found| found.manifest.name == adapter)?;
        Some(adapter.manifest.check_against(surface_of(&found)))
    }

    /// The discovered adapters that fit discovered plugin `plugin` (those its worker
    /// is started with, when it is the original's).
    pub fn matched_adapters(&self, plugin: &str) -> Vec<AdapterManifest> {
        match self.discovered_plugin(plugin) {
            Some(found) => fitting(&self.adapter_manifests(), &found),
            None => Vec::new(),
        }
    }

    /// The discovered plugins that can serve task `task`: through a discovered
    /// adapter that fits them, or through one built into their worker (listed in
    /// their recorded surface's `task_adapters`).
    pub fn capabilities_for_task(&self, task: &str) -> Vec<TaskServer> {
        let adapters = self.adapters_for_task(task);
        let discovery = self.shared.discovery.read();
        let mut servers = Vec::new();
        for found in &discovery.plugins {
            if built_in_tasks(found).any(|served| served == task) {
                servers.push(TaskServer {
                    plugin: found.meta.name.clone(),
                    adapter: None,
                });
            }
            for adapter in fitting(&adapters, found) {
                servers.push(TaskServer {
                    plugin: found.meta.name.clone(),
                    adapter: Some(adapter.name),
                });
            }
        }
        servers
    }

    /// Call `method` of task `task` on loaded plugin `name` with keyword arguments
    /// `kwargs`, within the plugin's call timeout. A task or method its worker does
    /// not serve is a [`ProxyError::UnknownTask`](crate::ProxyError::UnknownTask)
    /// naming what it serves; a failure is the plugin's typed error, as for
    /// [`execute_plugin`](Self::execute_plugin).
    pub async fn execute_task(
        &self,
        name: &str,
        task: &str,
        method: &str,
        kwargs: CallArgs,
    ) -> Result<Value, ManagerError> {
        let (proxy, execution) = self.begin_execution(name).await?;
        let call = async {
            let answered = proxy
                .call_enveloped(CallTarget::Task { task, method }, kwargs, None, None)
                .await;
            if !answered.accounts.is_empty() {
                tracing::debug!(
                    "plugin {name}: task {task} {method}: accounts {:?}",
                    answered.accounts
                );
            }
            answered.result.map(|(value, _)| value)
        };
        let Some(limit) = self.call_timeout(name, None) else {
            return Ok(call.await?);
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(self.timed_out(name, execution.plugin(), limit)),
        }
    }

    /// [`execute_task`](Self::execute_task), with a typed result of the original
    /// 0.0.46 (`{"__wire__": kind, "data": ..}`: its adapters return their DTOs so,
    /// such as the graph-storage task's `graph.node`) given as its kind and data, as
    /// its own host's `wire_decode` gives them.
    pub async fn execute_task_output(
        &self,
        name: &str,
        task: &str,
        method: &str,
        kwargs: CallArgs,
    ) -> Result<CallOutput, ManagerError> {
        self.execute_task(name, task, method, kwargs)
            .await
            .map(CallOutput::from_value)
    }
}

/// The structural surface a plugin's manifest records (the 0.0.46 layout's
/// `code.structural_surface`, or ours from `--manifest`).
pub(crate) fn surface_of(found: &DiscoveredPlugin) -> Option<&Value> {
    found.manifest.extra.get("structural_surface")
}

/// The adapters of `adapters` that fit `found`.
pub(crate) fn fitting(
    adapters: &[AdapterManifest],
    found: &DiscoveredPlugin,
) -> Vec<AdapterManifest> {
    let surface = surface_of(found);
    adapters
        .iter()
        .filter(|adapter| adapter.check_against(surface).compatible)
        .cloned()
        .collect()
}

fn built_in_tasks(found: &DiscoveredPlugin) -> impl Iterator<Item = &str> {
    surface_of(found)
        .and_then(|surface| surface.get("task_adapters"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|adapter| adapter.get("task_name").and_then(Value::as_str))
}
