//! The Pythons the interop tests run the originals with: the first release we are
//! compatible with (0.0.20) and the newest (0.0.46, which needs Python 3.12 or
//! newer). Each comes from an environment variable (CI's `.ci/run` sets both to venvs
//! it makes), or else from a venv these tests create once under the workspace's
//! target folder. Never skipped: without the original the tests fail and say why.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One release of the original, and where its Python comes from.
pub struct Original {
    /// The pip requirement.
    pub requirement: &'static str,
    /// The variable naming a Python that has it.
    pub env_var: &'static str,
    /// The folder under `target/` of the venv made when the variable is not set.
    pub venv_folder: &'static str,
    /// The Pythons tried, in order, to make that venv.
    pub interpreters: &'static [&'static str],
}

/// The release the first interop tests compare against.
pub const ORIGINAL: Original = Original {
    requirement: "cjm_plugin_system==0.0.20",
    env_var: "CJM_TEST_PYTHON",
    venv_folder: "python-interop",
    interpreters: &["python3"],
};

/// The newest release under that name.
pub const ORIGINAL_046: Original = Original {
    requirement: "cjm_plugin_system==0.0.46",
    env_var: "CJM_TEST_PYTHON_046",
    venv_folder: "python-interop-046",
    interpreters: &["python3.13", "python3.12"],
};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/python")
}

pub fn fixture_dir_046() -> PathBuf {
    workspace_root().join("tests/fixtures/python046")
}

/// A Python with the original 0.0.20 installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| ORIGINAL.python())
}

/// A Python with the original 0.0.46 installed.
pub fn python_046() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| ORIGINAL_046.python())
}

impl Original {
    fn python(&self) -> PathBuf {
        let python = match std::env::var_os(self.env_var).filter(|v| !v.is_empty()) {
            Some(python) => PathBuf::from(python),
            None => self.own_venv(),
        };
        let check = Command::new(&python)
            .args(["-c", "import cjm_plugin_system.core.proxy, httpx"])
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
        assert!(
            check.status.success(),
            "{} cannot import the original ({}): {}",
            python.display(),
            self.requirement,
            String::from_utf8_lossy(&check.stderr)
        );
        python
    }

    /// `target/<venv_folder>/venv`, created and filled from PyPI on first use. A lock
    /// file keeps test threads and concurrent `cargo test` runs from building it
    /// twice.
    fn own_venv(&self) -> PathBuf {
        let dir = workspace_root().join("target").join(self.venv_folder);
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
        let created = self
            .candidates()
            .iter()
            .any(|interpreter| run(Command::new(interpreter).arg("-m").arg("venv").arg(&venv)));
        let installed = created
            && run(Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                self.requirement,
            ]));
        if !installed {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the Python interop tests need the original ({}) from PyPI, and \
                 installing it into {} failed (none of {:?} could make a venv, or PyPI \
                 is unreachable). Set {} to a python that has it. End of {}:\n{}",
                self.requirement,
                venv.display(),
                self.interpreters,
                self.env_var,
                log_path.display(),
                tail.join("\n")
            );
        }
        std::fs::write(&ready, self.requirement).unwrap();
        python
    }

    /// The interpreters to try: those on `PATH`, then pyenv's installed versions of
    /// them (pyenv's shims fail for versions that are installed but not selected).
    fn candidates(&self) -> Vec<PathBuf> {
        let mut candidates: Vec<PathBuf> = self.interpreters.iter().map(PathBuf::from).collect();
        let pyenv = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
        if let Some(versions) = pyenv.map(|root| root.join("versions")) {
            let mut installed: Vec<PathBuf> = std::fs::read_dir(versions)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .collect();
            installed.sort();
            for interpreter in self.interpreters {
                for version in installed.iter().rev() {
                    candidates.push(version.join("bin").join(interpreter));
                }
            }
        }
        candidates
    }
}
