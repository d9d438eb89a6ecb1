//! The successor's workspace (cjm-substrate's `cjm-workspace.yaml`): a folder marked
//! as the root of a pipeline's data, whose `.cjm/` holds what its host writes,
//! manifests included. Resolved as the successor resolves it: `CJM_WORKSPACE` when
//! set (it must name a marked folder), else the first folder up from the current
//! one that holds the marker.

use std::path::{Path, PathBuf};

/// The file that marks a folder as a workspace root.
pub const WORKSPACE_MARKER: &str = "cjm-workspace.yaml";

/// The variable naming a workspace root.
pub const WORKSPACE_ENV: &str = "CJM_WORKSPACE";

/// `CJM_WORKSPACE` names a folder without the marker. The successor refuses such an
/// explicit reference rather than falling back to the current folder, and so does
/// this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{WORKSPACE_ENV}={} has no {WORKSPACE_MARKER}: not a workspace root", given.display())]
pub struct WorkspaceError {
    /// The folder as given.
    pub given: PathBuf,
}

/// A workspace root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace of this process: `CJM_WORKSPACE`, else the walk up from the
    /// current folder; `None` when neither finds one.
    pub fn resolve() -> Result<Option<Workspace>, WorkspaceError> {
        let named = std::env::var_os(WORKSPACE_ENV).filter(|value| !value.is_empty());
        let cwd = std::env::current_dir().ok();
        Self::resolve_from(named.as_deref().map(Path::new), cwd.as_deref())
    }

    /// As [`resolve`](Self::resolve), with the variable's value and the starting
    /// folder given.
    pub fn resolve_from(
        named: Option<&Path>,
        cwd: Option<&Path>,
    ) -> Result<Option<Workspace>, WorkspaceError> {
        if let Some(named) = named {
            let root = std::path::absolute(named).unwrap_or_else(|_| named.to_path_buf());
            if !root.join(WORKSPACE_MARKER).is_file() {
                return Err(WorkspaceError {
                    given: named.to_path_buf(),
                });
            }
            return Ok(Some(Workspace { root }));
        }
        Ok(cwd.and_then(|start| {
            start
                .ancestors()
                .find(|dir| dir.join(WORKSPACE_MARKER).is_file())
                .map(|root| Workspace {
                    root: root.to_path_buf(),
                })
        }))
    }

    /// The folder holding the marker.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/.cjm`: the successor's data folder for this workspace.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join(".cjm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_wins_and_must_name_a_marked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let marked = dir.path().join("ws");
        let inner = marked.join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(marked.join(WORKSPACE_MARKER), "name: ws\n").unwrap();
        let unmarked = dir.path().join("plain");
        std::fs::create_dir_all(&unmarked).unwrap();

        let found = Workspace::resolve_from(None, Some(&inner))
            .unwrap()
            .unwrap();
        assert_eq!(found.root(), marked);
        assert_eq!(found.data_dir(), marked.join(".cjm"));
        assert_eq!(
            Workspace::resolve_from(None, Some(&unmarked)).unwrap(),
            None
        );

        let named = Workspace::resolve_from(Some(&marked), Some(&unmarked))
            .unwrap()
            .unwrap();
        assert_eq!(named.root(), marked);
        let err = Workspace::resolve_from(Some(&unmarked), Some(&inner)).unwrap_err();
        assert_eq!(err.given, unmarked);
        assert!(
            err.to_string().contains("has no cjm-workspace.yaml"),
            "{err}"
        );
    }
}
