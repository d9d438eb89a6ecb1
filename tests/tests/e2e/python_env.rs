//! The Pythons the interop tests run the originals with: the first release we are
//! compatible with (0.0.20), the newest (0.0.46, which needs Python 3.12 or newer),
//! 0.0.46 with a real adapter-serving plugin from PyPI (the SQLite graph store and
//! its graph-storage adapter), and the successor, cjm-substrate 0.0.74. Each comes from an environment variable (CI's
//! `.ci/run` sets them to venvs it makes), or else from a venv these tests create once
//! under the workspace's target folder. Never skipped: without the original the tests
//! fail and say why.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One release of the original, and where its Python comes from.
pub struct Original {
    /// The pip requirement of the original.
    pub requirement: &'static str,
    /// What else is installed beside it, pinned.
    pub extra_requirements: &'static [&'static str],
    /// Python that succeeds only in a venv that has what the tests need.
    pub check: &'static str,
    /// The variable naming a Python that has it.
    pub env_var: &'static str,
    /// The folder under `target/` of the venv made when the variable is not set.
    pub venv_folder: &'static str,
    /// The Pythons tried, in order, to make that venv.
    pub interpreters: &'static [&'static str],
}

/// What every original's venv must import.
const ORIGINAL_CHECK: &str = "import cjm_plugin_system.core.proxy, httpx";

/// The release the first interop tests compare against.
pub const ORIGINAL: Original = Original {
    requirement: "cjm_plugin_system==0.0.20",
    extra_requirements: &[],
    check: ORIGINAL_CHECK,
    env_var: "CJM_TEST_PYTHON",
    venv_folder: "python-interop",
    interpreters: &["python3"],
};

/// The newest release under that name.
pub const ORIGINAL_046: Original = Original {
    requirement: "cjm_plugin_system==0.0.46",
    extra_requirements: &[],
    check: ORIGINAL_CHECK,
    env_var: "CJM_TEST_PYTHON_046",
    venv_folder: "python-interop-046",
    interpreters: &["python3.13", "python3.12"],
};

/// 0.0.46 with a real tool plugin and its task adapter from PyPI. The graph
/// primitives are pinned at 0.0.10, the last release on `cjm_plugin_system` (later
/// ones require its successor, cjm-substrate); the check makes sure the venv holds
/// 0.0.46 and no cjm-substrate.
pub const ORIGINAL_GRAPH: Original = Original {
    requirement: "cjm_plugin_system==0.0.46",
    extra_requirements: &[
        "cjm-graph-plugin-sqlite==0.0.24",
        "cjm-graph-storage-adapter-interface==0.0.6",
        "cjm_context_graph_primitives==0.0.10",
    ],
    check: "import cjm_plugin_system.core.proxy, httpx\n\
            import cjm_graph_plugin_sqlite.plugin, cjm_graph_storage_adapter_interface.generic\n\
            import importlib.metadata as m\n\
            assert m.version('cjm_plugin_system') == '0.0.46', m.version('cjm_plugin_system')\n\
            assert not [d for d in m.distributions() if d.metadata['Name'] == 'cjm-substrate']\n",
    env_var: "CJM_TEST_PYTHON_GRAPH",
    venv_folder: "python-interop-graph",
    interpreters: &["python3.13", "python3.12"],
};

/// The original's successor, cjm-substrate (import `cjm_substrate`, Python 3.12 or
/// newer), alone: no cjm_plugin_system beside it, as its own capabilities are
/// installed. Its host (`CapabilityManager`), its worker, its installer and its queue.
pub const SUBSTRATE: Original = Original {
    requirement: "cjm-substrate==0.0.74",
    extra_requirements: &[],
    check: "import cjm_substrate.core.manager, cjm_substrate.core.proxy, cjm_substrate.core.queue, cjm_substrate.cli, httpx\n\
            import importlib.metadata as m\n\
            assert m.version('cjm-substrate') == '0.0.74', m.version('cjm-substrate')\n\
            assert not [d for d in m.distributions() if d.metadata['Name'].lower().replace('-', '_') == 'cjm_plugin_system']\n",
    env_var: "CJM_TEST_PYTHON_SUBSTRATE",
    venv_folder: "python-interop-substrate",
    interpreters: &["python3.13", "python3.12"],
};

/// A `PATH` whose first folder (under `home`) holds a `conda` that runs `python`:
/// the originals' adapter introspection runs `conda run -n ENV python ..`.
pub fn path_with_conda_shim(home: &crate::common::TestHome, python: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shim = std::fs::read_to_string(fixture_dir_046().join("conda_shim.py")).unwrap();
    let conda = bin.join("conda");
    std::fs::write(&conda, format!("#!{}\n{shim}", python.display())).unwrap();
    std::fs::set_permissions(&conda, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

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

pub fn fixture_dir_substrate() -> PathBuf {
    workspace_root().join("tests/fixtures/substrate")
}

/// A Python with cjm-substrate 0.0.74 installed.
pub fn python_substrate() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| SUBSTRATE.python())
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

/// A Python with 0.0.46, cjm-graph-plugin-sqlite and its graph-storage adapter.
pub fn python_graph() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| ORIGINAL_GRAPH.python())
}

/// A Python with cjm-substrate 0.0.74; `None`, with the reason printed, only when
/// `CJM_TEST_PYTHON_SUBSTRATE` is not set and the venv cannot be made here (no
/// Python 3.12, no PyPI). Set, it must work.
pub fn python_substrate_or_skip() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if std::env::var_os(SUBSTRATE.env_var).is_some_and(|v| !v.is_empty()) {
                return Some(SUBSTRATE.python());
            }
            match std::panic::catch_unwind(|| SUBSTRATE.python()) {
                Ok(python) => Some(python),
                Err(why) => {
                    let why = why
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| String::from("(no reason given)"));
                    // The test's own output: why it proved nothing here.
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("skipped: no cjm-substrate 0.0.74 venv could be made: {why}");
                    }
                    None
                }
            }
        })
        .as_deref()
}

impl Original {
    /// Everything pip installs into its venv.
    fn requirements(&self) -> Vec<&'static str> {
        let mut all = vec![self.requirement];
        all.extend(self.extra_requirements);
        all
    }

    fn python(&self) -> PathBuf {
        let python = match std::env::var_os(self.env_var).filter(|v| !v.is_empty()) {
            Some(python) => PathBuf::from(python),
            None => self.own_venv(),
        };
        let check = Command::new(&python)
            .args(["-c", self.check])
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
        assert!(
            check.status.success(),
            "{} lacks what the tests need ({}): {}",
            python.display(),
            self.requirements().join(" "),
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
        let wanted = self.requirements().join("\n");
        // A venv made for other pins is made again.
        if std::fs::read_to_string(&ready).is_ok_and(|made| made == wanted) {
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
            && run(Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(self.requirements()));
        if !installed {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the Python interop tests need the original ({}) from PyPI, and \
                 installing it into {} failed (none of {:?} could make a venv, or PyPI \
                 is unreachable). Set {} to a python that has it. End of {}:\n{}",
                self.requirements().join(" "),
                venv.display(),
                self.interpreters,
                self.env_var,
                log_path.display(),
                tail.join("\n")
            );
        }
        std::fs::write(&ready, wanted).unwrap();
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
