//! `cjm-ctl new`: what it writes builds, installs and runs with no edits.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;
use crate::python_env;

fn workspace_root() -> PathBuf {
    python_env::workspace_root()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ctl(home: &TestHome, args: &[&str]) -> Command {
    let mut command = Command::new(CTL);
    command
        .args(args)
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .env_remove("CJM_CARGO_TARGET_DIR");
    command
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

fn exec_result(home: &TestHome, name: &str) -> Value {
    let output = run(&mut ctl(home, &["exec", name, "--args", r#"["world"]"#]));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn streamed(home: &TestHome, name: &str) -> Vec<Value> {
    let args = [
        "exec",
        name,
        "--stream",
        "--args",
        r#"["world"]"#,
        "--config",
        r#"{"greeting": "hi", "repeat": 2}"#,
    ];
    let output = run(&mut ctl(home, &args));
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn install_log(home: &TestHome, name: &str) -> String {
    std::fs::read_to_string(home.path().join(format!("logs/install-{name}.log")))
        .unwrap_or_default()
}

#[test]
fn a_new_native_plugin_builds_tests_installs_and_runs_as_written() {
    let home = TestHome::new();
    // Under the workspace, so that cargo finds its .cargo/config.toml, and built into
    // its target folder: the scaffold's lock file is the workspace's, so what the
    // workspace's own builds compiled is not compiled again.
    let parent = workspace_root().join("target/e2e-new");
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::tempdir_in(&parent).unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let target = workspace_root().join("target");

    let wrote = run(&mut ctl(&home, &["new", "my-plugin", "--dir", dir_arg]));
    assert!(text(&wrote.stdout).contains("wrote plugin my-plugin"));
    let crate_dir = dir.path().join("my-plugin");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    assert!(
        manifest.contains(&format!(
            "cjm-worker = {{ path = \"{}\" }}",
            workspace_root().join("crates/cjm-worker").display()
        )),
        "{manifest}"
    );

    // Its own tests pass, the defaults-against-schema one among them.
    let tested = run(Command::new(env!("CARGO"))
        .args(["test", "--offline"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target));
    let tested = text(&tested.stdout);
    assert!(
        tested.contains("defaults_validate_against_the_schema ... ok"),
        "{tested}"
    );

    let config = dir.path().join("plugins.yaml");
    let installed = ctl(
        &home,
        &[
            "install-all",
            "--config",
            config.to_str().unwrap(),
            "--offline",
            "--cargo-profile",
            "dev",
        ],
    )
    .env("CJM_CARGO_TARGET_DIR", &target)
    .output()
    .unwrap();
    assert!(
        installed.status.success(),
        "{}\n{}",
        text(&installed.stderr),
        install_log(&home, "my-plugin")
    );
    assert_eq!(
        exec_result(&home, "my-plugin"),
        serde_json::json!({"text": "hello, world"})
    );
    let chunks = streamed(&home, "my-plugin");
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(chunks[1], serde_json::json!({"n": 1, "text": "hi, world"}));

    // Once there, a name is not written over; a bad one is refused with its reason.
    let again = ctl(&home, &["new", "my-plugin", "--dir", dir_arg])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("my-plugin already exists"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn bad_names_and_existing_folders_are_refused_before_anything_is_written() {
    let home = TestHome::new();
    let dir = home.path().join("plugins-src");
    let dir_arg = dir.to_str().unwrap();
    for (name, reason) in [
        (
            "9lives",
            "invalid plugin name \"9lives\": a new plugin's name starts with an ASCII letter",
        ),
        // One message states the whole rule, whatever part of it a name breaks.
        (
            "a.b",
            "invalid plugin name \"a.b\": a new plugin's name starts with an ASCII letter and holds only ASCII letters, digits, '-' and '_'",
        ),
        (
            "a b",
            "invalid plugin name \"a b\": a new plugin's name starts with an ASCII letter and holds only ASCII letters, digits, '-' and '_'",
        ),
        ("../up", "invalid plugin name \"../up\""),
        ("test", "invalid plugin name \"test\": it is reserved"),
    ] {
        let refused = ctl(&home, &["new", name, "--dir", dir_arg])
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{name}");
        assert!(
            text(&refused.stderr).contains(reason),
            "{name}: {}",
            text(&refused.stderr)
        );
    }
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    let refused = ctl(&home, &["new", "taken", "--dir", dir_arg])
        .output()
        .unwrap();
    assert!(text(&refused.stderr).contains("taken already exists"));
    let refused = ctl(
        &home,
        &["new", "p", "--dir", dir_arg, "--cjm-path", "/nowhere"],
    )
    .output()
    .unwrap();
    assert!(
        text(&refused.stderr).contains("--cjm-path /nowhere: not a cjm-plugin-system checkout"),
        "{}",
        text(&refused.stderr)
    );
    let mut left: Vec<_> = entries(&dir);
    left.sort();
    assert_eq!(left, [dir.join("taken")], "nothing else written");
}

/// A folder whose `python3` is the interop tests' Python, first on PATH.
fn path_with_test_python(home: &TestHome) -> std::ffi::OsString {
    let bin = home.path().join("python-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(python_env::python(), bin.join("python3")).unwrap();
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

#[test]
fn a_new_python_plugin_installs_and_runs_as_written() {
    let home = TestHome::new();
    let dir = home.path().join("src");
    run(&mut ctl(
        &home,
        &["new", "my-py", "--python", "--dir", dir.to_str().unwrap()],
    ));
    assert!(dir.join("my-py/my_py/plugin.py").is_file());
    let config = dir.join("plugins.yaml");
    let installed = ctl(
        &home,
        &["install-all", "--config", config.to_str().unwrap()],
    )
    .env("PATH", path_with_test_python(&home))
    .output()
    .unwrap();
    assert!(
        installed.status.success(),
        "{}\n{}",
        text(&installed.stderr),
        install_log(&home, "my-py")
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join("my-py.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["module"], "my_py.plugin");
    assert_eq!(manifest["class"], "MyPyPlugin");
    assert_eq!(
        exec_result(&home, "my-py"),
        serde_json::json!({"text": "hello, world"})
    );
    let chunks = streamed(&home, "my-py");
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(chunks[1], serde_json::json!({"n": 1, "text": "hi, world"}));
}
