//! Creating the environment of a Python entry: a venv from the interpreter that
//! `python_version` names, or a conda environment from its `env_file`.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cargo::run_logged;
use super::config::PythonSpec;

/// The interpreter inside an environment (venv and conda alike).
pub fn env_python(env: &Path) -> PathBuf {
    env.join("bin").join("python")
}

/// Create the environment at `env` (which must not exist), writing what the tools
/// print to `log`. Without `python_version`, a venv is made with `python3`, or with
/// a Python 3.12 or newer when the entry's `interface_libs` name a release of the
/// original that needs one.
pub fn create(spec: &PythonSpec, env: &Path, log: &mut File) -> Result<(), String> {
    match &spec.env_file {
        Some(env_file) => create_conda(env_file, env, log),
        None => {
            let python = match (&spec.python_version, needs_python_312_for(spec)) {
                (None, Some(why)) => python_312_or_newer(&why)?,
                (version, _) => base_interpreter(version.as_deref())?,
            };
            let _ = std::io::Write::write_all(
                log,
                format!("creating the venv with {}\n", python.display()).as_bytes(),
            );
            let mut command = Command::new(&python);
            command.arg("-m").arg("venv").arg(env).stdin(Stdio::null());
            run_logged(&mut command, log)
        }
    }
}

/// `conda env create` or `micromamba create`, into `env` by prefix so that the
/// environment lives under `$CJM_HOME/envs` like every other.
fn create_conda(env_file: &Path, env: &Path, log: &mut File) -> Result<(), String> {
    let (program, mut args): (PathBuf, Vec<OsString>) = if let Some(conda) = find_on_path("conda") {
        (conda, vec!["env".into(), "create".into(), "--yes".into()])
    } else if let Some(micromamba) = find_on_path("micromamba") {
        (micromamba, vec!["create".into(), "--yes".into()])
    } else {
        return Err(format!(
            "env_file {} needs conda or micromamba, and neither is on PATH \
             (install one, or use python_version for a venv)",
            env_file.display()
        ));
    };
    args.extend([
        "--file".into(),
        env_file.into(),
        "--prefix".into(),
        env.into(),
    ]);
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    run_logged(&mut command, log)?;
    let python = env_python(env);
    if python.is_file() {
        Ok(())
    } else {
        Err(format!(
            "the environment from {} has no Python ({} is missing): add python to its \
             dependencies",
            env_file.display(),
            python.display()
        ))
    }
}

/// Why the entry needs Python 3.12 or newer, if it does: the original's newer
/// releases (see [`needs_python_312`]), or its successor, `cjm-substrate` (named in
/// `interface_libs`, or the package is one of its `cjm-capability-*` plugins).
fn needs_python_312_for(spec: &PythonSpec) -> Option<String> {
    needs_python_312(&spec.interface_libs).or_else(|| {
        spec.interface_libs
            .iter()
            .chain(&spec.package)
            .find_map(|requirement| needs_substrate(requirement))
    })
}

/// Why `requirement` needs the successor (and so Python 3.12 or newer), if it does.
pub(super) fn needs_substrate(requirement: &str) -> Option<String> {
    let normalized = requirement
        .trim()
        .to_ascii_lowercase()
        .replace(['-', '.'], "_");
    if normalized.starts_with("cjm_substrate") {
        return Some(format!(
            "{requirement} (the successor, cjm-substrate) needs Python 3.12 or newer"
        ));
    }
    normalized.starts_with("cjm_capability_").then(|| {
        format!("{requirement} is a plugin of cjm-substrate, which needs Python 3.12 or newer")
    })
}

/// Why the entry needs Python 3.12 or newer, if it does: the original from 0.0.21 on
/// (0.0.46, its last release, requires it), named in `interface_libs` unpinned or
/// pinned to such a version.
fn needs_python_312(interface_libs: &[String]) -> Option<String> {
    interface_libs.iter().find_map(|requirement| {
        let normalized = requirement.trim().to_ascii_lowercase().replace('-', "_");
        let rest = normalized.strip_prefix("cjm_plugin_system")?;
        let rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with(">") {
            return Some(format!(
                "{requirement} (its newest releases need Python 3.12)"
            ));
        }
        let pinned = rest.strip_prefix("==")?.trim();
        let patch: u32 = pinned.strip_prefix("0.0.")?.parse().ok()?;
        (patch >= 21).then(|| format!("{requirement} needs Python 3.12 or newer"))
    })
}

/// The newest Python 3.12 or newer: `python3.13`, `python3.12` on PATH, then
/// pyenv's installed versions (its shims fail for versions not selected).
fn python_312_or_newer(why: &str) -> Result<PathBuf, String> {
    const NAMES: [&str; 3] = ["python3.14", "python3.13", "python3.12"];
    let mut candidates: Vec<PathBuf> = NAMES.iter().filter_map(|name| find_on_path(name)).collect();
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv")));
    if let Some(versions) = pyenv
        .as_ref()
        .and_then(|root| std::fs::read_dir(root.join("versions")).ok())
    {
        let mut found: Vec<PathBuf> = versions
            .flatten()
            .map(|entry| entry.path().join("bin/python3"))
            .filter(|python| python.is_file())
            .collect();
        found.sort();
        found.reverse();
        candidates.extend(found);
    }
    let tried = candidates.clone();
    candidates
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import sys; assert sys.version_info >= (3, 12)"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .ok_or_else(|| {
            let pyenv = pyenv.map_or_else(
                || String::from("pyenv's versions (neither PYENV_ROOT nor HOME is set)"),
                |root| format!("{}/*/bin/python3", root.join("versions").display()),
            );
            let older = if tried.is_empty() {
                String::new()
            } else {
                let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                format!(" (older: {})", tried.join(", "))
            };
            format!(
                "{why}, and none was found: looked for {} on PATH and {pyenv}{older}; \
                 install one or set python_version",
                NAMES.join(", ")
            )
        })
}

/// The interpreter that creates the venv: `python<version>` from PATH when a version
/// is asked for (and it must really be that version), else `python3`.
fn base_interpreter(version: Option<&str>) -> Result<PathBuf, String> {
    let Some(version) = version else {
        return find_on_path("python3")
            .or_else(|| find_on_path("python"))
            .ok_or_else(|| "no python3 on PATH to create the environment with".to_owned());
    };
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "python_version {version:?} is not a version like \"3.11\""
        ));
    }
    let name = format!("python{version}");
    let program = find_on_path(&name).ok_or_else(|| {
        format!(
            "python_version {version} asks for {name}, which is not on PATH (install \
             that Python, or use env_file with conda)"
        )
    })?;
    let output = Command::new(&program)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    let reported = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "python_version {version}: {} on PATH does not run: {}",
            program.display(),
            stderr.lines().next().unwrap_or("no message")
        ));
    }
    if !version_matches(&reported, version) {
        return Err(format!(
            "python_version {version}: {} is Python {reported}",
            program.display()
        ));
    }
    Ok(program)
}

/// Whether the interpreter's `major.minor.micro` is the version asked for, compared
/// component by component (`3.1` is not `3.11`).
fn version_matches(reported: &str, wanted: &str) -> bool {
    let reported: Vec<&str> = reported.split('.').collect();
    let wanted: Vec<&str> = wanted.split('.').collect();
    wanted.len() <= reported.len() && reported.iter().zip(&wanted).all(|(a, b)| a == b)
}

/// The first executable file called `name` in the folders of PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_originals_newer_releases_ask_for_python_312() {
        let libs = |names: &[&str]| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>()
        };
        assert!(needs_python_312(&libs(&["cjm_plugin_system==0.0.20"])).is_none());
        assert!(needs_python_312(&libs(&["numpy"])).is_none());
        for needs in [
            "cjm_plugin_system==0.0.46",
            "cjm-plugin-system",
            "cjm_plugin_system>=0.0.30",
        ] {
            assert!(
                needs_python_312(&libs(&["numpy", needs])).is_some(),
                "{needs}"
            );
        }
    }

    use super::*;

    #[test]
    fn the_successor_and_its_capabilities_ask_for_python_312() {
        let spec = |libs: &[&str], package: &str| PythonSpec {
            env_file: None,
            python_version: None,
            package: Some(package.to_owned()),
            interface_libs: libs.iter().map(|lib| lib.to_string()).collect(),
            adapters: Vec::new(),
        };
        assert!(needs_python_312_for(&spec(&["numpy"], "cjm-echo-py")).is_none());
        let why = needs_python_312_for(&spec(&["cjm-substrate==0.0.74"], "x")).unwrap();
        assert!(why.contains("cjm-substrate"), "{why}");
        let why = needs_python_312_for(&spec(&[], "cjm-capability-fs>=0.1")).unwrap();
        assert!(why.contains("plugin of cjm-substrate"), "{why}");
        assert!(needs_python_312_for(&spec(&[], "/src/cjm_substrate_echo")).is_none());
    }

    #[test]
    fn versions_compare_by_component() {
        assert!(version_matches("3.11.7", "3.11"));
        assert!(version_matches("3.11.7", "3"));
        assert!(version_matches("3.11.7", "3.11.7"));
        assert!(!version_matches("3.11.7", "3.1"));
        assert!(!version_matches("3.11.7", "3.12"));
        assert!(!version_matches("3.11", "3.11.7"));
    }

    #[test]
    fn a_version_that_is_not_one_is_refused_before_anything_runs() {
        for bad in ["", "3.x", "3.11; rm -rf ~", "../3"] {
            let err = base_interpreter(Some(bad)).unwrap_err();
            assert!(err.contains("not a version"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let err = base_interpreter(Some("0.0.1")).unwrap_err();
        assert!(
            err.contains("python0.0.1") && err.contains("not on PATH"),
            "{err}"
        );
    }
}
