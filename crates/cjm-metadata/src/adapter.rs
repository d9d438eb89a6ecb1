//! Adapter manifests (the original 0.0.46's `"unit": "adapter"` files, written by its
//! `cjm-ctl generate-adapter-manifest` beside plugin manifests), and the rule by
//! which an adapter fits a plugin: its protocol's members against the structural
//! surface the plugin's manifest records (`match_protocol_against_surface`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ManifestError, ManifestErrorKind};

/// The `unit` of an adapter manifest (a plugin's manifest has no `unit`).
pub const ADAPTER_UNIT: &str = "adapter";

/// One task adapter as its manifest describes it: an implementation (`module:class`)
/// of a task's interface, installed in some plugin's environment. Fields this
/// version does not know are kept in `extra` and written back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AdapterManifest {
    /// Always [`ADAPTER_UNIT`].
    pub unit: String,
    /// Unique name, `module.Class`.
    pub name: String,
    /// The version of the interface library it came from.
    #[serde(default = "zero_version")]
    pub version: String,
    /// The task it serves, such as `"graph-storage"`.
    pub task_name: String,
    /// The module of its class, importable in the plugin's environment.
    pub module: String,
    /// Its class.
    #[serde(rename = "class")]
    pub class_name: String,
    /// The protocol a plugin must have for it (a Python path; never imported here).
    #[serde(default)]
    pub required_tool_protocol: String,
    /// That protocol's members: `{"methods": [{"name", "signature", "params"}],
    /// "properties": [..]}`.
    #[serde(default)]
    pub protocol_members: Value,
    /// The environment the manifest was generated in.
    #[serde(default)]
    pub conda_env: String,
    /// When (ISO 8601).
    #[serde(default)]
    pub generated_at: String,
    /// Every other field, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn zero_version() -> String {
    String::from("0.0.0")
}

impl AdapterManifest {
    /// Whether parsed JSON is an adapter manifest (the original's
    /// `is_adapter_manifest`: routed by `unit` before any other reading).
    pub fn is_adapter(value: &Value) -> bool {
        value.get("unit").and_then(Value::as_str) == Some(ADAPTER_UNIT)
    }

    /// Read an adapter manifest from parsed JSON; errors say which field is wrong.
    pub fn from_value(value: Value) -> Result<AdapterManifest, ManifestError> {
        if !AdapterManifest::is_adapter(&value) {
            return Err(ManifestError::invalid(
                "not an adapter manifest: \"unit\" is not \"adapter\"",
            ));
        }
        let manifest: AdapterManifest = serde_json::from_value(value)
            .map_err(|err| ManifestError::invalid(format!("adapter manifest: {err}")))?;
        for (field, text) in [
            ("name", &manifest.name),
            ("task_name", &manifest.task_name),
            ("module", &manifest.module),
            ("class", &manifest.class_name),
        ] {
            if text.is_empty() {
                return Err(ManifestError::invalid(format!(
                    "adapter manifest: \"{field}\" is empty"
                )));
            }
        }
        if !matches!(manifest.protocol_members, Value::Object(_) | Value::Null) {
            return Err(ManifestError::invalid(
                "adapter manifest: \"protocol_members\" must be an object",
            ));
        }
        Ok(manifest)
    }

    /// Read an adapter manifest file; errors name the file.
    pub fn load(path: &Path) -> Result<AdapterManifest, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ManifestError::new(ManifestErrorKind::Read(err)).at(path))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|err| ManifestError::new(ManifestErrorKind::Json(err)).at(path))?;
        AdapterManifest::from_value(value).map_err(|err| err.at(path))
    }

    /// The worker's spec of it, `module:Class` (what `--adapters` lists).
    pub fn spec(&self) -> String {
        format!("{}:{}", self.module, self.class_name)
    }

    /// Whether it fits a plugin whose manifest records `surface`.
    pub fn check_against(&self, surface: Option<&Value>) -> SurfaceMatch {
        match_protocol_against_surface(&self.protocol_members, surface)
    }
}

/// A method whose parameters do not start with the protocol's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamMismatch {
    /// The method.
    pub method: String,
    /// The protocol's parameters.
    pub protocol_params: Vec<String>,
    /// The plugin's.
    pub surface_params: Vec<String>,
}

/// The verdict of [`match_protocol_against_surface`], in the original's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurfaceMatch {
    /// Whether the plugin has everything the protocol asks for.
    pub compatible: bool,
    /// Protocol methods the plugin lacks.
    pub missing_methods: Vec<String>,
    /// Protocol properties the plugin lacks.
    pub missing_properties: Vec<String>,
    /// Methods whose parameters differ.
    pub param_mismatches: Vec<ParamMismatch>,
    /// Why it cannot be told (no surface recorded), when it cannot.
    pub reason: Option<String>,
}

/// The reason given when a plugin's manifest records no surface.
pub const NO_SURFACE_REASON: &str =
    "capability manifest has no structural_surface (pre-fracture; regenerate the manifest)";

/// The original's rule: every protocol method must be on the surface, and where both
/// record parameters, the surface's must start with the protocol's; every protocol
/// property must be among the surface's properties. No surface (or an empty one):
/// not compatible, with [`NO_SURFACE_REASON`].
pub fn match_protocol_against_surface(
    protocol_members: &Value,
    structural_surface: Option<&Value>,
) -> SurfaceMatch {
    let surface = structural_surface.filter(|surface| is_truthy(surface));
    let Some(surface) = surface else {
        return SurfaceMatch {
            compatible: false,
            missing_methods: Vec::new(),
            missing_properties: Vec::new(),
            param_mismatches: Vec::new(),
            reason: Some(String::from(NO_SURFACE_REASON)),
        };
    };
    let surface_methods = list(surface, "methods");
    let surface_properties: Vec<&str> = list(surface, "properties")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut missing_methods = Vec::new();
    let mut param_mismatches = Vec::new();
    for wanted in list(protocol_members, "methods") {
        let name = wanted.get("name").and_then(Value::as_str).unwrap_or("");
        let found = surface_methods
            .iter()
            .find(|method| method.get("name").and_then(Value::as_str) == Some(name));
        let Some(found) = found else {
            missing_methods.push(name.to_owned());
            continue;
        };
        let protocol_params = params(wanted);
        let surface_params = found.get("params").filter(|params| !params.is_null());
        // As the original: only when the protocol lists parameters and the surface
        // records any list (empty included).
        if let (Some(protocol_params), Some(surface_params)) = (protocol_params, surface_params) {
            let surface_params = strings(surface_params);
            if protocol_params.is_empty() {
                continue;
            }
            if !surface_params.starts_with(&protocol_params) {
                param_mismatches.push(ParamMismatch {
                    method: name.to_owned(),
                    protocol_params,
                    surface_params,
                });
            }
        }
    }
    let missing_properties: Vec<String> = list(protocol_members, "properties")
        .iter()
        .filter_map(Value::as_str)
        .filter(|property| !surface_properties.contains(property))
        .map(str::to_owned)
        .collect();
    SurfaceMatch {
        compatible: missing_methods.is_empty()
            && missing_properties.is_empty()
            && param_mismatches.is_empty(),
        missing_methods,
        missing_properties,
        param_mismatches,
        reason: None,
    }
}

/// Python's truth of a decoded JSON value (`if not structural_surface`).
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::String(text) => !text.is_empty(),
        Value::Number(_) => true,
    }
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn params(method: &Value) -> Option<Vec<String>> {
    method
        .get("params")
        .filter(|params| !params.is_null())
        .map(strings)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn generated() -> Value {
        // As the original's generate-adapter-manifest writes it.
        json!({
            "unit": "adapter",
            "name": "graph_adapter.impl.SqliteGraphAdapter",
            "version": "0.1.0",
            "task_name": "graph-storage",
            "module": "graph_adapter.impl",
            "class": "SqliteGraphAdapter",
            "required_tool_protocol": "graph_adapter.protocol.GraphTool",
            "protocol_members": {
                "methods": [{"name": "add_node", "signature": "(self, label, props)",
                             "params": ["label", "props"]}],
                "properties": ["db_path"]
            },
            "generated_at": "2026-01-01T00:00:00+00:00",
            "conda_env": "graph-env",
            "written_by_a_later_release": {"x": 1}
        })
    }

    #[test]
    fn an_adapter_manifest_reads_and_writes_back_the_originals_shape() {
        let value = generated();
        assert!(AdapterManifest::is_adapter(&value));
        let manifest = AdapterManifest::from_value(value.clone()).unwrap();
        assert_eq!(manifest.class_name, "SqliteGraphAdapter");
        assert_eq!(manifest.spec(), "graph_adapter.impl:SqliteGraphAdapter");
        assert_eq!(serde_json::to_value(&manifest).unwrap(), value);
        let mut nameless = generated();
        nameless["task_name"] = json!("");
        let err = AdapterManifest::from_value(nameless).unwrap_err();
        assert!(err.to_string().contains("\"task_name\" is empty"), "{err}");
        let mut classless = generated();
        classless.as_object_mut().unwrap().remove("class");
        let err = AdapterManifest::from_value(classless).unwrap_err();
        assert!(err.to_string().contains("class"), "{err}");
        assert!(!AdapterManifest::is_adapter(&json!({"name": "plugin"})));
    }

    #[test]
    fn the_match_follows_the_originals_rules() {
        let protocol = &generated()["protocol_members"];
        let fits = json!({
            "methods": [{"name": "add_node", "params": ["label", "props", "extra"]}],
            "properties": ["db_path", "other"]
        });
        let verdict = match_protocol_against_surface(protocol, Some(&fits));
        assert!(verdict.compatible, "{verdict:?}");

        let swapped = json!({
            "methods": [{"name": "add_node", "params": ["props", "label"]}],
            "properties": []
        });
        let verdict = match_protocol_against_surface(protocol, Some(&swapped));
        assert!(!verdict.compatible);
        assert_eq!(verdict.missing_properties, ["db_path"]);
        assert_eq!(verdict.param_mismatches[0].method, "add_node");
        assert_eq!(verdict.reason, None);

        let verdict = match_protocol_against_surface(protocol, Some(&json!({"methods": []})));
        assert_eq!(verdict.missing_methods, ["add_node"]);

        // Parameters unrecorded on the surface are not compared.
        let unrecorded = json!({"methods": [{"name": "add_node"}], "properties": ["db_path"]});
        assert!(match_protocol_against_surface(protocol, Some(&unrecorded)).compatible);

        for none in [None, Some(&json!({})), Some(&json!(null))] {
            let verdict = match_protocol_against_surface(protocol, none);
            assert!(!verdict.compatible);
            assert_eq!(verdict.reason.as_deref(), Some(NO_SURFACE_REASON));
        }
    }
}
