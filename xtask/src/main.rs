//! `cargo xtask <task>`: development tasks as Rust code.
//!
//! - `e2e`: build the end-to-end fixtures and run the tests that spawn real workers.
//! - `demo [--release]`: build `cjm-ctl`, install the plugins of the repository's
//!   `plugins.yaml` with `cjm-ctl install-all` into a `CJM_HOME` (default
//!   `target/demo-home`) and run them through `cjm-ctl`. The dev profile unless
//!   `--release`: `cargo test` afterwards reuses that build.
//! - `bench [--quick] [--only METRIC]`: the benchmark, ours beside the machine's
//!   floor and the Python original; writes `target/bench/results.json`.
//! - `readme`: copy the files the README shows (blocks after `<!-- file: PATH -->`)
//!   into it again, after they changed; the e2e tests fail until they agree.
//! - `soak [cjm-soak options]`: 100,000 calls, 1,000 load/unload cycles and 32
//!   clients x 4 workers for 60 s, failing on any error or on memory or descriptor
//!   growth; a few minutes.
//! - `package [--verify]`: package every publishable crate as crates.io would get
//!   it, offline, failing on any warning (missing metadata); `--verify` also builds
//!   each package from its own files (minutes when cold). `.ci/run` runs the quick
//!   form.
//! - `ray-e2e`: workers placed by a real Ray cluster from PyPI (see `ray_e2e.rs`).
//! - `jobs-stress [--runs N] [--no-load]`: the job tests N times in a row (default
//!   50) on a loaded machine (see `jobs_stress.rs`).
//! - `module-cycles`: fail if a crate's modules use each other in a circle (see
//!   `module_cycles.rs`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod jobs_stress;
mod module_cycles;
mod ray_e2e;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "e2e" => e2e(),
        "demo" => demo(std::env::args().skip(2).collect()),
        "bench" => bench(std::env::args().skip(2).collect()),
        "soak" => soak(std::env::args().skip(2).collect()),
        "readme" => readme(),
        "package" => package(std::env::args().skip(2).collect()),
        "ray-e2e" => ray_e2e::ray_e2e(),
        "jobs-stress" => jobs_stress::jobs_stress(std::env::args().skip(2).collect()),
        "module-cycles" => module_cycles::module_cycles(),
        _ => {
            eprintln!(
                "usage: cargo xtask <e2e|demo [--release]|bench [--quick] [--only METRIC]|soak [OPTIONS]|readme|package [--verify]|ray-e2e|jobs-stress [--runs N] [--no-load]|module-cycles>"
            );
            bail!("unknown task {task:?}")
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(command: &mut Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn e2e() -> Result<()> {
    let root = workspace_root()?;
    run(cargo().current_dir(&root).args([
        "test",
        "--package",
        "cjm-tests",
        "--",
        "--test-threads=2",
    ]))
}

fn soak(passthrough: Vec<String>) -> Result<()> {
    let root = workspace_root()?;
    run(cargo()
        .current_dir(&root)
        .args(["build", "--release", "--package", "cjm-soak"]))?;
    // soak-echo is built beside cjm-soak, where it looks for it.
    run(Command::new(root.join("target/release/cjm-soak")).args(&passthrough))
}

/// The original's version the benchmark compares against.
/// The newest original, for its job figures.
const ORIGINAL_046: &str = "cjm_plugin_system==0.0.46";
const ORIGINAL: &str = "cjm_plugin_system==0.0.20";

fn bench(passthrough: Vec<String>) -> Result<()> {
    let root = workspace_root()?;
    // The plugins apart from the bench: built together, cargo would give them the
    // features the host side enables (tokio's multi-threaded runtime, among others),
    // and they would not be the binaries `cjm-ctl install-all` builds.
    run(cargo()
        .current_dir(&root)
        .args(["build", "--release", "--package", "cjm-bench"]))?;
    let bench_dir = root.join("target/bench");
    std::fs::create_dir_all(&bench_dir)?;
    // A plain plugin first: cjm-echo without the `remote` feature (no TLS), for the idle
    // memory of a plugin that is never placed elsewhere. Kept beside the bench, as the
    // default build below takes its place in target/release.
    run(cargo().current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "cjm-echo",
        "--no-default-features",
    ]))?;
    std::fs::copy(
        root.join("target/release/cjm-echo"),
        root.join("target/release/cjm-echo-plain"),
    )
    .context("cannot keep the plain cjm-echo build")?;
    run(cargo().current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "cjm-echo",
        "--package",
        "cjm-wordcount",
    ]))?;
    // The daemon's figures run `cjm-ctl serve` and `cjm-ctl exec`: built on its own,
    // as `cargo install` builds it (a no-op once built).
    run(cargo()
        .current_dir(&root)
        .args(["build", "--release", "--package", "cjm-ctl"]))?;
    let mut command = Command::new(root.join("target/release/cjm-bench"));
    command
        .arg("run")
        .arg("--bin-dir")
        .arg(root.join("target/release"))
        .arg("--out")
        .arg(bench_dir.join("results.json"))
        .args(&passthrough);
    match original_venv(&bench_dir.join("venv"), "0.0.20", ORIGINAL, python3) {
        Ok(python) => command.arg("--python").arg(python),
        Err(reason) => command.arg("--python-skip").arg(format!("{reason:#}")),
    };
    match original_venv(
        &bench_dir.join("venv-046"),
        "0.0.46",
        ORIGINAL_046,
        python312,
    ) {
        Ok(python) => command.arg("--python-046").arg(python),
        Err(reason) => command.arg("--python-046-skip").arg(format!("{reason:#}")),
    };
    run(&mut command)
}

/// `$PYTHON`, else `python3`.
fn python3() -> Result<std::ffi::OsString> {
    Ok(std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into()))
}

/// A Python 3.12 or newer (0.0.46 needs it): on `PATH`, else among pyenv's installed
/// versions (its shims fail for versions that are not selected).
fn python312() -> Result<std::ffi::OsString> {
    let mut candidates: Vec<PathBuf> = vec!["python3.13".into(), "python3.12".into()];
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv")));
    if let Some(versions) = pyenv.and_then(|root| std::fs::read_dir(root.join("versions")).ok()) {
        let mut found: Vec<PathBuf> = versions
            .flatten()
            .map(|entry| entry.path().join("bin/python3"))
            .collect();
        found.sort();
        found.reverse();
        candidates.extend(found);
    }
    for candidate in candidates {
        let recent = Command::new(&candidate)
            .args(["-c", "import sys; assert sys.version_info >= (3, 12)"])
            .output()
            .is_ok_and(|out| out.status.success());
        if recent {
            return Ok(candidate.into_os_string());
        }
    }
    bail!("no Python 3.12 or newer found (cjm_plugin_system 0.0.46 needs one)")
}

/// A venv with `requirement` (the Python original at `version`), made once and
/// reused; its interpreter.
fn original_venv(
    venv: &Path,
    version: &str,
    requirement: &str,
    interpreter: fn() -> Result<std::ffi::OsString>,
) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('cjm_plugin_system'))",
        ])
        .output()
        .map(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == version)
        .unwrap_or(false);
    if installed {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(venv);
    run(Command::new(interpreter()?).arg("-m").arg("venv").arg(venv))
        .context("cannot create a Python venv for the original")?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        requirement,
    ]))
    .context("cannot install the Python original from PyPI")?;
    Ok(python)
}

fn demo(options: Vec<String>) -> Result<()> {
    let release = match options.as_slice() {
        [] => false,
        [flag] if flag == "--release" => true,
        other => bail!("usage: cargo xtask demo [--release]; got {other:?}"),
    };
    // Dev by default: it compiles in about half the time of release, and `cargo test`
    // after the demo finds what it needs compiled already.
    let (profile, profile_dir) = if release {
        ("release", "release")
    } else {
        ("dev", "debug")
    };
    let root = workspace_root()?;
    run(cargo()
        .current_dir(&root)
        .args(["build", "--package", "cjm-ctl", "--profile", profile]))?;
    let ctl = root.join("target").join(profile_dir).join("cjm-ctl");
    let home = match std::env::var_os("CJM_HOME") {
        Some(home) => PathBuf::from(home),
        None => root.join("target/demo-home"),
    };
    // The example plugins are members of this workspace, so install-all builds them
    // here, in the workspace's target folder, with the profile cjm-ctl was built in:
    // what that build compiled is not compiled again.
    run(Command::new(&ctl)
        .current_dir(&root)
        .env("CJM_HOME", &home)
        .args([
            "install-all",
            "--config",
            "plugins.yaml",
            "--locked",
            "--cargo-profile",
            profile,
        ]))?;
    let text_file = home.join("demo-input.txt");
    std::fs::write(
        &text_file,
        "the quick brown fox\njumps over\nthe lazy dog\n".repeat(10_000),
    )
    .with_context(|| format!("cannot write {}", text_file.display()))?;
    let text_arg = serde_json::to_string(&[text_file.to_string_lossy()])?;
    let steps: [&[&str]; 5] = [
        &["list"],
        &[
            "exec",
            "cjm-echo",
            "--args",
            r#"["hello from the host", 2]"#,
            "--config",
            r#"{"prefix": "> "}"#,
        ],
        &["exec", "cjm-echo", "--stream", "--args", "[3]"],
        &["exec", "cjm-wordcount", "--args", &text_arg],
        &["exec", "cjm-sysmon", "--args", r#"["get_system_status"]"#],
    ];
    for step in steps {
        run(Command::new(&ctl).args(step).env("CJM_HOME", &home))?;
    }
    eprintln!("demo done; CJM_HOME={}", home.display());
    Ok(())
}

/// The README's marked blocks, refreshed from the files they show (up to the file's
/// own tests, which the README leaves out).
fn readme() -> Result<()> {
    const MARKER: &str = "<!-- file: ";
    let root = workspace_root()?;
    let path = root.join("README.md");
    let text = std::fs::read_to_string(&path).context("cannot read README.md")?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(MARKER) {
        let (before, marked) = rest.split_at(at + MARKER.len());
        out.push_str(before);
        let (file, after) = marked
            .split_once(" -->\n")
            .context("a file marker without its closing ` -->`")?;
        let fence_end = after
            .find('\n')
            .filter(|_| after.starts_with("```"))
            .with_context(|| format!("no code block after the marker of {file}"))?;
        let code_end = after[fence_end..]
            .find("\n```")
            .with_context(|| format!("the code block of {file} never ends"))?
            + fence_end;
        let content = std::fs::read_to_string(root.join(file))
            .with_context(|| format!("cannot read {file}"))?;
        let content = match content.find("#[cfg(test)]") {
            Some(tests) => content[..tests].trim_end(),
            None => content.trim_end(),
        };
        out.push_str(file);
        out.push_str(" -->\n");
        out.push_str(&after[..=fence_end]);
        out.push_str(content);
        rest = &after[code_end..];
    }
    out.push_str(rest);
    if out != text {
        std::fs::write(&path, out).context("cannot write README.md")?;
        eprintln!("README.md updated");
    }
    Ok(())
}

/// Package every crate that may be published, together: cargo then resolves their
/// dependencies on each other from the packages just made (a local overlay over
/// crates.io), which `cargo package -p cjm-manager` alone cannot, as its siblings are
/// not on crates.io. Offline: only what cargo has cached is used.
fn package(args: Vec<String>) -> Result<()> {
    let verify = match args.as_slice() {
        [] => false,
        [flag] if flag == "--verify" => true,
        _ => bail!("usage: cargo xtask package [--verify]"),
    };
    let root = workspace_root()?;
    let publishable = publishable_packages(&root)?;
    if publishable.is_empty() {
        bail!("no package of the workspace may be published");
    }
    let mut command = cargo();
    // --allow-dirty: what is checked is the manifests as they are, committed or not.
    command
        .current_dir(&root)
        .args(["package", "--offline", "--allow-dirty"]);
    if !verify {
        command.arg("--no-verify");
    }
    for name in &publishable {
        command.args(["--package", name]);
    }
    eprintln!("$ {command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    eprint!("{log}");
    if !output.status.success() {
        bail!("cargo package failed: {}", output.status);
    }
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("warning:"))
        .collect();
    if !warnings.is_empty() {
        bail!("cargo package warned: {}", warnings.join("; "));
    }
    eprintln!("packaged: {}", publishable.join(", "));
    Ok(())
}

/// The workspace's packages without `publish = false`.
fn publishable_packages(root: &Path) -> Result<Vec<String>> {
    let output = cargo()
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata's output")?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?;
    Ok(packages
        .iter()
        // `publish` is null for any registry, [] for `publish = false`.
        .filter(|package| {
            package["publish"]
                .as_array()
                .is_none_or(|to| !to.is_empty())
        })
        .filter_map(|package| package["name"].as_str().map(str::to_owned))
        .collect())
}
