//! `plugins.yaml`: its entries, and the validation of every entry before anything is
//! installed. All problems of a file are collected and reported together, each with
//! the entry it belongs to.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cjm_metadata::validate_name;
use serde::Deserialize;
use serde_norway::Value;

/// A validated `plugins.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginsFile {
    pub path: PathBuf,
    pub entries: Vec<PluginEntry>,
}

/// One plugin to install.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    pub name: String,
    /// The folder under `$CJM_HOME/envs/`; defaults to `name`.
    pub env_name: String,
    pub source: Source,
}

/// Where a plugin comes from. Exactly one per entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Built with `cargo install`; `bin` picks the binary of a package with several.
    Cargo {
        crate_source: CargoSource,
        bin: Option<String>,
    },
    /// An executable that already exists; absolute.
    Executable(PathBuf),
    /// The original's Python entry; installing it comes with Python interop.
    Python(PythonSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CargoSource {
    /// A package folder, absolute.
    Path(PathBuf),
    Git {
        url: String,
        reference: Option<GitRef>,
    },
    /// A crates.io package at a version (a version requirement, as cargo takes it).
    Registry { name: String, version: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Rev(String),
    Branch(String),
    Tag(String),
}

/// The original's keys, kept with their meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSpec {
    pub env_file: Option<PathBuf>,
    pub python_version: Option<String>,
    pub package: Option<String>,
    pub interface_libs: Vec<String>,
    /// The successor's `adapters:`: task adapters installed into the same
    /// environment, each registered with an adapter manifest beside the plugin's.
    pub adapters: Vec<AdapterSpec>,
}

/// One entry of `adapters:` (the successor's install-all): `lib`, a pip requirement
/// installed with the interface libraries (none when another package brings the
/// module), and `impl`, the adapter's `module:Class` to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSpec {
    pub lib: Option<String>,
    pub module: String,
    pub class_name: String,
}

impl AdapterSpec {
    /// As the worker's `--adapters` takes it, and as plugins.yaml writes it.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.module, self.class_name)
    }
}

/// Why a plugins file cannot be used: every problem found, not just the first.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<EntryProblem>,
}

/// One problem, with the entry it was found in (its name, or `#N` when it has no
/// usable name; `None` for the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryProblem {
    pub entry: Option<String>,
    pub message: String,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(entry) => write!(f, "plugin {entry}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has {} problem{}:",
            self.path.display(),
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The entry as written. Every field optional so that validation can say in words
/// what is missing or contradictory; unknown keys are refused because a typo (`carg:`)
/// would otherwise silently turn an entry into something else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<String>,
    env_name: Option<String>,
    // The original's Python keys.
    env_file: Option<PathBuf>,
    python_version: Option<String>,
    package: Option<String>,
    interface_libs: Option<Vec<String>>,
    // The successor's per-capability task adapters.
    adapters: Option<Vec<RawAdapter>>,
    // Native extension.
    cargo: Option<RawCargo>,
    bin: Option<String>,
    executable: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    lib: Option<String>,
    #[serde(rename = "impl")]
    implementation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCargo {
    path: Option<PathBuf>,
    git: Option<String>,
    rev: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    #[serde(rename = "crate")]
    crate_name: Option<String>,
    version: Option<String>,
}

impl PluginsFile {
    /// Read and validate `path`. Relative paths in entries resolve against the file's
    /// folder.
    pub fn load(path: &Path) -> Result<PluginsFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            path: path.to_owned(),
            problems: vec![file_problem(format!("cannot read: {err}"))],
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        PluginsFile::parse(&text, &base)
            .map(|entries| PluginsFile {
                path: path.to_owned(),
                entries,
            })
            .map_err(|problems| ConfigError {
                path: path.to_owned(),
                problems,
            })
    }

    /// Validate YAML text; `base` is the folder relative paths resolve against.
    pub fn parse(text: &str, base: &Path) -> Result<Vec<PluginEntry>, Vec<EntryProblem>> {
        let document: Value = serde_norway::from_str(text)
            .map_err(|err| vec![file_problem(format!("not valid YAML: {err}"))])?;
        // The successor's capabilities.yaml names the same list `capabilities`.
        let (key, list) = match (document.get("plugins"), document.get("capabilities")) {
            (Some(_), Some(_)) => {
                return Err(vec![file_problem(
                    "both \"plugins\" and \"capabilities\" lists: keep one",
                )])
            }
            (Some(list), None) => ("plugins", list),
            (None, Some(list)) => ("capabilities", list),
            (None, None) => {
                return Err(vec![file_problem(
                    "no \"plugins\" list (nor the successor's \"capabilities\")",
                )])
            }
        };
        let plugins = match list {
            Value::Sequence(plugins) => plugins,
            Value::Null => return Ok(Vec::new()),
            _ => {
                return Err(vec![file_problem(format!(
                    "\"{key}\" must be a list of entries"
                ))])
            }
        };
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        for (index, value) in plugins.iter().enumerate() {
            let label = entry_label(value, index);
            let mut report = |message: String| {
                problems.push(EntryProblem {
                    entry: Some(label.clone()),
                    message,
                })
            };
            match serde_norway::from_value::<RawEntry>(value.clone()) {
                Ok(raw) => {
                    if let Some(entry) = validate_entry(raw, base, &mut report) {
                        entries.push(entry);
                    }
                }
                Err(err) => {
                    for message in shape_problems(value, err) {
                        report(message);
                    }
                }
            }
        }
        check_unique(&entries, &mut problems);
        if problems.is_empty() {
            Ok(entries)
        } else {
            Err(problems)
        }
    }
}

/// serde_norway does not say which key had the wrong type, so each key is tried on
/// its own: every bad key is named, not only the first.
fn shape_problems(value: &Value, whole: serde_norway::Error) -> Vec<String> {
    let Value::Mapping(mapping) = value else {
        return vec![format!("must be a mapping of keys, got {}", whole)];
    };
    let problems: Vec<String> = mapping
        .iter()
        .filter_map(|(key, field)| {
            let mut single = serde_norway::Mapping::new();
            single.insert(key.clone(), field.clone());
            let err = serde_norway::from_value::<RawEntry>(Value::Mapping(single)).err()?;
            Some(match key.as_str() {
                Some(key) if !err.to_string().contains("unknown field") => format!("{key}: {err}"),
                _ => err.to_string(),
            })
        })
        .collect();
    if problems.is_empty() {
        vec![whole.to_string()]
    } else {
        problems
    }
}

fn file_problem(message: impl Into<String>) -> EntryProblem {
    EntryProblem {
        entry: None,
        message: message.into(),
    }
}

/// The entry's name when it has a printable one, else its position.
fn entry_label(value: &Value, index: usize) -> String {
    match value.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => format!("#{}", index + 1),
    }
}

/// A package given as a relative folder (`./pkg`, `../pkg`, optionally after `-e `)
/// resolves against the plugins file's folder, like a cargo `path`; anything else
/// (a name, a requirement, a URL, an absolute path) is passed to pip as written.
fn resolve_local_package(package: &str, base: &Path) -> String {
    let (editable, spec) = match package.strip_prefix("-e ") {
        Some(rest) => ("-e ", rest.trim_start()),
        None => ("", package),
    };
    if spec.starts_with("./") || spec.starts_with("../") {
        format!("{editable}{}", base.join(spec).display())
    } else {
        package.to_owned()
    }
}

fn validate_entry(
    mut raw: RawEntry,
    base: &Path,
    report: &mut impl FnMut(String),
) -> Option<PluginEntry> {
    let mut problems: Vec<String> = Vec::new();
    let name = raw.name.clone().unwrap_or_default();
    match &raw.name {
        None => problems.push("no \"name\"".into()),
        Some(name) => {
            if let Err(err) = validate_name(name) {
                problems.push(format!("name: {err}"));
            }
        }
    }
    let env_name = raw.env_name.clone().unwrap_or_else(|| name.clone());
    if raw.env_name.is_some() {
        if let Err(err) = validate_name(&env_name) {
            problems.push(format!("env_name: {err}"));
        }
    }
    let python_keys = raw.env_file.is_some()
        || raw.python_version.is_some()
        || raw.package.is_some()
        || raw.interface_libs.is_some();
    let forms = [raw.cargo.is_some(), raw.executable.is_some(), python_keys]
        .iter()
        .filter(|present| **present)
        .count();
    let source = if forms != 1 {
        problems.push(format!(
            "needs exactly one source: \"cargo\", \"executable\" or the Python keys \
             (package, env_file, python_version, interface_libs); found {forms}"
        ));
        None
    } else if let Some(cargo) = raw.cargo {
        if let Some(bin) = &raw.bin {
            if let Err(err) = validate_name(bin) {
                problems.push(format!("bin: {err}"));
            }
        }
        cargo_source(cargo, base, &mut problems).map(|crate_source| Source::Cargo {
            crate_source,
            bin: raw.bin.clone(),
        })
    } else if let Some(executable) = raw.executable {
        let executable = base.join(executable);
        if !executable.is_file() {
            problems.push(format!("executable {} is not a file", executable.display()));
        }
        Some(Source::Executable(executable))
    } else {
        if raw.package.is_none() {
            // As in the original: the manifest comes from the package's module.
            problems.push(
                "a Python entry needs \"package\" (its meta.get_plugin_metadata() makes \
                 the manifest)"
                    .into(),
            );
        }
        Some(Source::Python(PythonSpec {
            env_file: raw.env_file.map(|file| base.join(file)),
            python_version: raw.python_version,
            package: raw
                .package
                .map(|package| resolve_local_package(&package, base)),
            interface_libs: raw.interface_libs.unwrap_or_default(),
            adapters: adapter_specs(raw.adapters.take().unwrap_or_default(), &mut problems),
        }))
    };
    if raw.adapters.is_some() && forms == 1 {
        problems.push(
            "\"adapters\" only apply to a Python entry (they are installed into its \
             environment)"
                .into(),
        );
    }
    if raw.bin.is_some() && !matches!(source, Some(Source::Cargo { .. })) && forms == 1 {
        problems.push("\"bin\" only applies to a \"cargo\" source".into());
    }
    let failed = !problems.is_empty();
    for problem in problems {
        report(problem);
    }
    match source {
        Some(source) if !failed => Some(PluginEntry {
            name,
            env_name,
            source,
        }),
        _ => None,
    }
}

/// Each adapter names its class as `module.path:Class`, both parts Python
/// identifiers: they reach the environment's Python as argv and as the worker's
/// `--adapters`, so anything else is a mistake said now, not an import error later.
fn adapter_specs(raw: Vec<RawAdapter>, problems: &mut Vec<String>) -> Vec<AdapterSpec> {
    let mut specs = Vec::new();
    for (index, adapter) in raw.into_iter().enumerate() {
        let at = format!("adapters[{index}]");
        let Some(implementation) = adapter.implementation else {
            problems.push(format!(
                "{at}: no \"impl\" (the adapter's 'module:ClassName')"
            ));
            continue;
        };
        let parsed = implementation.rsplit_once(':').filter(|(module, class)| {
            module.split('.').all(is_python_identifier) && is_python_identifier(class)
        });
        let Some((module, class_name)) = parsed else {
            problems.push(format!(
                "{at}: impl {implementation:?} is not 'module.path:ClassName'"
            ));
            continue;
        };
        if let Some(lib) = &adapter.lib {
            if let Some(reason) = unsafe_value(lib) {
                problems.push(format!("{at}: lib {lib:?} {reason}"));
                continue;
            }
        }
        specs.push(AdapterSpec {
            lib: adapter.lib,
            module: module.to_owned(),
            class_name: class_name.to_owned(),
        });
    }
    specs
}

fn is_python_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn cargo_source(raw: RawCargo, base: &Path, problems: &mut Vec<String>) -> Option<CargoSource> {
    let kinds = [
        raw.path.is_some(),
        raw.git.is_some(),
        raw.crate_name.is_some(),
    ]
    .iter()
    .filter(|present| **present)
    .count();
    if kinds != 1 {
        problems.push(format!(
            "cargo: needs exactly one of \"path\", \"git\" or \"crate\"; found {kinds}"
        ));
        return None;
    }
    let refs: Vec<GitRef> = [
        raw.rev.map(GitRef::Rev),
        raw.branch.map(GitRef::Branch),
        raw.tag.map(GitRef::Tag),
    ]
    .into_iter()
    .flatten()
    .collect();
    let before = problems.len();
    let mut refuse = |message: String| problems.push(message);
    if raw.git.is_none() && !refs.is_empty() {
        refuse("cargo: \"rev\", \"branch\" and \"tag\" only apply to \"git\"".into());
    }
    if refs.len() > 1 {
        refuse("cargo: at most one of \"rev\", \"branch\" or \"tag\"".into());
    }
    if raw.crate_name.is_none() && raw.version.is_some() {
        refuse("cargo: \"version\" only applies to \"crate\"".into());
    }
    for (key, value) in refs
        .iter()
        .map(|r| match r {
            GitRef::Rev(v) => ("rev", v),
            GitRef::Branch(v) => ("branch", v),
            GitRef::Tag(v) => ("tag", v),
        })
        .chain(raw.git.as_ref().map(|url| ("git", url)))
        .chain(raw.version.as_ref().map(|version| ("version", version)))
    {
        if let Some(reason) = unsafe_value(value) {
            refuse(format!("cargo: {key} {value:?} {reason}"));
        }
    }
    let source = if let Some(path) = raw.path {
        let path = base.join(path);
        if !path.join("Cargo.toml").is_file() {
            refuse(format!("cargo: path {} has no Cargo.toml", path.display()));
        }
        CargoSource::Path(path)
    } else if let Some(url) = raw.git {
        CargoSource::Git {
            url,
            reference: refs.into_iter().next(),
        }
    } else {
        let name = raw.crate_name.unwrap_or_default();
        if let Err(err) = validate_name(&name) {
            refuse(format!("cargo: crate: {err}"));
        }
        match raw.version {
            Some(version) => CargoSource::Registry { name, version },
            None => {
                refuse("cargo: \"crate\" needs a \"version\"".into());
                return None;
            }
        }
    };
    (problems.len() == before).then_some(source)
}

/// Values become single argv elements (`--git=URL`), never shell text; still, an
/// empty value or a control character is certainly a mistake.
fn unsafe_value(value: &str) -> Option<&'static str> {
    if value.trim().is_empty() {
        Some("is empty")
    } else if value.chars().any(char::is_control) {
        Some("contains a control character")
    } else if value.starts_with('-') {
        Some("must not start with '-'")
    } else {
        None
    }
}

/// Two entries with one name would write one manifest; two with one env_name would
/// overwrite each other's environment.
fn check_unique(entries: &[PluginEntry], problems: &mut Vec<EntryProblem>) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut envs: HashMap<&str, &str> = HashMap::new();
    for entry in entries {
        let seen = names.entry(&entry.name).or_default();
        *seen += 1;
        if *seen > 1 {
            if *seen == 2 {
                problems.push(EntryProblem {
                    entry: Some(entry.name.clone()),
                    message: "the name is used by more than one entry".into(),
                });
            }
            continue;
        }
        if let Some(other) = envs.insert(&entry.env_name, &entry.name) {
            problems.push(EntryProblem {
                entry: Some(entry.name.clone()),
                message: format!(
                    "env_name {:?} is already used by plugin {other}",
                    entry.env_name
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base folder with a package at `pkg/` and an executable file `tool`.
    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/Cargo.toml"), "[package]").unwrap();
        std::fs::write(dir.path().join("tool"), "").unwrap();
        dir
    }

    fn problems(yaml: &str) -> Vec<String> {
        let dir = base();
        match PluginsFile::parse(yaml, dir.path()) {
            Ok(entries) => panic!("accepted: {entries:?}"),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_source_form_parses() {
        let dir = base();
        let yaml = r#"
plugins:
  - name: local
    cargo: {path: pkg}
    bin: local-bin
  - name: remote
    env_name: remote-env
    cargo: {git: "https://example.invalid/r.git", branch: main}
  - name: released
    cargo: {crate: cjm-released, version: "1.2"}
  - name: prebuilt
    executable: tool
  - name: whisper
    env_name: cjm-whisper
    env_file: envs/whisper.yaml
    python_version: "3.11"
    package: "git+https://example.invalid/whisper.git"
    interface_libs: [cjm-transcription-plugin-system]
"#;
        let entries = PluginsFile::parse(yaml, dir.path()).unwrap();
        let base = dir.path();
        assert_eq!(
            entries[0].source,
            Source::Cargo {
                crate_source: CargoSource::Path(base.join("pkg")),
                bin: Some("local-bin".into())
            }
        );
        assert_eq!(entries[0].env_name, "local");
        assert_eq!(entries[1].env_name, "remote-env");
        assert_eq!(
            entries[1].source,
            Source::Cargo {
                crate_source: CargoSource::Git {
                    url: "https://example.invalid/r.git".into(),
                    reference: Some(GitRef::Branch("main".into()))
                },
                bin: None
            }
        );
        assert!(matches!(
            &entries[2].source,
            Source::Cargo { crate_source: CargoSource::Registry { name, version }, .. }
                if name == "cjm-released" && version == "1.2"
        ));
        assert_eq!(entries[3].source, Source::Executable(base.join("tool")));
        assert_eq!(
            entries[4].source,
            Source::Python(PythonSpec {
                env_file: Some(base.join("envs/whisper.yaml")),
                python_version: Some("3.11".into()),
                package: Some("git+https://example.invalid/whisper.git".into()),
                interface_libs: vec!["cjm-transcription-plugin-system".into()],
                adapters: Vec::new(),
            })
        );
    }

    #[test]
    fn the_successors_capabilities_file_and_its_adapters_parse() {
        let dir = base();
        let yaml = r#"
capabilities:
  - name: cjm-capability-pysbd
    python_version: "3.12"
    package: cjm-capability-pysbd==0.0.1
    interface_libs: [cjm-substrate==0.0.74]
    adapters:
      - lib: cjm-sentence-segmentation-adapter-interface==0.0.2
        impl: cjm_sentence_segmentation_adapter_interface.generic:GenericSentenceSegmentationAdapter
      - impl: _private.mod:Adapter2
"#;
        let entries = PluginsFile::parse(yaml, dir.path()).unwrap();
        let Source::Python(spec) = &entries[0].source else {
            panic!("{entries:?}")
        };
        assert_eq!(
            spec.adapters,
            [
                AdapterSpec {
                    lib: Some("cjm-sentence-segmentation-adapter-interface==0.0.2".into()),
                    module: "cjm_sentence_segmentation_adapter_interface.generic".into(),
                    class_name: "GenericSentenceSegmentationAdapter".into(),
                },
                AdapterSpec {
                    lib: None,
                    module: "_private.mod".into(),
                    class_name: "Adapter2".into(),
                }
            ]
        );
        assert_eq!(spec.adapters[1].spec(), "_private.mod:Adapter2");
    }

    #[test]
    fn relative_python_packages_resolve_against_the_file() {
        let base = Path::new("/cfg");
        assert_eq!(resolve_local_package("./py/echo", base), "/cfg/./py/echo");
        assert_eq!(resolve_local_package("-e ../echo", base), "-e /cfg/../echo");
        for as_written in ["cjm-echo==1.0", "/abs/echo", "git+https://x.invalid/r.git"] {
            assert_eq!(resolve_local_package(as_written, base), as_written);
        }
    }

    #[test]
    fn each_bad_entry_is_reported_with_its_name() {
        let cases: &[(&str, &str)] = &[
            ("- {cargo: {path: pkg}}", "plugin #1: no \"name\""),
            (
                "- {name: 'x; rm -rf ~', cargo: {path: pkg}}",
                "plugin x; rm -rf ~: name: invalid name",
            ),
            (
                "- {name: a, env_name: 'x; rm -rf ~', cargo: {path: pkg}}",
                "plugin a: env_name: invalid name \"x; rm -rf ~\"",
            ),
            (
                "- {name: a, env_name: ../up, cargo: {path: pkg}}",
                "plugin a: env_name: invalid name",
            ),
            ("- {name: a}", "plugin a: needs exactly one source"),
            (
                "- {name: a, executable: tool, cargo: {path: pkg}}",
                "found 2",
            ),
            (
                "- {name: a, package: p, cargo: {path: pkg}}",
                "needs exactly one source",
            ),
            ("- {name: a, carg: {path: pkg}}", "plugin a: unknown field `carg`"),
            ("- {name: a, cargo: {}}", "needs exactly one of \"path\", \"git\" or \"crate\""),
            (
                "- {name: a, cargo: {path: pkg, git: 'https://x'}}",
                "found 2",
            ),
            ("- {name: a, cargo: {path: nowhere}}", "has no Cargo.toml"),
            (
                "- {name: a, cargo: {git: 'https://x', rev: a, tag: b}}",
                "at most one of \"rev\", \"branch\" or \"tag\"",
            ),
            ("- {name: a, cargo: {path: pkg, rev: a}}", "only apply to \"git\""),
            ("- {name: a, cargo: {git: '--upload-pack=x'}}", "must not start with '-'"),
            ("- {name: a, cargo: {git: ''}}", "is empty"),
            ("- {name: a, cargo: {crate: c}}", "\"crate\" needs a \"version\""),
            ("- {name: a, cargo: {crate: '-c', version: '1'}}", "crate: invalid name"),
            ("- {name: a, cargo: {path: pkg, version: '1'}}", "only applies to \"crate\""),
            ("- {name: a, cargo: {path: pkg}, bin: 'a/b'}", "bin: invalid name"),
            ("- {name: a, executable: tool, bin: b}", "\"bin\" only applies"),
            ("- {name: a, executable: missing}", "is not a file"),
            ("- {name: a, python_version: '3.11'}", "needs \"package\""),
            (
                "- {name: a, package: p, adapters: [{lib: l}]}",
                "plugin a: adapters[0]: no \"impl\"",
            ),
            (
                "- {name: a, package: p, adapters: [{impl: 'm.n:C', lib: l}, {impl: 'm;x:C'}]}",
                "plugin a: adapters[1]: impl \"m;x:C\" is not 'module.path:ClassName'",
            ),
            ("- {name: a, package: p, adapters: [{impl: 'mod'}]}", "is not 'module.path"),
            ("- {name: a, package: p, adapters: [{impl: 'm:'}]}", "is not 'module.path"),
            (
                "- {name: a, package: p, adapters: [{impl: 'm:C', lib: '--index-url=x'}]}",
                "adapters[0]: lib \"--index-url=x\" must not start with '-'",
            ),
            (
                "- {name: a, package: p, adapters: [{impl: 'm:C', libb: x}]}",
                "unknown field `libb`",
            ),
            (
                "- {name: a, executable: tool, adapters: [{impl: 'm:C'}]}",
                "\"adapters\" only apply to a Python entry",
            ),
            ("- {name: a, package: 3}", "plugin a: package: invalid type"),
            ("- just a string", "plugin #1: must be a mapping of keys"),
            (
                "- {name: a, package: 3}\n- {name: b, cargo: {path: [1]}}",
                "plugin b: cargo: invalid type: sequence, expected path",
            ),
            (
                "- {name: a, executable: tool}\n- {name: a, cargo: {path: pkg}}",
                "plugin a: the name is used by more than one entry",
            ),
            (
                "- {name: a, env_name: e, executable: tool}\n- {name: b, env_name: e, executable: tool}",
                "plugin b: env_name \"e\" is already used by plugin a",
            ),
        ];
        for (entries, expected) in cases {
            let found = problems(&format!("plugins:\n{}", indent(entries)));
            assert!(
                found.iter().any(|problem| problem.contains(expected)),
                "{entries}: expected {expected:?}, got {found:?}"
            );
        }
    }

    fn indent(text: &str) -> String {
        text.lines().map(|line| format!("  {line}\n")).collect()
    }

    #[test]
    fn all_problems_of_a_file_are_reported_together() {
        let found = problems(
            "plugins:\n  - {name: good, executable: tool}\n  - {name: 'bad name', executable: tool}\n  - {name: b, cargo: {crate: c}}\n  - {name: c}\n",
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("plugin bad name:"), "{found:?}");
        assert!(found[1].starts_with("plugin b:"), "{found:?}");
        assert!(found[2].starts_with("plugin c:"), "{found:?}");
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        assert!(problems("plugins: [")[0].contains("not valid YAML"));
        assert_eq!(
            problems("other: 1"),
            ["no \"plugins\" list (nor the successor's \"capabilities\")"]
        );
        assert_eq!(
            problems("plugins: []\ncapabilities: []"),
            ["both \"plugins\" and \"capabilities\" lists: keep one"]
        );
        assert_eq!(
            problems("capabilities: 3"),
            ["\"capabilities\" must be a list of entries"]
        );
        assert_eq!(
            problems("plugins: 3"),
            ["\"plugins\" must be a list of entries"]
        );
        let dir = base();
        assert_eq!(PluginsFile::parse("plugins:", dir.path()).unwrap(), []);
    }

    #[test]
    fn load_resolves_against_the_file_and_names_it_in_errors() {
        let dir = base();
        let file = dir.path().join("plugins.yaml");
        std::fs::write(&file, "plugins:\n  - {name: a, cargo: {path: pkg}}\n").unwrap();
        let loaded = PluginsFile::load(&file).unwrap();
        assert_eq!(
            loaded.entries[0].source,
            Source::Cargo {
                crate_source: CargoSource::Path(dir.path().join("pkg")),
                bin: None
            }
        );
        let missing = PluginsFile::load(&dir.path().join("absent.yaml")).unwrap_err();
        let message = missing.to_string();
        assert!(
            message.contains("absent.yaml has 1 problem:") && message.contains("cannot read"),
            "{message}"
        );
    }
}
