//! "Every error once": what `cjm-ctl` prints when it fails names each cause one time.
//! An error whose Display includes its source and that also returns it from
//! `source()` shows up as a repeated clause (`invalid configuration: X: invalid
//! configuration: X`) in the `{err:#}` chain cjm-ctl prints.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::common::*;

fn ctl(home: &TestHome, args: &[&str]) -> Output {
    Command::new(CTL)
        .args(args)
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .env_remove("CJM_CARGO_TARGET_DIR")
        .output()
        .unwrap()
}

/// The clauses of `line` (split on ": ") that appear more than once.
fn repeated_clauses(line: &str) -> Vec<String> {
    let clauses: Vec<&str> = line.split(": ").map(str::trim).collect();
    let mut repeated: Vec<String> = clauses
        .iter()
        .enumerate()
        .filter(|(index, clause)| !clause.is_empty() && clauses[..*index].contains(clause))
        .map(|(_, clause)| (*clause).to_owned())
        .collect();
    repeated.dedup();
    repeated
}

#[test]
fn the_clause_splitter_finds_what_it_looks_for() {
    assert_eq!(
        repeated_clauses("cjm-ctl: invalid configuration: x: invalid configuration: x"),
        ["invalid configuration", "x"]
    );
    assert!(repeated_clauses("cjm-ctl: plugin a: cannot start /x: No such file").is_empty());
}

#[test]
fn every_failure_of_the_command_line_names_each_cause_once() {
    let home = TestHome::new();
    home.installed_manifest("cjm-echo", ECHO, &[]);
    home.native_manifest("gone", "/nonexistent/cjm-gone", &[]);
    home.native_manifest("dies", "/bin/false", &[]);
    std::fs::write(home.plugins_dir().join("broken.json"), "{\"name\": 3}").unwrap();
    std::fs::write(home.path().join("malformed.yaml"), "plugins: [").unwrap();
    std::fs::write(
        home.path().join("bad-entries.yaml"),
        "plugins:\n  - {name: 'a b', cargo: {path: nowhere}}\n  - {name: c, carg: 1}\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join("one.yaml"),
        format!("plugins:\n  - {{name: cjm-echo, executable: {ECHO}}}\n"),
    )
    .unwrap();
    let unreadable = home.path().join("unreadable.yaml");
    std::fs::write(&unreadable, "plugins:").unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    let not_a_home = home.path().join("file-not-folder");
    std::fs::write(&not_a_home, "").unwrap();

    let cases: Vec<Vec<&str>> = vec![
        vec!["install-all", "--config", "missing.yaml"],
        vec!["install-all", "--config", "malformed.yaml"],
        vec!["install-all", "--config", "bad-entries.yaml"],
        vec!["install-all", "--config", "one.yaml", "--only", "x"],
        vec!["validate", "--config", "missing.yaml"],
        vec!["validate", "--config", "malformed.yaml"],
        vec!["exec", "nope"],
        vec!["exec", "broken"],
        vec!["exec", "gone"],
        vec!["exec", "dies"],
        vec!["exec", "cjm-echo", "--config", r#"{"colour": 1}"#],
        vec!["exec", "cjm-echo", "--config", r#"{"prefix": 7}"#],
        vec!["exec", "cjm-echo", "--config", "[1]"],
        vec!["exec", "cjm-echo", "--args", "[1,"],
        vec!["exec", "cjm-echo", "--args", "{}"],
        vec!["exec", "cjm-echo", "--kwargs", "nope"],
        vec!["exec", "cjm-echo", "--args", r#"[[1], "x"]"#],
        vec![
            "exec",
            "cjm-echo",
            "--stream",
            "--kwargs",
            r#"{"count": "many"}"#,
        ],
        vec!["logs", "nope"],
        vec!["logs", "../escape"],
        vec!["remove", "nope"],
        vec!["remove", "../escape"],
        vec!["frobnicate"],
    ];
    // Root reads any file: the unreadable file is only a failure for other users.
    let mut cases = cases;
    if std::fs::read(&unreadable).is_err() {
        cases.push(vec!["install-all", "--config", "unreadable.yaml"]);
    }
    let mut repeats = Vec::new();
    for args in &cases {
        let run = ctl(&home, args);
        assert!(!run.status.success(), "{args:?} succeeded: {run:?}");
        // validate reports on stdout, everything else on stderr.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(!said.trim().is_empty(), "{args:?}: nothing said");
        for line in said.lines() {
            let repeated = repeated_clauses(line);
            if !repeated.is_empty() {
                repeats.push(format!("{args:?}\n    {line}\n    repeats {repeated:?}"));
            }
        }
    }
    // A home that cannot be one.
    let run = Command::new(CTL)
        .args(["remove", "x"])
        .env("CJM_HOME", &not_a_home)
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&run.stderr).lines() {
        let repeated = repeated_clauses(line);
        if !repeated.is_empty() {
            repeats.push(format!(
                "CJM_HOME=file\n    {line}\n    repeats {repeated:?}"
            ));
        }
    }
    assert!(repeats.is_empty(), "{}", repeats.join("\n"));
}
