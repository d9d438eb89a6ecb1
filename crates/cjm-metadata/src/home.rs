use std::path::{Path, PathBuf};

use crate::workspace::Workspace;

/// The folder holding everything the system writes: `$CJM_HOME`, by default `~/.cjm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CjmHome {
    root: PathBuf,
}

/// Neither `CJM_HOME` nor `HOME` is set, so there is no place for manifests and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("neither CJM_HOME nor HOME is set; set CJM_HOME to the folder for plugins and logs")]
pub struct HomeError;

impl CjmHome {
    /// `$CJM_HOME`, else `$HOME/.cjm`.
    pub fn from_env() -> Result<Self, HomeError> {
        let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        if let Some(root) = non_empty("CJM_HOME") {
            return Ok(CjmHome::at(root));
        }
        non_empty("HOME")
            .map(|home| CjmHome::at(PathBuf::from(home).join(".cjm")))
            .ok_or(HomeError)
    }

    /// The home at `root`, whatever the environment says. Nothing is created: the
    /// folders are made by whoever first writes into them.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        CjmHome { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Global manifests: `plugins/<name>.json`.
    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Worker logs: `logs/<name>.log`. They hold plugins' output: the proxy makes
    /// this folder 0700 and each log 0600 (and closes ones made before to others).
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Isolated environments: `envs/<env_name>/`.
    pub fn envs_dir(&self) -> PathBuf {
        self.root.join("envs")
    }

    /// Where plugin `name`'s global manifest is: `plugins/<name>.json`. `name` is
    /// used as it is; check it with [`validate_name`](crate::validate_name) first
    /// when it comes from outside.
    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.plugins_dir().join(format!("{name}.json"))
    }

    /// Where plugin `name`'s worker logs: `logs/<name>.log` (same caveat as
    /// [`manifest_path`](Self::manifest_path)).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// Plugins' own data: `plugin_data/`, given to workers as `CJM_PLUGIN_DATA_DIR`
    /// (the original's name), each plugin's `plugin_data/<name>` as `PLUGIN_DATA_DIR`.
    pub fn plugin_data_dir(&self) -> PathBuf {
        self.root.join("plugin_data")
    }

    /// Models shared by plugins, given to workers as `CJM_MODELS_DIR`: that variable
    /// of the host's environment when it is set, else `models/`.
    pub fn models_dir(&self) -> PathBuf {
        std::env::var_os("CJM_MODELS_DIR")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("models"))
    }

    /// Plugins' secrets: `secrets.json` (mode 0600), see [`SecretStore`](crate::SecretStore).
    pub fn secrets_path(&self) -> PathBuf {
        self.root.join("secrets.json")
    }

    /// The job journal (SQLite): every job submitted, and how it ended.
    pub fn journal_path(&self) -> PathBuf {
        self.root.join("jobs.sqlite3")
    }

    /// Manifests as the original 0.0.46 writes them: `manifests/<name>.json`.
    pub fn original_manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// Where manifests are looked for, first match wins: the project's
    /// `./.cjm/plugins` and `./.cjm/manifests`, then the successor's workspace's
    /// (`<root>/.cjm/plugins` and `<root>/.cjm/manifests`, see [`Workspace`]; left
    /// out when `CJM_WORKSPACE` names no workspace, which
    /// [`Workspace::resolve`] reports), then the global `plugins/` and `manifests/`
    /// (the second of each pair is where the originals put them).
    pub fn default_search_paths(&self) -> Vec<PathBuf> {
        let local = std::env::current_dir()
            .map(|dir| dir.join(".cjm"))
            .unwrap_or_else(|_| PathBuf::from(".cjm"));
        let mut paths = vec![local.join("plugins"), local.join("manifests")];
        if let Ok(Some(workspace)) = Workspace::resolve() {
            for path in [
                workspace.data_dir().join("plugins"),
                workspace.data_dir().join("manifests"),
            ] {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        paths.extend([self.plugins_dir(), self.original_manifests_dir()]);
        paths
    }
}
