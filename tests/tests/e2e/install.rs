//! `cjm-ctl install-all`, `remove` and `validate` as a user runs them: real cargo
//! builds of the example plugins into a temporary CJM_HOME, then the plugins run.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::*;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// cjm-ctl with CJM_HOME in the test's home. The example plugins are members of this
/// workspace, so cjm-ctl builds them in its target folder: what `cargo test` (or
/// `cargo xtask demo`) compiled there is not compiled again. (Cargo releases that
/// folder's lock once the tests are built, so this nested build does not wait.)
fn ctl_command(home: &TestHome, args: &[&str]) -> Command {
    let mut command = Command::new(CTL);
    command
        .args(args)
        .env("CJM_HOME", home.path())
        .env_remove("CJM_CARGO_TARGET_DIR")
        .current_dir(home.path())
        .env_remove("RUST_LOG");
    command
}

fn ctl(home: &TestHome, args: &[&str]) -> Output {
    ctl_command(home, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An executable script (a test fixture standing in for a plugin binary or cargo).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn write_yaml(home: &TestHome, yaml: &str) -> String {
    let path = home.path().join("plugins.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

/// The files of the plugins folder, hidden ones included.
fn manifest_files(home: &TestHome) -> Vec<String> {
    let mut names: Vec<String> = entries(&home.plugins_dir())
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn install_all_builds_the_examples_then_they_list_run_skip_rebuild_and_go() {
    let home = TestHome::new();
    let config = workspace_root().join("plugins.yaml");
    let config = config.to_str().unwrap();
    // The dev profile, as `cargo test` builds: dependencies compiled for the tests
    // with the same features are used as they are.
    let install = [
        "install-all",
        "--config",
        config,
        "--offline",
        "--locked",
        "--cargo-profile",
        "dev",
    ];

    let first = ctl(&home, &install);
    let stderr = text(&first.stderr);
    assert!(first.status.success(), "{stderr}\n{}", text(&first.stdout));
    // Which profile it builds with, and what the build did.
    assert!(
        stderr.contains("[1/3] cjm-echo: building with the dev profile"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[1/3] cjm-echo: ") && stderr.contains(" crates compiled in "),
        "{stderr}"
    );
    assert!(stderr.contains("[2/3] cjm-wordcount: building"), "{stderr}");
    assert!(stderr.contains("[3/3] cjm-sysmon: building"), "{stderr}");
    let summary = text(&first.stdout);
    assert_eq!(summary.matches("installed").count(), 3, "{summary}");
    assert_eq!(
        manifest_files(&home),
        ["cjm-echo.json", "cjm-sysmon.json", "cjm-wordcount.json"]
    );
    let echo_binary = home.path().join("envs/cjm-echo/bin/cjm-echo");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join("cjm-echo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["command"], echo_binary.to_str().unwrap());
    assert_eq!(manifest["env_name"], "cjm-echo");
    let log_path = home.path().join("logs/install-cjm-echo.log");
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&log_path), 0o600, "an install log is its user's alone");
    assert_eq!(mode(log_path.parent().unwrap()), 0o700);
    let log = std::fs::read_to_string(&log_path).unwrap();
    // Built in the workspace (nothing in the home's own cargo cache), and not with a
    // cargo metadata that wanted other platforms' packages.
    assert!(log.contains("--filter-platform"), "{log}");
    assert!(log.contains("/debug/cjm-echo to "), "{log}");
    assert!(!home.path().join("cache/cargo-target").exists());

    let listed = ctl(&home, &["list", "--json"]);
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|plugin| plugin["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cjm-echo", "cjm-sysmon", "cjm-wordcount"]);

    let run = ctl(&home, &["exec", "cjm-echo", "--args", r#"["hi", 2]"#]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let result: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(result["result"], "hihi");
    let input = home.path().join("input.txt");
    std::fs::write(&input, "one two three\nfour\n").unwrap();
    let args = serde_json::json!([input]).to_string();
    let run = ctl(&home, &["exec", "cjm-wordcount", "--args", &args]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains('4'), "{}", text(&run.stdout));

    let validated = ctl(&home, &["validate", "--config", config]);
    assert!(validated.status.success(), "{}", text(&validated.stdout));

    // Unchanged: nothing is built or rewritten, the last build's log included.
    let built_at = std::fs::metadata(&echo_binary).unwrap().modified().unwrap();
    let again = ctl(&home, &install);
    assert_eq!(std::fs::read_to_string(&log_path).unwrap(), log);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        !text(&again.stderr).contains("building"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(text(&again.stdout).matches("unchanged").count(), 3);

    // --force: a fresh environment, even though nothing changed.
    let forced = ctl(
        &home,
        &[&install[..], &["--force", "--only", "cjm-echo"]].concat(),
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(text(&forced.stderr).contains("[1/1] cjm-echo: building"));
    assert!(!text(&forced.stdout).contains("cjm-wordcount"));
    let rebuilt_at = std::fs::metadata(&echo_binary).unwrap().modified().unwrap();
    assert!(rebuilt_at > built_at);
    assert!(!home.path().join("envs/.cjm-echo.staging").exists());
    assert!(!home.path().join("envs/.cjm-echo.old").exists());

    let removed = ctl(&home, &["remove", "cjm-echo"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(!home.path().join("envs/cjm-echo").exists());
    assert_eq!(
        manifest_files(&home),
        ["cjm-sysmon.json", "cjm-wordcount.json"]
    );
    let again = ctl(&home, &["remove", "cjm-echo"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("plugin cjm-echo is not installed"));
}

#[test]
fn an_invalid_file_reports_every_bad_entry_and_installs_nothing() {
    let home = TestHome::new();
    let config = write_yaml(
        &home,
        &format!(
            r#"
plugins:
  - name: good
    executable: {ECHO}
  - name: evil
    env_name: "x; rm -rf ~"
    cargo: {{path: {root}/plugins/cjm-echo}}
  - name: "../escape"
    executable: {ECHO}
  - name: both
    executable: {ECHO}
    cargo: {{crate: cjm-echo, version: "0.1"}}
  - name: typo
    carg: {{path: somewhere}}
"#,
            root = workspace_root().display()
        ),
    );
    let run = ctl(&home, &["install-all", "--config", &config]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    for expected in [
        "has 4 problems",
        "plugin evil: env_name: invalid name \"x; rm -rf ~\"",
        "plugin ../escape: name: invalid name",
        "plugin both: needs exactly one source",
        "plugin typo: unknown field `carg`",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("plugin good"), "{stderr}");
    assert!(!home.plugins_dir().exists());
    assert!(!home.path().join("envs").exists());

    let validated = ctl(&home, &["validate", "--config", &config]);
    assert!(!validated.status.success());
    assert!(text(&validated.stdout).contains("plugin evil: env_name"));
}

#[test]
fn a_failing_plugin_does_not_stop_the_others_and_the_summary_says_why() {
    let home = TestHome::new();
    let broken = script(
        home.path(),
        "broken-plugin",
        "echo 'about to print the manifest' >&2\nprintf '{\"name\": \"broken\", \"vers'\nexit 3",
    );
    let config = write_yaml(
        &home,
        &format!(
            r#"
plugins:
  - name: whisper
    env_name: whisper
    python_version: "0.0"
    package: cjm-transcription-plugin-whisper
    interface_libs: [cjm-transcription-plugin-system]
  - name: broken
    executable: {broken}
  - name: cjm-echo
    executable: {ECHO}
"#,
            broken = broken.display()
        ),
    );
    let run = ctl(&home, &["install-all", "--config", &config]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    let stdout = text(&run.stdout);
    assert!(
        stderr.contains(
            "whisper failed while creating environment: python_version 0.0 asks for \
             python0.0, which is not on PATH"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken failed while reading manifest")
            && stderr.contains("exit status: 3"),
        "{stderr}"
    );
    assert!(stderr.contains("about to print the manifest"), "{stderr}");
    assert!(stdout.contains("failed (reading manifest)"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("cjm-echo ") && line.contains(" installed ")),
        "{stdout}"
    );
    assert_eq!(manifest_files(&home), ["cjm-echo.json"]);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join("cjm-echo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["command"],
        std::fs::canonicalize(ECHO).unwrap().to_str().unwrap()
    );
}

/// Start install-all in its own process group, wait for `step` on stderr, kill the
/// group (cjm-ctl and whatever it started).
fn kill_during(home: &TestHome, config: &str, step: &str, cargo: Option<&Path>) {
    let mut command = ctl_command(home, &["install-all", "--config", config]);
    if let Some(cargo) = cargo {
        command.env("CARGO", cargo);
    }
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let reached = line.contains(step);
        seen.push(line);
        if reached {
            break;
        }
    }
    assert!(seen.last().unwrap().contains(step), "{seen:?}");
    // SAFETY: killing the process group this test started.
    unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
}

#[test]
fn an_interrupted_install_leaves_no_partial_manifest() {
    let home = TestHome::new();
    // A plugin that has been installed before: its manifest must survive.
    let previous = serde_json::json!({"name": "slow", "version": "1.0.0", "command": ECHO});
    home.write_manifest("slow", previous.clone());
    let slow = script(home.path(), "slow-plugin", "exec sleep 30");
    let config = write_yaml(
        &home,
        &format!(
            "plugins:\n  - name: slow\n    executable: {}\n",
            slow.display()
        ),
    );
    kill_during(&home, &config, "slow: reading manifest", None);
    assert_eq!(manifest_files(&home), ["slow.json"]);
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join("slow.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept, previous);

    // Killed while cargo builds: no manifest, no environment.
    let package = home.path().join("pkg");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("Cargo.toml"), "[package]\nname = \"pkg\"\n").unwrap();
    let cargo = script(
        home.path(),
        "slow-cargo",
        "case \"$1\" in metadata|-vV) exit 1;; esac\nexec sleep 30",
    );
    let config = write_yaml(&home, "plugins:\n  - name: built\n    cargo: {path: pkg}\n");
    kill_during(&home, &config, "built: building", Some(&cargo));
    assert_eq!(manifest_files(&home), ["slow.json"]);
    assert!(!home.path().join("envs/built").exists());
}

#[test]
fn a_conda_entry_without_conda_or_micromamba_fails_with_a_reason() {
    let home = TestHome::new();
    std::fs::write(
        home.path().join("env.yml"),
        "name: whisper\ndependencies: [python]\n",
    )
    .unwrap();
    let config = write_yaml(
        &home,
        r#"
plugins:
  - name: whisper
    env_file: env.yml
    package: cjm-transcription-plugin-whisper
"#,
    );
    // A PATH that holds neither conda nor micromamba (nor anything else of note).
    let empty_bin = home.path().join("bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let run = ctl_command(&home, &["install-all", "--config", &config])
        .env("PATH", &empty_bin)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let output = format!("{}{}", text(&run.stdout), text(&run.stderr));
    assert!(
        output.contains("needs conda or micromamba, and neither is on PATH"),
        "{output}"
    );
    assert!(manifest_files(&home).is_empty(), "{output}");
    assert!(!home.path().join("envs/whisper").exists());
}
