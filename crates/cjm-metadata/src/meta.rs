use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Manifest, ResourceRequirements};

/// Metadata about a plugin, discovered or loaded: the original's `PluginMeta`.
///
/// Non-exhaustive: made from a [`Manifest`] (`PluginMeta::from(&manifest)`), then
/// changed field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PluginMeta {
    /// The plugin's name (its manifest's).
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// One line on what it does; may be empty.
    #[serde(default)]
    pub description: String,
    /// Who wrote it; may be empty.
    #[serde(default)]
    pub author: String,
    /// The package it comes from; may be empty.
    #[serde(default)]
    pub package_name: String,
    /// Such as `"transcription"` or `"system_monitor"`.
    #[serde(default)]
    pub category: String,
    /// Fully qualified interface name.
    #[serde(default)]
    pub interface: String,
    /// JSON Schema of its configuration; `{}` when it declares none.
    #[serde(default)]
    pub config_schema: Value,
    /// What one execution needs from the machine.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Whether it may be executed; a disabled plugin is refused.
    pub enabled: bool,
    /// Unix time of the last execution in seconds; 0.0 when never executed.
    #[serde(default)]
    pub last_executed: f64,
}

impl PluginMeta {
    /// When the plugin last executed, if ever.
    pub fn last_executed_at(&self) -> Option<SystemTime> {
        (self.last_executed > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(self.last_executed))
    }

    /// Record an execution at `at`.
    pub fn mark_executed(&mut self, at: SystemTime) {
        self.last_executed = at
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs_f64())
            .unwrap_or(0.0);
    }
}

impl From<&Manifest> for PluginMeta {
    fn from(manifest: &Manifest) -> Self {
        PluginMeta {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            author: manifest.author.clone(),
            package_name: manifest.package_name.clone(),
            category: manifest.category.clone(),
            interface: manifest.interface.clone(),
            config_schema: manifest.config_schema.clone(),
            resources: manifest.resources.clone(),
            enabled: true,
            last_executed: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn meta_carries_the_manifest_fields_and_tracks_executions() {
        let mut manifest = Manifest::native("echo", "1.2.3", PathBuf::from("/bin/echo"));
        manifest.category = "test".into();
        let mut meta = PluginMeta::from(&manifest);
        assert_eq!(
            (meta.name.as_str(), meta.category.as_str()),
            ("echo", "test")
        );
        assert!(meta.enabled);
        assert_eq!(meta.last_executed_at(), None);
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        meta.mark_executed(at);
        assert_eq!(meta.last_executed, 1_700_000_000.0);
        assert_eq!(meta.last_executed_at(), Some(at));
    }
}
