//! Finding plugins: every `*.json` manifest in the search paths, first name wins.
//! Adapter manifests (`"unit": "adapter"`) in the same folders are found beside
//! them (see `adapters.rs`), never taken for broken plugin manifests.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cjm_metadata::{AdapterManifest, Manifest, PluginMeta};
use cjm_validation::ConfigValidator;

/// A plugin found through its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredPlugin {
    /// Name, version, resources and the rest, as the manifest says.
    pub meta: PluginMeta,
    /// The manifest itself, with its launch form.
    pub manifest: Manifest,
    /// The manifest file.
    pub path: PathBuf,
    /// The manifest's `config_schema`, compiled: configurations are checked with it
    /// before they reach a worker.
    pub config_validator: Arc<ConfigValidator>,
}

/// A manifest that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// The manifest file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// A manifest hidden by one of the same name earlier in the search order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The plugin name both manifests use.
    pub name: String,
    /// The manifest not used.
    pub path: PathBuf,
    /// The manifest used instead, found earlier in the search paths.
    pub shadowed_by: PathBuf,
}

/// The outcome of one discovery pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    /// The plugins found, one per name.
    pub plugins: Vec<DiscoveredPlugin>,
    /// Manifests skipped, and why.
    pub problems: Vec<ManifestProblem>,
    /// Manifests hidden by another of the same name earlier in the search paths.
    pub shadowed: Vec<Shadowed>,
    /// Task adapters found, one per name (the first in the search order).
    pub adapters: Vec<DiscoveredAdapter>,
}

/// A task adapter found through its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredAdapter {
    /// What the manifest says.
    pub manifest: AdapterManifest,
    /// The manifest file.
    pub path: PathBuf,
}

/// Read every manifest in `search_paths`. Broken manifests (a `config_schema` that is
/// not a valid JSON Schema included) are reported (and logged) and skipped; a missing
/// folder is simply empty.
pub fn discover(search_paths: &[PathBuf]) -> Discovery {
    let mut discovery = Discovery::default();
    let mut first_seen: HashMap<String, PathBuf> = HashMap::new();
    for dir in search_paths {
        for path in manifest_files(dir, &mut discovery.problems) {
            if let Some(adapter) = adapter_manifest(&path) {
                take_adapter(&mut discovery, path, adapter);
                continue;
            }
            let manifest = match Manifest::load(&path) {
                Ok(manifest) => manifest,
                Err(err) => {
                    tracing::warn!("skipping {err}");
                    discovery.problems.push(ManifestProblem {
                        path,
                        reason: err.reason(),
                    });
                    continue;
                }
            };
            let config_validator = match ConfigValidator::new(&manifest.config_schema) {
                Ok(validator) => Arc::new(validator),
                Err(err) => {
                    let reason = format!("\"config_schema\" is {err}");
                    tracing::warn!("skipping {}: {reason}", path.display());
                    discovery.problems.push(ManifestProblem { path, reason });
                    continue;
                }
            };
            if let Some(earlier) = first_seen.get(&manifest.name) {
                tracing::debug!(
                    "{} shadowed by {} (plugin {})",
                    path.display(),
                    earlier.display(),
                    manifest.name
                );
                discovery.shadowed.push(Shadowed {
                    name: manifest.name,
                    path,
                    shadowed_by: earlier.clone(),
                });
                continue;
            }
            first_seen.insert(manifest.name.clone(), path.clone());
            discovery.plugins.push(DiscoveredPlugin {
                meta: PluginMeta::from(&manifest),
                manifest,
                path,
                config_validator,
            });
        }
    }
    discovery
}

/// The adapter manifest at `path`, if the file is one (by its `unit`, as the
/// original routes them); `None` for anything else, broken files included (the plugin
/// manifest reader reports those).
fn adapter_manifest(path: &Path) -> Option<Result<AdapterManifest, cjm_metadata::ManifestError>> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    AdapterManifest::is_adapter(&value).then(|| AdapterManifest::from_value(value))
}

fn take_adapter(
    discovery: &mut Discovery,
    path: PathBuf,
    adapter: Result<AdapterManifest, cjm_metadata::ManifestError>,
) {
    match adapter {
        Ok(manifest) => {
            if discovery
                .adapters
                .iter()
                .any(|known| known.manifest.name == manifest.name)
            {
                tracing::debug!("{} shadowed (adapter {})", path.display(), manifest.name);
                return;
            }
            tracing::info!(
                "discovered adapter {} (task {:?}) in {}",
                manifest.name,
                manifest.task_name,
                path.display()
            );
            discovery
                .adapters
                .push(DiscoveredAdapter { manifest, path });
        }
        Err(err) => {
            tracing::warn!("skipping {}: {err}", path.display());
            discovery.problems.push(ManifestProblem {
                path,
                reason: err.reason(),
            });
        }
    }
}

/// The `*.json` files of `dir`, sorted so that discovery is deterministic.
fn manifest_files(dir: &Path, problems: &mut Vec<ManifestProblem>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            tracing::warn!("cannot read manifest folder {}: {err}", dir.display());
            problems.push(ManifestProblem {
                path: dir.to_owned(),
                reason: format!("cannot read folder: {err}"),
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json") && path.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn write(dir: &Path, file: &str, value: serde_json::Value) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), value.to_string()).unwrap();
    }

    #[test]
    fn adapter_manifests_are_found_beside_plugins_not_taken_for_broken_ones() {
        let root = tempfile::tempdir().unwrap();
        let local = root.path().join("local");
        let global = root.path().join("global");
        let adapter = |task: &str| {
            json!({"unit": "adapter", "name": "m.A", "task_name": task, "module": "m",
                   "class": "A", "protocol_members": {"methods": [], "properties": []}})
        };
        write(&local, "adapter-a.json", adapter("search"));
        write(&global, "adapter-a.json", adapter("shadowed"));
        write(
            &global,
            "adapter-bad.json",
            json!({"unit": "adapter", "name": "m.B"}),
        );
        write(
            &global,
            "tool.json",
            json!({"name": "tool", "command": "/bin/t"}),
        );
        let found = discover(&[local, global.clone()]);
        assert_eq!(found.plugins.len(), 1);
        assert_eq!(found.adapters.len(), 1, "{:?}", found.adapters);
        assert_eq!(found.adapters[0].manifest.task_name, "search");
        assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
        assert_eq!(found.problems[0].path, global.join("adapter-bad.json"));
        assert!(
            found.problems[0].reason.contains("task_name"),
            "{:?}",
            found.problems
        );
    }

    #[test]
    fn earlier_paths_shadow_later_ones_and_broken_files_are_reported() {
        let root = tempfile::tempdir().unwrap();
        let local = root.path().join("local");
        let global = root.path().join("global");
        write(
            &local,
            "echo.json",
            json!({"name": "echo", "version": "2.0.0", "command": "/bin/a"}),
        );
        write(
            &global,
            "echo.json",
            json!({"name": "echo", "version": "1.0.0", "command": "/bin/b"}),
        );
        write(
            &global,
            "other.json",
            json!({"name": "other", "command": "/bin/c", "category": "x"}),
        );
        write(&global, "nameless.json", json!({"command": "/bin/d"}));
        write(
            &global,
            "wrong-schema.json",
            json!({"name": "bad-schema", "command": "/bin/e",
                   "config_schema": {"properties": {"n": {"type": "integr"}}}}),
        );
        std::fs::write(global.join("garbage.json"), "{{{").unwrap();
        std::fs::write(global.join("notes.txt"), "not a manifest").unwrap();

        let found = discover(&[local.clone(), global.clone(), root.path().join("absent")]);
        let names: Vec<(&str, &str)> = found
            .plugins
            .iter()
            .map(|p| (p.meta.name.as_str(), p.meta.version.as_str()))
            .collect();
        assert_eq!(names, [("echo", "2.0.0"), ("other", "0.0.0")]);
        assert_eq!(found.shadowed.len(), 1);
        assert_eq!(found.shadowed[0].path, global.join("echo.json"));
        assert_eq!(found.shadowed[0].shadowed_by, local.join("echo.json"));
        let problems: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("garbage.json") && problems[0].contains("not valid JSON"));
        assert!(problems[1].contains("nameless.json") && problems[1].contains("no \"name\""));
        assert_eq!(found.problems[2].path, global.join("wrong-schema.json"));
        assert!(
            found.problems[2]
                .reason
                .starts_with("\"config_schema\" is not a valid config schema: ")
                && found.problems[2].reason.contains("integr"),
            "{problems:?}"
        );
    }
}
