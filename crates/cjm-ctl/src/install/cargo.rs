//! Building one entry, its output into the install log: for a path, `cargo build` in
//! its workspace (its target folder, its configuration, its lock file) and the binary
//! copied out; for git and crates.io, `cargo install --root <env>`.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::Message;

use super::config::{CargoSource, GitRef};
use super::stamp::PathPackage;

/// How cargo is run for every entry of one `install-all`.
#[derive(Debug, Clone)]
pub struct CargoSettings {
    /// `$CARGO` (set when running under cargo), else `cargo` from PATH.
    pub program: PathBuf,
    /// Shared by git and crates.io entries so that common dependencies compile once.
    pub target_dir: PathBuf,
    /// When set, every build uses `target_dir`; else a path entry builds in its
    /// workspace's target folder, where `cargo build` there builds, and git and
    /// crates.io entries in `target_dir`.
    pub target_dir_override: bool,
    /// The cargo profile (`release` unless asked otherwise).
    pub profile: String,
    pub offline: bool,
    pub locked: bool,
}

/// The profile `cargo install` uses when none is named.
pub const DEFAULT_PROFILE: &str = "release";

/// The arguments after `cargo`. Every value is its own argv element, attached with
/// `=` where cargo allows it, so no value can be taken for a flag.
pub fn install_args(
    source: &CargoSource,
    bin: Option<&str>,
    root: &Path,
    settings: &CargoSettings,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["install".into(), "--root".into(), root.into()];
    match source {
        CargoSource::Path(path) => {
            args.push("--path".into());
            args.push(path.into());
        }
        CargoSource::Git { url, reference } => {
            args.push(format!("--git={url}").into());
            match reference {
                Some(GitRef::Rev(rev)) => args.push(format!("--rev={rev}").into()),
                Some(GitRef::Branch(branch)) => args.push(format!("--branch={branch}").into()),
                Some(GitRef::Tag(tag)) => args.push(format!("--tag={tag}").into()),
                None => {}
            }
        }
        CargoSource::Registry { name, version } => {
            args.push(format!("--version={version}").into());
            // validate_name already refused names starting with '-'.
            args.push(name.into());
        }
    }
    if let Some(bin) = bin {
        args.push(format!("--bin={bin}").into());
    }
    if settings.profile != DEFAULT_PROFILE {
        args.push(format!("--profile={}", settings.profile).into());
    }
    common_flags(settings, &mut args);
    args
}

fn common_flags(settings: &CargoSettings, args: &mut Vec<OsString>) {
    if settings.offline {
        args.push("--offline".into());
    }
    if settings.locked {
        args.push("--locked".into());
    }
}

/// The arguments after `cargo` that build the package of `manifest` in its workspace.
pub fn build_args(manifest: &Path, bin: Option<&str>, settings: &CargoSettings) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "build".into(),
        "--manifest-path".into(),
        manifest.into(),
        format!("--profile={}", settings.profile).into(),
        // Artifacts on stdout, for the binary's path; diagnostics rendered on stderr.
        "--message-format=json-render-diagnostics".into(),
    ];
    match bin {
        Some(bin) => args.push(format!("--bin={bin}").into()),
        None => args.push("--bins".into()),
    }
    common_flags(settings, &mut args);
    args
}

/// Build the package of a path entry as `cargo build` in its workspace does (from the
/// workspace's root, so that its `.cargo/config.toml` applies, into its target
/// folder), so that what was built there already is not built again, and what the
/// plugin's author builds next reuses this build; then copy the binary to
/// `<root>/bin/`, where `cargo install` would have put it.
pub fn build_in_workspace(
    package: &PathPackage,
    package_dir: &Path,
    bin: Option<&str>,
    root: &Path,
    settings: &CargoSettings,
    log: &mut File,
    compiled: &mut dyn FnMut(&str, bool),
) -> Result<(), String> {
    let manifest = package_dir.join("Cargo.toml");
    let target_dir = if settings.target_dir_override {
        &settings.target_dir
    } else {
        &package.target_dir
    };
    let mut command = Command::new(&settings.program);
    command
        .args(build_args(&manifest, bin, settings))
        .current_dir(&package.workspace_root)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let _ = writeln!(log, "$ {command:?}");
    let stderr = log
        .try_clone()
        .map_err(|err| format!("cannot use the log: {err}"))?;
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stderr(stderr)
        .spawn()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    // Read as cargo writes it, so that each crate compiled is told as it is.
    let mut binaries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for message in Message::parse_stream(std::io::BufReader::new(stdout)).flatten() {
            if let Message::CompilerArtifact(artifact) = &message {
                compiled(&artifact.target.name, artifact.fresh);
            }
            binaries.extend(built_binary(message, &manifest));
        }
    }
    let status = child
        .wait()
        .map_err(|err| format!("cannot wait for {program}: {err}"))?;
    if !status.success() {
        return Err(format!("{program} failed ({status})"));
    }
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|err| format!("cannot create {}: {err}", bin_dir.display()))?;
    for binary in &binaries {
        let Some(name) = binary.file_name() else {
            continue;
        };
        let to = bin_dir.join(name);
        let _ = writeln!(log, "copying {} to {}", binary.display(), to.display());
        std::fs::copy(binary, &to).map_err(|err| {
            format!(
                "cannot copy {} to {}: {err}",
                binary.display(),
                to.display()
            )
        })?;
    }
    Ok(())
}

/// The executable of the package of `manifest` that `message` reports built, if any.
fn built_binary(message: Message, manifest: &Path) -> Option<PathBuf> {
    match message {
        Message::CompilerArtifact(artifact)
            if artifact.manifest_path.as_std_path() == manifest && artifact.target.is_bin() =>
        {
            artifact.executable.map(|path| path.into_std_path_buf())
        }
        _ => None,
    }
}

/// Run `cargo install`, appending its output to `log`. The error says how it ended.
pub fn install(
    source: &CargoSource,
    bin: Option<&str>,
    root: &Path,
    settings: &CargoSettings,
    log: &mut File,
) -> Result<(), String> {
    let args = install_args(source, bin, root, settings);
    let mut command = Command::new(&settings.program);
    command
        .args(&args)
        .env("CARGO_TARGET_DIR", &settings.target_dir)
        .stdin(Stdio::null());
    run_logged(&mut command, log)
}

/// Run `command` with stdout and stderr going to `log`, after a line naming it.
pub fn run_logged(command: &mut Command, log: &mut File) -> Result<(), String> {
    let _ = writeln!(log, "$ {command:?}");
    let stdout = log
        .try_clone()
        .map_err(|err| format!("cannot use the log: {err}"))?;
    let stderr = log
        .try_clone()
        .map_err(|err| format!("cannot use the log: {err}"))?;
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed ({status})"))
    }
}

/// The one binary cargo put into `<root>/bin`, or the requested one.
pub fn installed_binary(root: &Path, bin: Option<&str>) -> Result<(String, PathBuf), String> {
    let bin_dir = root.join("bin");
    if let Some(bin) = bin {
        let path = bin_dir.join(bin);
        return if path.is_file() {
            Ok((bin.to_owned(), path))
        } else {
            Err(format!(
                "cargo installed no binary {bin} in {}",
                bin_dir.display()
            ))
        };
    }
    let mut names: Vec<String> = std::fs::read_dir(&bin_dir)
        .map_err(|err| format!("cannot read {}: {err}", bin_dir.display()))?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok((one.clone(), bin_dir.join(one))),
        [] => Err(format!(
            "cargo installed no binary in {}",
            bin_dir.display()
        )),
        several => Err(format!(
            "the package installs several binaries ({}); choose one with \"bin:\"",
            several.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CargoSettings {
        CargoSettings {
            program: "cargo".into(),
            target_dir: "/t".into(),
            target_dir_override: false,
            profile: DEFAULT_PROFILE.into(),
            offline: true,
            locked: false,
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_source_becomes_plain_arguments() {
        let root = Path::new("/h/envs/e");
        let git = CargoSource::Git {
            url: "https://example.invalid/r.git".into(),
            reference: Some(GitRef::Tag("v1".into())),
        };
        assert_eq!(
            strings(install_args(&git, Some("b"), root, &settings())),
            [
                "install",
                "--root",
                "/h/envs/e",
                "--git=https://example.invalid/r.git",
                "--tag=v1",
                "--bin=b",
                "--offline"
            ]
        );
        let registry = CargoSource::Registry {
            name: "cjm-x".into(),
            version: "1.2".into(),
        };
        assert_eq!(
            strings(install_args(&registry, None, root, &settings()))[3..],
            ["--version=1.2", "cjm-x", "--offline"]
        );
        let path = CargoSource::Path("/src/p".into());
        assert_eq!(
            strings(install_args(&path, None, root, &settings()))[3..5],
            ["--path", "/src/p"]
        );
    }

    #[test]
    fn a_workspace_member_is_built_with_the_profile_asked_for() {
        let mut settings = settings();
        settings.profile = "dev".into();
        settings.locked = true;
        assert_eq!(
            strings(build_args(Path::new("/w/p/Cargo.toml"), None, &settings)),
            [
                "build",
                "--manifest-path",
                "/w/p/Cargo.toml",
                "--profile=dev",
                "--message-format=json-render-diagnostics",
                "--bins",
                "--offline",
                "--locked"
            ]
        );
        assert!(
            strings(build_args(Path::new("/p/Cargo.toml"), Some("b"), &settings))
                .contains(&"--bin=b".to_owned())
        );
        let path = CargoSource::Path("/src/p".into());
        assert!(
            strings(install_args(&path, None, Path::new("/r"), &settings))
                .contains(&"--profile=dev".to_owned())
        );
    }

    #[test]
    fn only_the_packages_own_binaries_are_taken_from_the_build_output() {
        let artifact = |manifest: &str, kind: &str, executable: Option<&str>| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": "p",
                "manifest_path": manifest,
                "target": {"name": "x", "kind": [kind], "crate_types": [kind],
                           "required_features": [], "src_path": "/x.rs",
                           "edition": "2021", "doctest": false, "test": false,
                           "doc": false},
                "profile": {"opt_level": "3", "debuginfo": 0, "debug_assertions": false,
                            "overflow_checks": false, "test": false},
                "features": [],
                "filenames": [],
                "executable": executable,
                "fresh": true
            })
            .to_string()
        };
        let stdout = [
            artifact("/w/dep/Cargo.toml", "lib", None),
            artifact("/w/p/Cargo.toml", "lib", None),
            artifact("/w/p/Cargo.toml", "bin", Some("/w/target/release/p")),
            artifact(
                "/w/other/Cargo.toml",
                "bin",
                Some("/w/target/release/other"),
            ),
            r#"{"reason":"build-finished","success":true}"#.to_owned(),
        ]
        .join("\n");
        let built: Vec<PathBuf> = Message::parse_stream(stdout.as_bytes())
            .flatten()
            .filter_map(|message| built_binary(message, Path::new("/w/p/Cargo.toml")))
            .collect();
        assert_eq!(built, [PathBuf::from("/w/target/release/p")]);
    }
}
