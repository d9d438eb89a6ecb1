//! Asking a plugin binary for its manifest: `<binary> --manifest` prints the fields,
//! the installer adds where the binary is.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::manifest_writer;

/// Run `<binary> --manifest` (stderr into `log`) and return the manifest to write:
/// the plugin's own fields plus `command` (absolute) and, for an installed
/// environment, `env_name` (so that `cjm-ctl remove` finds it). Checked to be a
/// manifest discovery will accept, naming the plugin `expected_name`.
pub fn manifest_of(
    binary: &Path,
    command_path: &Path,
    expected_name: &str,
    env_name: Option<&str>,
    log: &mut File,
) -> Result<String, String> {
    let mut command = Command::new(binary);
    command.arg("--manifest").stdin(Stdio::null());
    let _ = writeln!(log, "$ {command:?}");
    if let Ok(stderr) = log.try_clone() {
        command.stderr(stderr);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --manifest failed ({})",
            binary.display(),
            output.status
        ));
    }
    let _ = log.write_all(&output.stdout);
    let mut fields: Value = serde_json::from_slice(&output.stdout).map_err(|err| {
        format!(
            "{} --manifest printed no JSON object: {err}",
            binary.display()
        )
    })?;
    let Some(object) = fields.as_object_mut() else {
        return Err(format!(
            "{} --manifest printed JSON that is not an object",
            binary.display()
        ));
    };
    object.insert(
        "command".into(),
        Value::from(command_path.to_string_lossy().into_owned()),
    );
    if let Some(env_name) = env_name {
        object.insert("env_name".into(), Value::from(env_name));
    }
    manifest_writer::checked_manifest_text(&fields, expected_name)
}
