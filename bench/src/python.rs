//! The Python original's figures: `python/bench_original.py`, run with the venv's
//! interpreter (which has cjm_plugin_system 0.0.20), prints JSON on its last line.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::report::Results;
use crate::system::python_keys;
use crate::Options;

pub fn measure(options: &Options, python: &Path, results: &mut Results) -> Result<()> {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/python/cjm-echo-py");
    let mut command = script_command(options, python, "bench_original.py", "python-work")?;
    command.arg("--plugin-path").arg(&fixture);
    eprintln!("measuring the Python original ({})", python.display());
    run_script(command, results)
}

/// The newest original's job figures (`python/bench_original046.py`, its own
/// PluginManager and JobQueue), under the same `python_` names: the job metrics have
/// no 0.0.20 figure to clash with.
pub fn measure_046(options: &Options, python: &Path, results: &mut Results) -> Result<()> {
    let command = script_command(options, python, "bench_original046.py", "python046-work")?;
    eprintln!(
        "measuring the Python original 0.0.46 ({})",
        python.display()
    );
    run_script(command, results)
}

fn script_command(options: &Options, python: &Path, script: &str, work: &str) -> Result<Command> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let work = options.out.with_file_name(work);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut command = Command::new(python);
    command.arg(&script).arg("--work").arg(&work);
    if options.quick {
        command.arg("--quick");
    }
    Ok(command)
}

fn run_script(mut command: Command, results: &mut Results) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "the Python benchmark failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .last()
        .context("the Python benchmark printed nothing")?;
    let figures: Value =
        serde_json::from_str(last).context("the Python benchmark's last line is not JSON")?;
    for (name, value, unit) in python_keys(&figures) {
        results.insert(&format!("python_{name}"), value, &unit);
    }
    for (name, reason) in figures
        .get("skipped")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        eprintln!(
            "python_{name}: not measured ({})",
            reason.as_str().unwrap_or("?")
        );
    }
    Ok(())
}
