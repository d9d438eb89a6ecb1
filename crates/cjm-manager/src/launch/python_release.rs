//! Which original a Python plugin's environment runs: `cjm_plugin_system` (0.0.20 to
//! 0.0.46) or its successor `cjm_substrate` (0.0.74 on, where a plugin is a
//! "capability"). They differ in the worker module the host starts, how it takes its
//! socket, and the names of the variables it reads.

use cjm_metadata::Manifest;
use serde_json::Value;

/// The original's universal worker module, which hosts a Python plugin class.
pub(crate) const PLUGIN_SYSTEM_WORKER_MODULE: &str = "cjm_plugin_system.core.worker";

/// The successor's universal worker module (same routes, a few more fields).
pub(crate) const SUBSTRATE_WORKER_MODULE: &str = "cjm_substrate.core.worker";

/// The manifest field where `cjm-ctl install-all` records the version of the
/// successor installed in a Python plugin's environment.
pub(crate) const SUBSTRATE_VERSION_FIELD: &str = "cjm_substrate_version";

/// The manifest field where `cjm-ctl install-all` records the version of the
/// original installed in a Python plugin's environment.
pub(crate) const ORIGINAL_VERSION_FIELD: &str = "cjm_plugin_system_version";

/// The distribution names, as `importlib.metadata` knows them.
pub(crate) const SUBSTRATE_DIST: &str = "cjm_substrate";
pub(crate) const PLUGIN_SYSTEM_DIST: &str = "cjm_plugin_system";

/// The release line of a Python plugin's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PythonRelease {
    /// `cjm_plugin_system`, at this version when known.
    PluginSystem(Option<String>),
    /// `cjm_substrate`, at this version when known.
    Substrate(Option<String>),
}

impl PythonRelease {
    /// The module to run with `python -m`.
    pub(crate) fn worker_module(&self) -> &'static str {
        match self {
            PythonRelease::PluginSystem(_) => PLUGIN_SYSTEM_WORKER_MODULE,
            PythonRelease::Substrate(_) => SUBSTRATE_WORKER_MODULE,
        }
    }

    /// What the installed versions of an environment make of it: the successor
    /// only where it is there without the original. An environment with both
    /// (a plugin of the original whose dependencies pulled in the successor) keeps
    /// being run as the original, as it was before the successor was known.
    pub(crate) fn of_installed(installed: &Installed) -> Option<PythonRelease> {
        match (&installed.plugin_system, &installed.substrate) {
            (Some(version), _) => Some(PythonRelease::PluginSystem(Some(version.clone()))),
            (None, Some(version)) => Some(PythonRelease::Substrate(Some(version.clone()))),
            (None, None) => None,
        }
    }
}

/// The versions of both lines an environment has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    pub(crate) plugin_system: Option<String>,
    pub(crate) substrate: Option<String>,
}

/// Python that prints `<dist> <version>` for each of the two that is installed.
pub(crate) const VERSIONS_QUERY: &str = r#"
import importlib.metadata as m
for d in ("cjm_plugin_system", "cjm_substrate"):
    try:
        print(d, m.version(d))
    except m.PackageNotFoundError:
        pass
"#;

impl Installed {
    /// Read [`VERSIONS_QUERY`]'s output.
    pub(crate) fn parse(output: &str) -> Installed {
        let mut installed = Installed::default();
        for line in output.lines() {
            match line.trim().split_once(' ') {
                Some((PLUGIN_SYSTEM_DIST, version)) => {
                    installed.plugin_system = Some(version.trim().to_owned())
                }
                Some((SUBSTRATE_DIST, version)) => {
                    installed.substrate = Some(version.trim().to_owned())
                }
                _ => {}
            }
        }
        installed
    }
}

/// What the manifest itself says of its environment, if anything: the version our
/// `install-all` recorded, or (a manifest the successor's installer wrote) the
/// `cjm-substrate` among the distributions its `install.resolved` lists.
pub(crate) fn recorded(manifest: &Manifest) -> Option<PythonRelease> {
    let field = |name: &str| {
        manifest
            .extra
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(version) = field(SUBSTRATE_VERSION_FIELD) {
        return Some(PythonRelease::Substrate(Some(version)));
    }
    if let Some(version) = field(ORIGINAL_VERSION_FIELD) {
        return Some(PythonRelease::PluginSystem(Some(version)));
    }
    let resolved = manifest.extra.get("resolved").and_then(Value::as_object)?;
    resolved.iter().find_map(|(dist, version)| {
        (normalized(dist) == SUBSTRATE_DIST)
            .then(|| PythonRelease::Substrate(version.as_str().map(str::to_owned)))
    })
}

/// A distribution name as pip compares them (`cjm-substrate` = `cjm_substrate`).
pub(crate) fn normalized(dist: &str) -> String {
    dist.trim().to_ascii_lowercase().replace(['-', '.'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        Manifest::from_json(&format!(
            r#"{{"name": "p", "version": "1", "python_path": "/x/python",
                "module": "m", "class": "C"{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_manifest_says_its_release_by_our_record_or_the_successors_resolved_set() {
        assert_eq!(recorded(&manifest("")), None);
        assert_eq!(
            recorded(&manifest(r#", "cjm_substrate_version": "0.0.74""#)),
            Some(PythonRelease::Substrate(Some("0.0.74".into())))
        );
        assert_eq!(
            recorded(&manifest(r#", "cjm_plugin_system_version": "0.0.46""#)),
            Some(PythonRelease::PluginSystem(Some("0.0.46".into())))
        );
        // The successor's installer: install.resolved, every cjm-* dist of the env.
        let theirs = Manifest::from_json(
            r#"{"format_version": "2.0",
                "install": {"python_path": "/e/bin/python", "installer_version": "cjm-ctl 0.0.74",
                            "mode": "distribution",
                            "resolved": {"cjm-capability-x": "0.1.0", "cjm-substrate": "0.0.74"}},
                "code": {"name": "x", "version": "0.1.0", "module": "x.capability", "class": "X"}}"#,
        )
        .unwrap();
        assert_eq!(
            recorded(&theirs),
            Some(PythonRelease::Substrate(Some("0.0.74".into())))
        );
        assert_eq!(
            recorded(&theirs).unwrap().worker_module(),
            "cjm_substrate.core.worker"
        );
        // 0.0.46's installer writes no resolved set.
        let original = Manifest::from_json(
            r#"{"format_version": "2.0",
                "install": {"python_path": "/e/bin/python", "installer_version": "cjm-ctl 0.0.46"},
                "code": {"name": "x", "version": "0.1.0", "module": "x.plugin", "class": "X"}}"#,
        )
        .unwrap();
        assert_eq!(recorded(&original), None);
    }

    /// The query is run by every Python of a plugin whose manifest records nothing.
    #[test]
    fn the_versions_query_is_python_that_runs() {
        let Ok(out) = std::process::Command::new("python3")
            .args(["-c", VERSIONS_QUERY])
            .output()
        else {
            return; // No Python here: the e2e tests run it against the originals.
        };
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn installed_versions_prefer_the_original_when_both_are_there() {
        let both = Installed::parse("cjm_plugin_system 0.0.46\ncjm_substrate 0.0.74\n");
        assert_eq!(
            PythonRelease::of_installed(&both),
            Some(PythonRelease::PluginSystem(Some("0.0.46".into())))
        );
        let successor = Installed::parse("cjm_substrate 0.0.74\n");
        assert_eq!(
            PythonRelease::of_installed(&successor),
            Some(PythonRelease::Substrate(Some("0.0.74".into())))
        );
        assert_eq!(PythonRelease::of_installed(&Installed::parse("")), None);
    }
}
