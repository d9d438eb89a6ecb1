//! The adapter manifest of one `adapters:` entry, made as the successor's install-all
//! makes it (`_generate_adapter_manifest`): the adapter class is imported in the
//! plugin's environment, and its task and the members of the protocol a plugin must
//! have are recorded, so that the host matches it against plugins without importing
//! anything. It is checked to be one the manager reads before it is written.

use std::fs::File;
use std::path::{Path, PathBuf};

use cjm_metadata::AdapterManifest;
use serde_json::Value;

use super::config::AdapterSpec;
use super::introspect::run_script;

/// Run inside the environment with `module` and `class` as `sys.argv[1:3]` (never
/// pasted into the code). What the import prints goes to the log, so that stdout
/// carries the manifest alone.
const SCRIPT: &str = r#"
import importlib, inspect, json, sys
out, sys.stdout = sys.stdout, sys.stderr
module_name, class_name = sys.argv[1], sys.argv[2]
cls = getattr(importlib.import_module(module_name), class_name)
task_name = getattr(cls, "task_name", "") or ""
proto = getattr(cls, "required_tool_protocol", None)
if not task_name:
    sys.exit("%s:%s has no task_name" % (module_name, class_name))
if proto is None:
    sys.exit("%s:%s has no required_tool_protocol" % (module_name, class_name))

methods, properties = [], []
for name in sorted(dir(proto)):
    if name.startswith("_"):
        continue
    attr = inspect.getattr_static(proto, name)
    if isinstance(attr, property):
        properties.append(name)
        continue
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    if inspect.isfunction(attr):
        try:
            sig = inspect.signature(attr)
            params, text = [p for p in sig.parameters if p != "self"], str(sig)
        except (ValueError, TypeError):
            params, text = [], "(...)"
        methods.append({"name": name, "signature": text, "params": params})

try:
    version = getattr(importlib.import_module(module_name.split(".")[0]), "__version__", "0.0.0")
except Exception:
    version = "0.0.0"
config_schema = {}
try:
    getter = getattr(cls(), "get_config_schema", None)
    if callable(getter):
        config_schema = getter() or {}
except Exception:
    config_schema = {}
out.write(json.dumps({
    "unit": "adapter",
    "name": module_name + "." + class_name,
    "version": version,
    "task_name": task_name,
    "module": module_name,
    "class": class_name,
    "required_tool_protocol": proto.__module__ + "." + proto.__qualname__,
    "protocol_members": {"methods": methods, "properties": properties},
    "config_schema": config_schema,
}, default=str))
"#;

/// An adapter manifest ready to be written: its file name (the successor's,
/// `adapter-<task>-<Class>.json`) and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterFile {
    pub file_name: String,
    pub text: String,
}

/// Introspect `adapter` with the environment's `python`; `env_name` is recorded as
/// the environment the adapter lives in.
pub fn adapter_file_of(
    python: &Path,
    adapter: &AdapterSpec,
    env_name: &str,
    log: &mut File,
) -> Result<AdapterFile, String> {
    let spec = adapter.spec();
    let what = format!("adapter {spec}");
    let mut value = run_script(
        python,
        SCRIPT,
        &[&adapter.module, &adapter.class_name],
        &what,
        log,
    )?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("conda_env".into(), Value::from(env_name));
        fields.insert("generated_at".into(), Value::from(now_rfc3339()));
    }
    let manifest = AdapterManifest::from_value(value.clone())
        .map_err(|err| format!("adapter {spec}: {err}"))?;
    let task = file_safe(&manifest.task_name).ok_or_else(|| {
        format!(
            "adapter {spec}: task_name {:?} cannot name a file",
            manifest.task_name
        )
    })?;
    let text =
        serde_json::to_string_pretty(&value).map_err(|err| format!("adapter {spec}: {err}"))?;
    Ok(AdapterFile {
        file_name: format!("adapter-{task}-{}.json", adapter.class_name),
        text,
    })
}

/// The adapter manifests in `dir` registered for environment `env_name` (the ones an
/// install of that environment wrote): replaced by its next install, removed with it.
pub fn registered_for(dir: &Path, env_name: &str) -> Vec<(PathBuf, AdapterManifest)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("adapter-") && name.ends_with(".json"))
        })
        .filter_map(|path| {
            let manifest = AdapterManifest::load(&path).ok()?;
            (manifest.conda_env == env_name).then_some((path, manifest))
        })
        .collect()
}

/// A task name as a file name part: a plain word (letters, digits, `-`, `_`, `.`
/// inside), never a path.
fn file_safe(task: &str) -> Option<&str> {
    let plain = !task.is_empty()
        && !task.starts_with('.')
        && task
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    plain.then_some(task)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_name_never_becomes_a_path() {
        assert_eq!(
            file_safe("sentence_segmentation"),
            Some("sentence_segmentation")
        );
        assert_eq!(file_safe("graph-storage.v2"), Some("graph-storage.v2"));
        for bad in ["", "../up", "a/b", ".hidden", "x y"] {
            assert_eq!(file_safe(bad), None, "{bad:?}");
        }
    }
}
