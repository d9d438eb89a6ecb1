//! Discovery: the plugins the manifests on the search paths describe, loaded or not.

use cjm_metadata::PluginMeta;

use super::{categories, PluginManager};
use crate::discovery::{self, DiscoveredPlugin, Discovery, ManifestProblem};

/// # Discovery
///
/// The plugins the manifests on the search paths describe, loaded or not: read them
/// (again), and look them up. Loading one is [Lifecycle](#lifecycle).
impl PluginManager {
    /// Read the manifests of the search paths (again); broken ones are reported by
    /// [`discovery_problems`](Self::discovery_problems) and skipped.
    pub fn discover_manifests(&self) -> Vec<PluginMeta> {
        let found = discovery::discover(&self.shared.options.search_paths);
        let metas = found
            .plugins
            .iter()
            .map(|plugin| self.with_enabled(plugin.meta.clone()))
            .collect();
        *self.shared.discovery.write() = found;
        metas
    }

    /// The last discovery pass in full: plugins, skipped manifests, shadowed ones.
    pub fn discovery(&self) -> Discovery {
        self.shared.discovery.read().clone()
    }

    /// Manifests the last discovery pass skipped, and why.
    pub fn discovery_problems(&self) -> Vec<ManifestProblem> {
        self.shared.discovery.read().problems.clone()
    }

    /// Metadata of every plugin the last discovery pass found.
    pub fn discovered(&self) -> Vec<PluginMeta> {
        self.shared
            .discovery
            .read()
            .plugins
            .iter()
            .map(|plugin| self.with_enabled(plugin.meta.clone()))
            .collect()
    }

    /// One discovered plugin, with its manifest and compiled config schema.
    pub fn discovered_plugin(&self, name: &str) -> Option<DiscoveredPlugin> {
        self.shared
            .discovery
            .read()
            .plugins
            .iter()
            .find(|plugin| plugin.meta.name == name)
            .cloned()
    }

    /// Discovered plugins of one category.
    pub fn discovered_by_category(&self, category: &str) -> Vec<PluginMeta> {
        self.discovered()
            .into_iter()
            .filter(|meta| meta.category == category)
            .collect()
    }

    /// The categories of the discovered plugins, sorted, without the empty one.
    pub fn discovered_categories(&self) -> Vec<String> {
        categories(self.discovered())
    }
}
