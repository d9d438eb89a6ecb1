//! When is an installed environment "unchanged"? When the stamp file it was installed
//! with (`<env>/.cjm-install.json`) holds the fingerprint the entry has now.
//!
//! The fingerprint covers cjm-ctl's version, the entry's source as validated
//! (absolute path, git URL and ref, crate and version, bin) and, for a local path,
//! the contents of every local package the binary is built from (the package and
//! the path dependencies it needs, transitively, as `cargo metadata` reports them;
//! `target/` and hidden folders excluded). A git branch or a version requirement is taken as
//! written: a new commit on the branch or a new release needs `--force`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{PluginEntry, Source};

const STAMP_FILE: &str = ".cjm-install.json";

/// What an environment records about how it was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub fingerprint: String,
    /// The binary under `<env>/bin/` the manifest launches.
    pub bin: String,
}

impl Stamp {
    pub fn read(env: &Path) -> Option<Stamp> {
        let text = std::fs::read_to_string(env.join(STAMP_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, env: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(env.join(STAMP_FILE), text)
    }
}

/// FNV-1a, 64 bits: stable across Rust releases (unlike `DefaultHasher`), and enough
/// to notice a change; this is not a security boundary.
#[derive(Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// A length-prefixed field, so that ("ab", "c") and ("a", "bc") differ.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// The entry's fingerprint; `local_packages` are the folders whose contents count.
pub fn fingerprint(entry: &PluginEntry, local_packages: &[PathBuf]) -> String {
    let mut hash = Fnv::new();
    hash.field(env!("CARGO_PKG_VERSION").as_bytes());
    hash.field(format!("{:?}", entry.source).as_bytes());
    let is_output: fn(&str) -> bool = match entry.source {
        Source::Python(_) => is_python_build_output,
        _ => |name| name == "target",
    };
    for dir in local_packages {
        hash.field(dir.as_os_str().as_encoded_bytes());
        for file in files_under(dir, is_output) {
            hash.field(file.as_os_str().as_encoded_bytes());
            match std::fs::read(&file) {
                Ok(contents) => hash.field(&contents),
                Err(err) => hash.field(err.to_string().as_bytes()),
            }
        }
    }
    format!("{:016x}", hash.0)
}

/// The folders of the local packages (no registry or git source) in the build of
/// the package at `package_dir`, sorted; `None` when cargo cannot tell, in which case
/// the caller treats the entry as changed.
pub fn local_packages(
    cargo: &Path,
    package_dir: &Path,
    offline: bool,
    log: &std::fs::File,
) -> Option<Vec<PathBuf>> {
    let mut command = Command::new(cargo);
    command
        .args(["metadata", "--format-version=1", "--manifest-path"])
        .arg(package_dir.join("Cargo.toml"))
        .stdin(Stdio::null())
        .stderr(log.try_clone().ok()?);
    if offline {
        command.arg("--offline");
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let manifest = package_dir.join("Cargo.toml");
    local_dirs_in_build(&metadata, &manifest)
}

/// From `cargo metadata` output: the folders of the packages without a registry or
/// git source that the package at `manifest` needs to build (normal and build
/// dependencies, transitively; dev-dependencies do not go into the binary).
fn local_dirs_in_build(metadata: &Value, manifest: &Path) -> Option<Vec<PathBuf>> {
    let packages = metadata.get("packages")?.as_array()?;
    let root_id = packages
        .iter()
        .find(|package| {
            package
                .get("manifest_path")
                .and_then(Value::as_str)
                .is_some_and(|path| Path::new(path) == manifest)
        })?
        .get("id")?
        .as_str()?;
    let nodes: HashMap<&str, &Value> = metadata
        .get("resolve")?
        .get("nodes")?
        .as_array()?
        .iter()
        .filter_map(|node| Some((node.get("id")?.as_str()?, node)))
        .collect();
    let mut needed: HashSet<&str> = HashSet::from([root_id]);
    let mut pending = vec![root_id];
    while let Some(id) = pending.pop() {
        let deps = nodes
            .get(id)
            .and_then(|node| node.get("deps"))
            .and_then(Value::as_array);
        for dep in deps.into_iter().flatten() {
            let not_only_dev = dep
                .get("dep_kinds")
                .and_then(Value::as_array)
                .is_none_or(|kinds| {
                    kinds
                        .iter()
                        .any(|kind| kind.get("kind").and_then(Value::as_str) != Some("dev"))
                });
            if let Some(dep_id) = dep.get("pkg").and_then(Value::as_str) {
                if not_only_dev && needed.insert(dep_id) {
                    pending.push(dep_id);
                }
            }
        }
    }
    let mut dirs: Vec<PathBuf> = packages
        .iter()
        .filter(|package| package.get("source").is_none_or(Value::is_null))
        .filter(|package| {
            package
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| needed.contains(id))
        })
        .filter_map(|package| package.get("manifest_path")?.as_str())
        .filter_map(|manifest| Path::new(manifest).parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    Some(dirs)
}

/// What pip leaves in a local package folder it built (in-tree builds) and what
/// Python writes beside imported sources: not sources themselves.
fn is_python_build_output(name: &str) -> bool {
    matches!(name, "build" | "dist" | "__pycache__") || name.ends_with(".egg-info")
}

/// Every file under `dir`, sorted, skipping hidden entries and build output.
fn files_under(dir: &Path, is_output: fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || is_output(&name) {
                continue;
            }
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

/// Whether a cargo entry's fingerprint needs the package contents.
pub fn path_source(entry: &PluginEntry) -> Option<&Path> {
    match &entry.source {
        Source::Cargo {
            crate_source: super::config::CargoSource::Path(path),
            ..
        } => Some(path),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::CargoSource;
    use super::*;

    fn entry(path: &Path) -> PluginEntry {
        PluginEntry {
            name: "p".into(),
            env_name: "p".into(),
            source: Source::Cargo {
                crate_source: CargoSource::Path(path.to_owned()),
                bin: None,
            },
        }
    }

    #[test]
    fn changes_with_sources_but_not_with_build_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}").unwrap();
        let entry = entry(dir.path());
        let packages = [dir.path().to_path_buf()];
        let first = fingerprint(&entry, &packages);
        std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
        std::fs::write(dir.path().join("target/release/x"), "build output").unwrap();
        assert_eq!(fingerprint(&entry, &packages), first);
        std::fs::write(dir.path().join("src/main.rs"), "fn main() { }").unwrap();
        assert_ne!(fingerprint(&entry, &packages), first);
    }

    #[test]
    fn a_python_package_changes_with_sources_but_not_with_what_pip_built() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/plugin.py"), "x = 1").unwrap();
        let entry = PluginEntry {
            name: "p".into(),
            env_name: "p".into(),
            source: Source::Python(super::super::config::PythonSpec {
                env_file: None,
                python_version: None,
                package: Some(dir.path().to_string_lossy().into_owned()),
                interface_libs: Vec::new(),
            }),
        };
        let packages = [dir.path().to_path_buf()];
        let first = fingerprint(&entry, &packages);
        for output in ["build/lib/pkg", "pkg.egg-info", "pkg/__pycache__"] {
            std::fs::create_dir_all(dir.path().join(output)).unwrap();
            std::fs::write(dir.path().join(output).join("f"), "built").unwrap();
        }
        assert_eq!(fingerprint(&entry, &packages), first);
        std::fs::write(dir.path().join("pkg/plugin.py"), "x = 2").unwrap();
        assert_ne!(fingerprint(&entry, &packages), first);
    }

    #[test]
    fn only_local_packages_the_binary_is_built_from_count() {
        let metadata = serde_json::json!({
            "packages": [
                {"id": "plugin", "source": null, "manifest_path": "/w/plugin/Cargo.toml"},
                {"id": "worker", "source": null, "manifest_path": "/w/worker/Cargo.toml"},
                {"id": "build-helper", "source": null, "manifest_path": "/w/helper/Cargo.toml"},
                {"id": "test-util", "source": null, "manifest_path": "/w/test-util/Cargo.toml"},
                {"id": "unrelated", "source": null, "manifest_path": "/w/unrelated/Cargo.toml"},
                {"id": "serde", "source": "registry+https://github.com/rust-lang/crates.io-index",
                 "manifest_path": "/registry/serde/Cargo.toml"}
            ],
            "resolve": {"nodes": [
                {"id": "plugin", "deps": [
                    {"pkg": "worker", "dep_kinds": [{"kind": null}]},
                    {"pkg": "build-helper", "dep_kinds": [{"kind": "build"}]},
                    {"pkg": "test-util", "dep_kinds": [{"kind": "dev"}]}
                ]},
                {"id": "worker", "deps": [{"pkg": "serde", "dep_kinds": [{"kind": null}]}]},
                {"id": "unrelated", "deps": []}
            ]}
        });
        let dirs = local_dirs_in_build(&metadata, Path::new("/w/plugin/Cargo.toml")).unwrap();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/w/helper"),
                PathBuf::from("/w/plugin"),
                PathBuf::from("/w/worker")
            ]
        );
    }

    #[test]
    fn stamps_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Stamp::read(dir.path()), None);
        let stamp = Stamp {
            fingerprint: "abc".into(),
            bin: "cjm-echo".into(),
        };
        stamp.write(dir.path()).unwrap();
        assert_eq!(Stamp::read(dir.path()), Some(stamp));
    }
}
