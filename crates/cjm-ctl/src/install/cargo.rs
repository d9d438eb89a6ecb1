//! `cargo install --root <env>` for one entry, its output into the install log.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::config::{CargoSource, GitRef};

/// How cargo is run for every entry of one `install-all`.
#[derive(Debug, Clone)]
pub struct CargoSettings {
    /// `$CARGO` (set when running under cargo), else `cargo` from PATH.
    pub program: PathBuf,
    /// Shared by every plugin so that common dependencies compile once.
    pub target_dir: PathBuf,
    pub offline: bool,
    pub locked: bool,
}

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
    if settings.offline {
        args.push("--offline".into());
    }
    if settings.locked {
        args.push("--locked".into());
    }
    args
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
}
