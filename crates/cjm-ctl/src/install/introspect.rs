//! The manifest of a Python plugin, made as the original's installer makes it: the
//! package's `meta.get_plugin_metadata()`, plus the config schema of a plugin
//! instance when the metadata has none; then the launch fields of our environment.
//! In an environment of the successor (cjm-substrate, without the original), as its
//! installer makes it: the one capability class of `<module>.capability`, named
//! after its distribution, with its declared worker environment. A 0.0.46 plugin
//! without a meta module (its "new-style" `ToolCapability`, such as
//! cjm-system-monitor-nvidia) is read the same way from `<module>.plugin`, as 0.0.46's
//! installer reads it. Either way its structural surface is recorded, for matching
//! task adapters.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::manifest_writer;

/// Run inside the plugin's environment with the top-level module as `sys.argv[1]`.
/// What the plugin prints while it is imported goes to stderr (the install log), so
/// that stdout carries the metadata alone. A failure to read the schema is not
/// fatal, as in the original, but it is logged.
const SCRIPT: &str = r#"
import importlib, importlib.metadata as md, json, sys
out, sys.stdout = sys.stdout, sys.stderr
module_name = sys.argv[1]

def version(dist):
    try:
        return md.version(dist)
    except Exception:
        return None

def schema_of(meta):
    if "config_schema" in meta:
        return
    try:
        cls = getattr(importlib.import_module(meta["module"]), meta.get("class", ""))
        instance = cls()
        if hasattr(instance, "get_config_schema"):
            meta["config_schema"] = instance.get_config_schema()
        if hasattr(instance, "cleanup"):
            try:
                instance.cleanup()
            except Exception:
                pass
    except Exception as e:
        print("config schema not captured: %r" % (e,), file=sys.stderr)

def capability_meta(base, submodule):
    # A capability without a meta module, as the successor's installer (and 0.0.46's
    # for its re-based "new-style" plugins) reads it: the one concrete subclass of
    # `base` in <module>.<submodule>, named after its distribution.
    import dataclasses, inspect
    mod = importlib.import_module(module_name + "." + submodule)
    found = [c for _, c in inspect.getmembers(mod, inspect.isclass)
             if issubclass(c, base) and c is not base
             and not inspect.isabstract(c) and c.__module__ == mod.__name__]
    if len(found) != 1:
        sys.exit("%s has %d concrete ToolCapability classes (%s); the installer "
                 "needs exactly one" % (mod.__name__, len(found), [c.__name__ for c in found]))
    cap = found[0]
    dists = md.packages_distributions().get(module_name)
    dist = dists[0] if dists else module_name.replace("_", "-")
    dm = md.metadata(dist)
    meta = {"name": dm.get("Name", dist), "version": dm.get("Version", "") or "",
            "description": dm.get("Summary", "") or "",
            "module": mod.__name__, "class": cap.__name__}
    env = getattr(cap, "WORKER_ENV", None) or []
    if env:
        meta["worker_env"] = [dataclasses.asdict(s) if dataclasses.is_dataclass(s)
                              else dict(s) for s in env]
    return meta

def successor_meta():
    from cjm_substrate.core.capability import ToolCapability
    return capability_meta(ToolCapability, "capability")

def original_meta():
    try:
        meta_module = importlib.import_module(module_name + ".meta")
    except ImportError:
        meta_module = None
    if meta_module is None or not hasattr(meta_module, "get_plugin_metadata"):
        # 0.0.46's new-style plugin: a ToolCapability in <module>.plugin.
        from cjm_plugin_system.core.capability import ToolCapability
        return capability_meta(ToolCapability, "plugin")
    meta = meta_module.get_plugin_metadata()
    if not isinstance(meta, dict):
        sys.exit("%s.meta.get_plugin_metadata() returned %s, not a dict"
                 % (module_name, type(meta).__name__))
    return meta

def record_surface(meta):
    # The class's structural surface (public methods with their parameters,
    # properties, attributes), read off the class as both installers do: the host
    # matches task adapters against it without importing anything.
    for home in ("cjm_substrate.core.capability", "cjm_plugin_system.core.capability"):
        try:
            derive = importlib.import_module(home).derive_structural_surface
        except Exception:
            continue
        try:
            cls = getattr(importlib.import_module(meta["module"]), meta.get("class", ""))
            meta["structural_surface"] = derive(cls)
        except Exception as e:
            print("structural surface not recorded: %r" % (e,), file=sys.stderr)
        return

original, successor = version("cjm_plugin_system"), version("cjm_substrate")
if original is None and successor is not None:
    meta = successor_meta()
    schema_of(meta)
    record_surface(meta)
    meta["cjm_substrate_version"] = successor
else:
    try:
        import cjm_plugin_system.core.worker  # noqa: F401
    except Exception as e:
        sys.exit("the environment cannot import cjm_plugin_system.core.worker, the "
                 "original's worker, nor has it cjm_substrate, its successor (add one of "
                 "them to interface_libs): %r" % (e,))
    meta = original_meta()
    meta.setdefault("module", module_name + ".plugin")
    schema_of(meta)
    if "structural_surface" not in meta:
        record_surface(meta)
    if original is not None:
        meta["cjm_plugin_system_version"] = original
    else:
        print("version of cjm_plugin_system not read", file=sys.stderr)
out.write(json.dumps(meta, default=str))
"#;

/// The importable top-level module of a pip package argument, derived as the
/// original's `_generate_manifest` derives it (last path or URL segment, `-` to
/// `_`), with version specifiers and extras of a requirement dropped.
pub fn module_name(package: &str) -> String {
    let package = package.trim();
    let last_segment = |text: &str| {
        Path::new(text.trim_end_matches(['/', '\\']))
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = if let Some(url) = package.strip_prefix("git+") {
        let repo = url.rsplit('/').next().unwrap_or_default();
        repo.split(".git").next().unwrap_or_default().to_owned()
    } else if let Some(path) = package.strip_prefix("-e ") {
        last_segment(path.trim())
    } else if package.contains('/') || package.contains('\\') {
        last_segment(package)
    } else {
        package
            .split(['=', '<', '>', '!', '~', '[', ';', '@', ' '])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    name.replace('-', "_")
}

/// Run `script` with `args` in the environment of `python` (argv, never pasted into
/// the code), its stderr and stdout kept in the install log, and read the JSON it
/// prints; errors say `what` was being read.
pub(super) fn run_script(
    python: &Path,
    script: &str,
    args: &[&str],
    what: &str,
    log: &mut File,
) -> Result<Value, String> {
    let _ = writeln!(
        log,
        "$ {} -c <script reading {what}> {}",
        python.display(),
        args.join(" ")
    );
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null());
    if let Ok(stderr) = log.try_clone() {
        command.stderr(stderr);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run {}: {err}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "reading {what} failed ({}); see the log",
            output.status
        ));
    }
    let _ = log.write_all(&output.stdout);
    let _ = writeln!(log);
    serde_json::from_slice(&output.stdout).map_err(|err| format!("{what} gave no JSON: {err}"))
}

/// The manifest to write for a plugin installed in the environment of `python`:
/// the metadata, with `python_path` (where the environment will be), `module` and
/// `class` for our launcher, `env_name` for `cjm-ctl remove`, and the version of the
/// original installed (`cjm_plugin_system_version`: it tells the host how to hand the
/// worker its socket). Checked to be a
/// manifest discovery accepts, naming the plugin `expected_name`.
pub fn manifest_of(
    python: &Path,
    final_python: &Path,
    module: &str,
    expected_name: &str,
    env_name: &str,
    log: &mut File,
) -> Result<String, String> {
    let what = format!("{module}.meta.get_plugin_metadata()");
    let mut meta = run_script(python, SCRIPT, &[module], &what, log)?;
    let Some(fields) = meta.as_object_mut() else {
        return Err(format!(
            "{module}.meta.get_plugin_metadata() is not a JSON object"
        ));
    };
    if !fields.get("class").is_some_and(Value::is_string) {
        return Err(format!(
            "{module}.meta.get_plugin_metadata() names no \"class\" to run"
        ));
    }
    if !fields.get("module").is_some_and(Value::is_string) {
        fields.insert("module".into(), Value::from(format!("{module}.plugin")));
    }
    fields.insert(
        "python_path".into(),
        Value::from(final_python.to_string_lossy().into_owned()),
    );
    fields.insert("env_name".into(), Value::from(env_name));
    manifest_writer::checked_manifest_text(&meta, expected_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_follow_the_original() {
        let cases = [
            (
                "git+https://github.com/cj-mills/cjm-transcription-plugin-whisper.git",
                "cjm_transcription_plugin_whisper",
            ),
            (
                "git+https://example.invalid/a/my-plugin.git@v1",
                "my_plugin",
            ),
            ("-e /src/cjm-echo-py", "cjm_echo_py"),
            ("/src/cjm-echo-py/", "cjm_echo_py"),
            ("../py/cjm-echo-py", "cjm_echo_py"),
            ("cjm-echo-py", "cjm_echo_py"),
            ("cjm-echo-py==0.1.0", "cjm_echo_py"),
            ("cjm-echo-py[gpu]>=1", "cjm_echo_py"),
        ];
        for (package, module) in cases {
            assert_eq!(module_name(package), module, "{package}");
        }
    }
}
