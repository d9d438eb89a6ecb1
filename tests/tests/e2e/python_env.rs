//! The Python the interop tests run the original with: `CJM_TEST_PYTHON` (CI sets it
//! to a venv holding cjm_plugin_system 0.0.20 from PyPI), or else a venv these tests
//! create once under the workspace's target folder. Never skipped: without the
//! original the tests fail and say why.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The release of the original the interop tests compare against.
pub const ORIGINAL: &str = "cjm_plugin_system==0.0.20";
pub const PYTHON_ENV_VAR: &str = "CJM_TEST_PYTHON";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/python")
}

/// A Python with the original installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = match std::env::var_os(PYTHON_ENV_VAR).filter(|v| !v.is_empty()) {
            Some(python) => PathBuf::from(python),
            None => own_venv(),
        };
        let check = Command::new(&python)
            .args(["-c", "import cjm_plugin_system.core.proxy, httpx"])
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
        assert!(
            check.status.success(),
            "{} cannot import the original ({ORIGINAL}): {}",
            python.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        python
    })
}

/// `target/python-interop/venv`, created and filled from PyPI on first use. A lock
/// file keeps test threads and concurrent `cargo test` runs from building it twice.
fn own_venv() -> PathBuf {
    let dir = workspace_root().join("target/python-interop");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join("lock")).unwrap();
    // Released when `lock` drops.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|err| panic!("cannot lock {}: {err}", dir.join("lock").display()));
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".cjm-ready");
    if ready.is_file() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let log_path = dir.join("setup.log");
    let log = File::create(&log_path).unwrap();
    let run = |command: &mut Command| {
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .status()
            .is_ok_and(|status| status.success())
    };
    let created = run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    let installed = created
        && run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            ORIGINAL,
        ]));
    if !installed {
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the Python interop tests need the original ({ORIGINAL}) from PyPI, and \
             installing it into {} failed (no python3 with venv, or PyPI unreachable). \
             Set {PYTHON_ENV_VAR} to a python that has it. End of {}:\n{}",
            venv.display(),
            log_path.display(),
            tail.join("\n")
        );
    }
    std::fs::write(&ready, ORIGINAL).unwrap();
    python
}
