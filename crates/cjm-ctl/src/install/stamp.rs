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
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId};
use serde::{Deserialize, Serialize};
use walkdir::WalkDir;

use super::config::{PluginEntry, Source};

const STAMP_FILE: &str = ".cjm-install.json";

/// What tells a fingerprint from any other text: a stamp written before fingerprints
/// had it (an empty one among them) can never match.
const FINGERPRINT_PREFIX: &str = "blake3:";

/// What an environment records about how it was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// `None` when the entry's fingerprint could not be computed: such an
    /// environment is never "unchanged".
    pub fingerprint: Option<String>,
    /// The binary under `<env>/bin/` the manifest launches.
    pub bin: String,
}

impl Stamp {
    pub fn new(fingerprint: Option<&Fingerprint>, bin: impl Into<String>) -> Stamp {
        Stamp {
            fingerprint: fingerprint.map(|fingerprint| fingerprint.0.clone()),
            bin: bin.into(),
        }
    }

    pub fn read(env: &Path) -> Option<Stamp> {
        let text = std::fs::read_to_string(env.join(STAMP_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, env: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(env.join(STAMP_FILE), text)
    }

    /// Whether the environment was installed from what `fingerprint` describes.
    pub fn records(&self, fingerprint: &Fingerprint) -> bool {
        self.fingerprint.as_deref() == Some(fingerprint.0.as_str())
    }
}

/// An entry's fingerprint: made only by [`fingerprint`], so it always has its prefix
/// and a full digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A length-prefixed field, so that ("ab", "c") and ("a", "bc") differ.
fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The entry's fingerprint; `local_packages` are the folders whose contents count.
/// Files are hashed as they are read, never held whole: a plugin folder may hold
/// model weights of gigabytes.
pub fn fingerprint(entry: &PluginEntry, local_packages: &[PathBuf]) -> Fingerprint {
    let mut hasher = blake3::Hasher::new();
    field(&mut hasher, env!("CARGO_PKG_VERSION").as_bytes());
    field(&mut hasher, format!("{:?}", entry.source).as_bytes());
    let is_output: fn(&str) -> bool = match entry.source {
        Source::Python(_) => is_python_build_output,
        _ => |name| name == "target",
    };
    for dir in local_packages {
        field(&mut hasher, dir.as_os_str().as_encoded_bytes());
        let walk = WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| {
                let name = entry.file_name().to_string_lossy();
                entry.depth() == 0 || !(name.starts_with('.') || is_output(&name))
            });
        for found in walk {
            match found {
                Ok(found) if found.file_type().is_file() => {
                    field(&mut hasher, found.path().as_os_str().as_encoded_bytes());
                    match hash_file(found.path()) {
                        Ok(digest) => field(&mut hasher, digest.as_bytes()),
                        // A file that cannot be read counts as its error, so that it
                        // becoming readable is a change.
                        Err(err) => field(&mut hasher, err.to_string().as_bytes()),
                    }
                }
                Ok(_) => {}
                Err(err) => field(&mut hasher, err.to_string().as_bytes()),
            }
        }
    }
    Fingerprint(format!(
        "{FINGERPRINT_PREFIX}{}",
        hasher.finalize().to_hex()
    ))
}

fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file)?;
    Ok(hasher.finalize())
}

/// What `cargo metadata` says about the package of a `cargo: path:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPackage {
    /// The package's name, for `cargo build -p`.
    pub name: String,
    /// The folders of the local packages (no registry or git source) the binary is
    /// built from, sorted: their contents count in the fingerprint.
    pub local_dirs: Vec<PathBuf>,
    /// The workspace the package belongs to (its own folder when it is alone).
    pub workspace_root: PathBuf,
    /// That workspace's target folder.
    pub target_dir: PathBuf,
}

/// Ask cargo about the package at `package_dir`, for the host platform only:
/// without `--filter-platform`, cargo wants every platform's packages (windows-sys,
/// wasm-bindgen, ...), and `--offline` fails on a machine whose cache lacks them.
/// What cargo prints goes to `log`; the error says why in a line.
pub fn path_package(
    cargo: &Path,
    package_dir: &Path,
    offline: bool,
    log: &mut File,
) -> Result<PathPackage, String> {
    let host = host_triple(cargo)?;
    let manifest = package_dir.join("Cargo.toml");
    let mut options = vec!["--filter-platform".to_owned(), host];
    if offline {
        options.push("--offline".to_owned());
    }
    let mut command = MetadataCommand::new()
        .cargo_path(cargo)
        .manifest_path(&manifest)
        .other_options(options)
        .cargo_command();
    command.stdin(Stdio::null());
    let _ = writeln!(log, "$ {command:?}");
    if let Ok(stderr) = log.try_clone() {
        command.stderr(stderr);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run {}: {err}", cargo.display()))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed ({})", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .ok_or("cargo metadata printed no JSON")?;
    let metadata = MetadataCommand::parse(json)
        .map_err(|err| format!("cargo metadata printed what cjm-ctl cannot read: {err}"))?;
    package_in(&metadata, &manifest)
}

/// The platform cargo builds for by default: `host:` in `cargo -vV`.
fn host_triple(cargo: &Path) -> Result<String, String> {
    let output = Command::new(cargo)
        .arg("-vV")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", cargo.display()))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .filter(|host| output.status.success() && !host.is_empty())
        .ok_or_else(|| {
            format!(
                "{} -vV names no host platform ({})",
                cargo.display(),
                output.status
            )
        })
}

/// The package whose manifest is `manifest`, and the local folders its binary is
/// built from: normal and build dependencies, transitively (dev-dependencies do not
/// go into the binary).
fn package_in(metadata: &Metadata, manifest: &Path) -> Result<PathPackage, String> {
    let root = metadata
        .packages
        .iter()
        .find(|package| package.manifest_path.as_std_path() == manifest)
        .ok_or_else(|| format!("cargo metadata does not list {}", manifest.display()))?;
    let resolve = metadata
        .resolve
        .as_ref()
        .ok_or("cargo metadata gave no dependency graph")?;
    let nodes: HashMap<&PackageId, _> = resolve.nodes.iter().map(|node| (&node.id, node)).collect();
    let mut needed: HashSet<&PackageId> = HashSet::from([&root.id]);
    let mut pending = vec![&root.id];
    while let Some(id) = pending.pop() {
        let deps = nodes
            .get(id)
            .map(|node| node.deps.as_slice())
            .unwrap_or(&[]);
        for dep in deps {
            let not_only_dev = dep.dep_kinds.is_empty()
                || dep
                    .dep_kinds
                    .iter()
                    .any(|kind| kind.kind != DependencyKind::Development);
            if not_only_dev && needed.insert(&dep.pkg) {
                pending.push(&dep.pkg);
            }
        }
    }
    let mut local_dirs: Vec<PathBuf> = metadata
        .packages
        .iter()
        .filter(|package| package.source.is_none() && needed.contains(&package.id))
        .filter_map(|package| package.manifest_path.parent())
        .map(|dir| dir.as_std_path().to_path_buf())
        .collect();
    local_dirs.sort();
    local_dirs.dedup();
    Ok(PathPackage {
        name: root.name.to_string(),
        local_dirs,
        workspace_root: metadata.workspace_root.as_std_path().to_path_buf(),
        target_dir: metadata.target_directory.as_std_path().to_path_buf(),
    })
}

/// What pip leaves in a local package folder it built (in-tree builds) and what
/// Python writes beside imported sources: not sources themselves.
fn is_python_build_output(name: &str) -> bool {
    matches!(name, "build" | "dist" | "__pycache__") || name.ends_with(".egg-info")
}

/// The folder of a `cargo: path:` entry, whose package contents count.
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
        std::fs::write(dir.path().join(".hidden"), "editor state").unwrap();
        assert_eq!(fingerprint(&entry, &packages), first);
        std::fs::write(dir.path().join("src/main.rs"), "fn main() { }").unwrap();
        assert_ne!(fingerprint(&entry, &packages), first);
    }

    #[test]
    fn moving_content_between_files_or_renaming_one_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let entry = entry(dir.path());
        let packages = [dir.path().to_path_buf()];
        std::fs::write(dir.path().join("a"), "xy").unwrap();
        std::fs::write(dir.path().join("b"), "z").unwrap();
        let first = fingerprint(&entry, &packages);
        std::fs::write(dir.path().join("a"), "x").unwrap();
        std::fs::write(dir.path().join("b"), "yz").unwrap();
        let moved = fingerprint(&entry, &packages);
        assert_ne!(moved, first);
        std::fs::rename(dir.path().join("b"), dir.path().join("c")).unwrap();
        assert_ne!(fingerprint(&entry, &packages), moved);
    }

    #[test]
    fn a_large_file_is_hashed_as_a_stream_and_a_change_at_its_end_counts() {
        let dir = tempfile::tempdir().unwrap();
        let entry = entry(dir.path());
        let packages = [dir.path().to_path_buf()];
        let model = dir.path().join("model.bin");
        let mut contents = vec![7u8; 3 << 20];
        std::fs::write(&model, &contents).unwrap();
        let first = fingerprint(&entry, &packages);
        if let Some(last) = contents.last_mut() {
            *last = 8;
        }
        std::fs::write(&model, &contents).unwrap();
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
                adapters: Vec::new(),
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
        let package = |name: &str, source: Option<&str>| {
            serde_json::json!({
                "name": name, "version": "0.1.0", "id": name, "source": source,
                "manifest_path": format!("/w/{name}/Cargo.toml"),
                "dependencies": [], "targets": [], "features": {},
                "license": null, "license_file": null, "description": null,
                "authors": [], "categories": [], "keywords": [], "readme": null,
                "repository": null, "homepage": null, "documentation": null,
                "edition": "2021", "links": null, "publish": null, "metadata": null,
                "rust_version": null, "default_run": null
            })
        };
        let crates_io = "registry+https://github.com/rust-lang/crates.io-index";
        let metadata = serde_json::json!({
            "packages": [
                package("plugin", None),
                package("worker", None),
                package("build-helper", None),
                package("test-util", None),
                package("unrelated", None),
                package("serde", Some(crates_io)),
            ],
            "workspace_members": ["plugin"],
            "workspace_default_members": ["plugin"],
            "resolve": {"root": null, "nodes": [
                {"id": "plugin", "dependencies": [], "features": [], "deps": [
                    {"name": "worker", "pkg": "worker", "dep_kinds": [{"kind": null, "target": null}]},
                    {"name": "build_helper", "pkg": "build-helper", "dep_kinds": [{"kind": "build", "target": null}]},
                    {"name": "test_util", "pkg": "test-util", "dep_kinds": [{"kind": "dev", "target": null}]}
                ]},
                {"id": "worker", "dependencies": [], "features": [], "deps": [
                    {"name": "serde", "pkg": "serde", "dep_kinds": [{"kind": null, "target": null}]}
                ]},
                {"id": "unrelated", "dependencies": [], "features": [], "deps": []}
            ]},
            "target_directory": "/w/target",
            "workspace_root": "/w",
            "metadata": null,
            "version": 1
        });
        let metadata = MetadataCommand::parse(metadata.to_string()).unwrap();
        let found = package_in(&metadata, Path::new("/w/plugin/Cargo.toml")).unwrap();
        assert_eq!(found.name, "plugin");
        assert_eq!(
            found.local_dirs,
            [
                PathBuf::from("/w/build-helper"),
                PathBuf::from("/w/plugin"),
                PathBuf::from("/w/worker")
            ]
        );
        assert_eq!(found.target_dir, Path::new("/w/target"));
        assert_eq!(found.workspace_root, Path::new("/w"));
        let missing = package_in(&metadata, Path::new("/elsewhere/Cargo.toml")).unwrap_err();
        assert!(missing.contains("/elsewhere/Cargo.toml"), "{missing}");
    }

    #[test]
    fn the_workspaces_own_metadata_names_the_examples_local_packages() {
        // The real thing, against this workspace: cjm-echo is built from itself and
        // the cjm crates it depends on, and not from cjm-ctl.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = std::fs::canonicalize(root).unwrap();
        let cargo = std::env::var_os("CARGO").map_or_else(|| "cargo".into(), PathBuf::from);
        let log_dir = tempfile::tempdir().unwrap();
        let mut log = File::create(log_dir.path().join("log")).unwrap();
        let found = path_package(&cargo, &root.join("plugins/cjm-echo"), true, &mut log)
            .unwrap_or_else(|err| {
                let log = std::fs::read_to_string(log_dir.path().join("log")).unwrap();
                panic!("{err}\n{log}")
            });
        assert_eq!(found.name, "cjm-echo");
        assert_eq!(found.workspace_root, root);
        assert!(found.local_dirs.contains(&root.join("plugins/cjm-echo")));
        assert!(found.local_dirs.contains(&root.join("crates/cjm-worker")));
        assert!(!found.local_dirs.contains(&root.join("crates/cjm-ctl")));
    }

    #[test]
    fn stamps_round_trip_and_only_a_computed_fingerprint_matches() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Stamp::read(dir.path()), None);
        let fingerprint = fingerprint(&entry(dir.path()), &[]);
        assert!(fingerprint.as_str().starts_with(FINGERPRINT_PREFIX));
        assert_eq!(fingerprint.as_str().len(), FINGERPRINT_PREFIX.len() + 64);
        let stamp = Stamp::new(Some(&fingerprint), "cjm-echo");
        stamp.write(dir.path()).unwrap();
        assert_eq!(Stamp::read(dir.path()), Some(stamp.clone()));
        assert!(stamp.records(&fingerprint));

        // Unknown, or from an older cjm-ctl: never "unchanged".
        for old in [
            Stamp::new(None, "cjm-echo"),
            Stamp {
                fingerprint: Some(String::new()),
                bin: "cjm-echo".into(),
            },
        ] {
            old.write(dir.path()).unwrap();
            let read = Stamp::read(dir.path()).unwrap();
            assert!(!read.records(&fingerprint), "{read:?}");
        }
        std::fs::write(
            dir.path().join(STAMP_FILE),
            r#"{"fingerprint": "", "bin": "cjm-echo"}"#,
        )
        .unwrap();
        assert!(!Stamp::read(dir.path()).unwrap().records(&fingerprint));
    }
}
