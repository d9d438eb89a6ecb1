use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::placement::WorkerPlacement;
use crate::{validate_name, ManifestError, ManifestErrorKind, ResourceRequirements};

/// One plugin's manifest: what `cjm-ctl install-all` writes and discovery reads.
///
/// Fields this version does not know are kept in `extra` and written back unchanged.
/// Non-exhaustive, as the original adds manifest fields: build one in code with
/// [`Manifest::native`] and set the fields wanted, or parse one with
/// [`Manifest::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest", into = "RawManifest")]
#[non_exhaustive]
pub struct Manifest {
    /// The plugin's name: unique among discovered plugins, and a file name (see
    /// [`validate_name`]).
    pub name: String,
    /// The plugin's version, as it reports it (`0.0.0` when the manifest has none).
    pub version: String,
    /// One line on what the plugin does; may be empty.
    pub description: String,
    /// Who wrote it; may be empty.
    pub author: String,
    /// The package the plugin comes from (a crate or a Python distribution); may be
    /// empty.
    pub package_name: String,
    /// What kind of plugin it is, such as `"transcription"` or `"system_monitor"`;
    /// may be empty.
    pub category: String,
    /// The fully qualified name of the interface it implements (the original's
    /// Python class path); may be empty.
    pub interface: String,
    /// How the host starts its worker.
    pub launch: Launch,
    /// Added to the worker's environment.
    pub env_vars: BTreeMap<String, String>,
    /// What one execution needs from the machine.
    pub resources: ResourceRequirements,
    /// JSON Schema of the plugin's configuration; `{}` when it declares none.
    pub config_schema: Value,
    /// Every other field of the file, kept as it came (the installer's `env_name`,
    /// the original's `conda_env`, ..).
    pub extra: Map<String, Value>,
}

/// How the host starts the plugin's worker. Exactly one form is present in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A binary built on `cjm-worker`: `<command> [args..] --port P --ppid PID`.
    Native {
        /// The program: absolute, or relative to the manifest's folder.
        command: PathBuf,
        /// Arguments before the ones the host adds.
        args: Vec<String>,
    },
    /// The original's universal worker:
    /// `<python_path> -m cjm_plugin_system.core.worker --module M --class C ..`.
    Python {
        /// The Python interpreter of the plugin's environment.
        python_path: PathBuf,
        /// The module that defines the plugin class.
        module: String,
        /// The plugin class's name in `module`.
        class: String,
    },
}

impl Launch {
    /// `"native"` or `"python"`, for listings.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Launch::Native { .. } => "native",
            Launch::Python { .. } => "python",
        }
    }
}

impl Manifest {
    /// A native manifest with only a name, a version and a command, for building one
    /// up in code.
    pub fn native(name: impl Into<String>, version: impl Into<String>, command: PathBuf) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            author: String::new(),
            package_name: String::new(),
            category: String::new(),
            interface: String::new(),
            launch: Launch::Native {
                command,
                args: Vec::new(),
            },
            env_vars: BTreeMap::new(),
            resources: ResourceRequirements::default(),
            config_schema: Value::Object(Map::new()),
            extra: Map::new(),
        }
    }

    /// Parse a manifest from JSON text.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = serde_json::from_str(text).map_err(|err| {
            if !err.is_data() {
                return ManifestError::new(ManifestErrorKind::Json(err));
            }
            // A value of the wrong type stops the parser before it has seen whether
            // the rest is JSON at all: only a second pass tells well-formed JSON of
            // the wrong shape (the manifest is wrong) from text that is not JSON.
            match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => ManifestError::invalid(err.to_string()),
                Err(syntax) => ManifestError::new(ManifestErrorKind::Json(syntax)),
            }
        })?;
        let raw = match raw.extra.get("format_version") {
            Some(Value::String(version)) if version.starts_with("2.") => {
                flattened_v2(text).map_err(ManifestError::invalid)?
            }
            Some(other) => {
                return Err(ManifestError::invalid(format!(
                    "\"format_version\" {other} is not one this host reads (\"2.0\", or none)"
                )))
            }
            None => raw,
        };
        Manifest::try_from(raw).map_err(ManifestError::invalid)
    }

    /// Read and parse a manifest file; errors name the file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ManifestError::new(ManifestErrorKind::Read(err)).at(path))?;
        Manifest::from_json(&text).map_err(|err| err.at(path))
    }

    /// Pretty JSON, as written to `plugins/<name>.json`.
    pub fn to_json_pretty(&self) -> String {
        // A Manifest holds only JSON-representable data with string keys, so
        // serialisation cannot fail; fall back to the compact form just in case.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Where the plugin's worker runs (its `attach` or `placement` field; checked when
    /// the manifest was read).
    pub fn placement(&self) -> Result<WorkerPlacement, ManifestError> {
        WorkerPlacement::from_fields(&self.extra).map_err(ManifestError::invalid)
    }

    /// The variables its worker declares (its `worker_env` field; checked when the
    /// manifest was read).
    pub fn worker_env(&self) -> Result<Vec<crate::EnvVarSpec>, ManifestError> {
        crate::worker_env::from_fields(&self.extra).map_err(ManifestError::invalid)
    }

    /// How long its worker may stay idle before it is stopped (`keep_alive_secs`;
    /// checked when the manifest was read); `None` when the manifest does not say.
    pub fn keep_alive(&self) -> Option<std::time::Duration> {
        keep_alive_of(&self.extra).ok().flatten()
    }

    /// How much of its jobs the journal keeps (`observability`: `full` or
    /// `ambient`; checked when the manifest was read); `None` when it does not say.
    pub fn observability(&self) -> Option<crate::Observability> {
        crate::observability::observability_of(&self.extra)
            .ok()
            .flatten()
    }

    /// The native command made absolute against the manifest's folder.
    pub fn resolved_launch(&self, manifest_dir: Option<&Path>) -> Launch {
        match (&self.launch, manifest_dir) {
            (Launch::Native { command, args }, Some(dir)) if command.is_relative() => {
                Launch::Native {
                    command: dir.join(command),
                    args: args.clone(),
                }
            }
            (launch, _) => launch.clone(),
        }
    }
}

/// The manifest as it is on disk: every field optional, so that one validation step
/// can report what is missing or contradictory in words.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(expecting = "a JSON object of manifest fields")]
struct RawManifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    package_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    category: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    python_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "class")]
    class: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_schema: Option<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = String;

    fn try_from(raw: RawManifest) -> Result<Self, String> {
        let name = raw.name.ok_or("no \"name\" field")?;
        validate_name(&name).map_err(|err| err.to_string())?;
        crate::placement::WorkerPlacement::from_fields(&raw.extra)?;
        crate::worker_env::from_fields(&raw.extra)?;
        keep_alive_of(&raw.extra)?;
        crate::observability::observability_of(&raw.extra)?;
        let has_native = raw.command.is_some() || raw.args.is_some();
        let has_python = raw.python_path.is_some() || raw.module.is_some() || raw.class.is_some();
        let launch = match (has_native, has_python) {
            (true, true) => {
                return Err(
                    "both launch forms given: use either \"command\" (native) or \
                            \"python_path\"/\"module\"/\"class\" (Python), not both"
                        .into(),
                )
            }
            (false, false) => {
                return Err("no launch form: expected \"command\" (native) or \
                            \"python_path\", \"module\" and \"class\" (Python)"
                    .into())
            }
            (true, false) => Launch::Native {
                command: raw.command.ok_or("\"args\" given without \"command\"")?,
                args: raw.args.unwrap_or_default(),
            },
            (false, true) => {
                let missing: Vec<&str> = [
                    ("python_path", raw.python_path.is_none()),
                    ("module", raw.module.is_none()),
                    ("class", raw.class.is_none()),
                ]
                .into_iter()
                .filter_map(|(field, absent)| absent.then_some(field))
                .collect();
                match (raw.python_path, raw.module, raw.class) {
                    (Some(python_path), Some(module), Some(class)) => Launch::Python {
                        python_path,
                        module,
                        class,
                    },
                    _ => return Err(format!("Python launch form lacks {missing:?}")),
                }
            }
        };
        if let Launch::Native { command, .. } = &launch {
            if command.as_os_str().is_empty() {
                return Err("\"command\" is empty".into());
            }
        }
        let config_schema = match raw.config_schema {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema,
            Some(other) => {
                return Err(format!(
                    "\"config_schema\" must be a JSON object, found {other}"
                ))
            }
        };
        Ok(Manifest {
            name,
            version: raw.version.unwrap_or_else(|| String::from("0.0.0")),
            description: raw.description,
            author: raw.author,
            package_name: raw.package_name,
            category: raw.category,
            interface: raw.interface,
            launch,
            env_vars: raw.env_vars,
            resources: raw.resources.unwrap_or_default(),
            config_schema,
            extra: raw.extra,
        })
    }
}

impl From<Manifest> for RawManifest {
    fn from(manifest: Manifest) -> Self {
        let mut raw = RawManifest {
            name: Some(manifest.name),
            version: Some(manifest.version),
            description: manifest.description,
            author: manifest.author,
            package_name: manifest.package_name,
            category: manifest.category,
            interface: manifest.interface,
            env_vars: manifest.env_vars,
            resources: Some(manifest.resources),
            config_schema: Some(manifest.config_schema),
            extra: manifest.extra,
            ..RawManifest::default()
        };
        match manifest.launch {
            Launch::Native { command, args } => {
                raw.command = Some(command);
                raw.args = (!args.is_empty()).then_some(args);
            }
            Launch::Python {
                python_path,
                module,
                class,
            } => {
                raw.python_path = Some(python_path);
                raw.module = Some(module);
                raw.class = Some(class);
            }
        }
        raw
    }
}

/// The original 0.0.46's layout (`cjm-ctl install-all` of 0.0.46 writes it to
/// `<data_dir>/manifests/<name>.json`): `install` and `code` blocks, which it reads as
/// one flat manifest (`{**install, **code}`), as is done here; its other blocks
/// (`drift_tracking`, `overrides`) are kept as unknown fields.
fn flattened_v2(text: &str) -> Result<RawManifest, String> {
    let mut whole: Map<String, Value> =
        serde_json::from_str(text).map_err(|err| err.to_string())?;
    let mut flat = Map::new();
    for block in ["install", "code"] {
        match whole.remove(block) {
            Some(Value::Object(fields)) => flat.extend(fields),
            None => {}
            Some(other) => return Err(format!("\"{block}\" must be an object, got {other}")),
        }
    }
    for (key, value) in whole {
        flat.entry(key).or_insert(value);
    }
    serde_json::from_value(Value::Object(flat)).map_err(|err| err.to_string())
}

/// `keep_alive_secs`: a positive number of seconds, or absent.
fn keep_alive_of(extra: &Map<String, Value>) -> Result<Option<std::time::Duration>, String> {
    match extra.get("keep_alive_secs") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|secs| secs.is_finite() && *secs > 0.0)
            .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
            .map(Some)
            .ok_or_else(|| {
                format!("\"keep_alive_secs\" must be a positive number of seconds, got {value}")
            }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_046_layout_reads_as_its_flat_view() {
        let text = r#"{
            "format_version": "2.0",
            "install": {"python_path": "/envs/w/bin/python", "conda_env": "",
                        "env_vars": {"HF_HOME": "/m"}, "installer_version": "cjm-ctl 0.0.46"},
            "code": {"name": "whisper", "version": "1.2.0", "description": "speech",
                     "module": "w.plugin", "class": "WhisperPlugin", "interface": "x.Y",
                     "resources": {"requires_gpu": true, "platforms": [], "accelerators": []},
                     "config_schema": {"type": "object"},
                     "worker_env": [{"name": "HF_TOKEN", "secret": true, "required": false,
                                     "label": "", "description": "", "default": null,
                                     "options": null}]},
            "drift_tracking": {"config_schema_hash": "sha256:00"},
            "overrides": {}
        }"#;
        let manifest = Manifest::from_json(text).unwrap();
        assert_eq!(manifest.name, "whisper");
        assert_eq!(manifest.env_vars["HF_HOME"], "/m");
        assert!(manifest.resources.requires_gpu);
        assert!(
            matches!(manifest.launch, Launch::Python { ref class, .. } if class == "WhisperPlugin")
        );
        assert!(manifest.worker_env().unwrap()[0].secret);
        assert_eq!(
            manifest.extra["drift_tracking"]["config_schema_hash"],
            "sha256:00"
        );
        let err = Manifest::from_json(r#"{"format_version": "3.0"}"#).unwrap_err();
        assert!(
            err.to_string().contains("\"format_version\" \"3.0\""),
            "{err}"
        );
    }

    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<Manifest, String> {
        Manifest::from_json(&value.to_string()).map_err(|err| err.to_string())
    }

    #[test]
    fn python_form_of_the_original_parses_and_round_trips() {
        let original = json!({
            "name": "whisper-local",
            "version": "0.1.0",
            "description": "Local Whisper transcription",
            "category": "transcription",
            "interface": "cjm_transcription_plugin_system.plugin_interface.TranscriptionPlugin",
            "python_path": "/home/u/.cjm/envs/whisper/bin/python",
            "module": "cjm_transcription_plugin_whisper.plugin",
            "class": "WhisperLocalPlugin",
            "env_vars": {"HF_HOME": "/data/hf"},
            "resources": {"requires_gpu": true, "min_gpu_vram_mb": 4096, "min_system_ram_mb": 2048},
            "config_schema": {"type": "object", "properties": {}},
            "conda_env": "whisper"
        });
        let manifest = parse(original.clone()).unwrap();
        assert!(
            matches!(manifest.launch, Launch::Python { ref class, .. } if class == "WhisperLocalPlugin")
        );
        assert_eq!(manifest.resources.gpu_vram_mb(), 4096);
        assert_eq!(manifest.extra["conda_env"], "whisper");
        assert_eq!(serde_json::to_value(&manifest).unwrap(), original);
    }

    #[test]
    fn native_form_parses_with_defaults() {
        let manifest = parse(json!({"name": "cjm-echo", "command": "bin/cjm-echo"})).unwrap();
        assert_eq!(manifest.version, "0.0.0");
        assert_eq!(manifest.config_schema, json!({}));
        assert!(!manifest.resources.requires_gpu);
        let launch = manifest.resolved_launch(Some(Path::new("/opt/plugins")));
        assert_eq!(
            launch,
            Launch::Native {
                command: PathBuf::from("/opt/plugins/bin/cjm-echo"),
                args: vec![]
            }
        );
    }

    #[test]
    fn gpu_memory_counts_only_when_a_gpu_is_required() {
        let manifest = parse(json!({"name": "a", "command": "/x",
            "resources": {"requires_gpu": false, "min_gpu_vram_mb": 4096}}))
        .unwrap();
        assert_eq!(manifest.resources.gpu_vram_mb(), 0);
    }

    #[test]
    fn unusable_manifests_say_why() {
        let cases = [
            (json!({"command": "/x"}), "no \"name\""),
            (json!({"name": "a"}), "no launch form"),
            (
                json!({"name": "a", "command": "/x", "python_path": "/p"}),
                "both launch forms",
            ),
            (
                json!({"name": "a", "python_path": "/p", "module": "m"}),
                "lacks [\"class\"]",
            ),
            (json!({"name": "a", "args": ["x"]}), "without \"command\""),
            (json!({"name": "../a", "command": "/x"}), "invalid name"),
            (
                json!({"name": "a", "command": "/x", "config_schema": 3}),
                "must be a JSON object",
            ),
        ];
        for (value, expected) in cases {
            let err = parse(value.clone()).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
        // Well-formed JSON of the wrong shape is no JSON syntax error.
        let wrong_shape = [
            (
                json!({"name": 5, "command": "/x"}),
                "invalid type: integer `5`, expected a string",
            ),
            (json!([1]), "expected a JSON object of manifest fields"),
            (json!("a"), "expected a JSON object of manifest fields"),
        ];
        for (value, expected) in wrong_shape {
            let err = Manifest::from_json(&value.to_string()).unwrap_err();
            assert!(
                matches!(err.kind, ManifestErrorKind::Invalid(_)),
                "{value}: {err}"
            );
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
        let err = Manifest::from_json("{not json").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, "[1, 2").unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert!(err.to_string().contains("broken.json"), "{err}");
        let missing = Manifest::load(&dir.path().join("absent.json")).unwrap_err();
        assert!(matches!(missing.kind, ManifestErrorKind::Read(_)));
    }
}
