//! `cjm-ctl list` and `cjm-ctl exec` as a user runs them.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;

fn ctl(home: &TestHome, args: &[&str]) -> Output {
    Command::new(CTL)
        .args(args)
        .env("CJM_HOME", home.path())
        // The project-local ./.cjm/plugins is looked up from the working folder.
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn list_and_exec_work_from_the_command_line() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    std::fs::create_dir_all(home.path().join(".cjm/plugins")).unwrap();
    std::fs::write(
        home.path().join(".cjm/plugins/cjm-echo.json"),
        serde_json::json!({"name": "cjm-echo", "version": "9.9.9", "command": ECHO}).to_string(),
    )
    .unwrap();

    let listed = ctl(&home, &["list"]);
    assert!(listed.status.success(), "{listed:?}");
    let stdout = text(&listed.stdout);
    assert!(
        stdout.contains("cjm-echo") && stdout.contains("9.9.9"),
        "{stdout}"
    );
    assert!(stdout.contains("shadowed: cjm-echo"), "{stdout}");

    let listed = ctl(&home, &["list", "--json"]);
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(report["plugins"][0]["launch"], "native");
    assert_eq!(report["shadowed"].as_array().unwrap().len(), 1);

    let run = ctl(
        &home,
        &[
            "exec",
            "cjm-echo",
            "--args",
            r#"["hi", 2]"#,
            "--config",
            r#"{"prefix": "+"}"#,
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let result: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(result["result"], "+hihi");

    let run = ctl(
        &home,
        &[
            "exec",
            "cjm-echo",
            "--stream",
            "--kwargs",
            r#"{"count": 3}"#,
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let lines: Vec<Value> = text(&run.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["chunk"], 2);
}

#[test]
fn exec_failures_exit_non_zero_with_a_clear_message() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["exec", "nope"],
            "plugin nope not found; discovered: cjm-echo",
        ),
        (
            &["exec", "cjm-echo", "--args", "[1,"],
            "--args is not valid JSON",
        ),
        (
            &["exec", "cjm-echo", "--args", "{}"],
            "--args must be a JSON array",
        ),
        (
            &["exec", "cjm-echo", "--config", r#"{"colour": 1}"#],
            "colour: unknown key; known keys: prefix",
        ),
    ];
    for (args, expected) in cases {
        let run = ctl(&home, args);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(
            text(&run.stderr).contains(expected),
            "{args:?}: {}",
            text(&run.stderr)
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", text(&run.stdout));
    }
}

#[test]
fn logs_shows_the_end_and_follows_until_ctrl_c() {
    use std::io::{BufRead, BufReader, Write};

    let home = TestHome::new();
    std::fs::create_dir_all(home.path().join("logs")).unwrap();
    let log = home.path().join("logs/cjm-echo.log");
    std::fs::write(&log, "one\ntwo\nthree\n").unwrap();

    let shown = ctl(&home, &["logs", "cjm-echo", "-n", "2"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert_eq!(text(&shown.stdout), "two\nthree\n");
    let missing = ctl(&home, &["logs", "nope"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no log for plugin nope"));

    let mut follower = Command::new(CTL)
        .args(["logs", "cjm-echo", "-n", "1", "--follow"])
        .env("CJM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "three");
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(file, "four").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "four");
    // SAFETY: interrupting the process this test started, as Ctrl-C would.
    unsafe { libc::kill(follower.id() as libc::pid_t, libc::SIGINT) };
    let status = follower.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn stats_reports_the_schedulers_figures() {
    let home = TestHome::new();
    let shown = ctl(&home, &["stats", "--json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let stats: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(stats["memory_total_mb"].as_f64().unwrap() > 0.0, "{stats}");
    let shown = ctl(&home, &["stats"]);
    assert!(text(&shown.stdout).contains("memory_available_mb"));
}

#[test]
fn exec_lists_every_violation_of_the_config_schema() {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let run = ctl(
        &home,
        &[
            "exec",
            "cjm-wordcount",
            "--args",
            r#"["/dev/null"]"#,
            "--config",
            r#"{"chunk_bytes": 1, "chunkbytes": 4096, "speed": 2}"#,
        ],
    );
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    for expected in [
        "plugin cjm-wordcount: invalid configuration: ",
        "chunk_bytes: 1 is less than the minimum of 4096",
        r#"chunkbytes: unknown key, did you mean "chunk_bytes"?"#,
        "speed: unknown key; known keys: chunk_bytes",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // Refused before a worker started: there is no log.
    assert!(!home.path().join("logs/cjm-wordcount.log").exists());
}

#[test]
fn validate_reports_a_manifest_whose_config_schema_is_not_a_schema() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let good = ctl(&home, &["validate"]);
    assert!(good.status.success(), "{}", text(&good.stdout));
    home.write_manifest(
        "bad",
        serde_json::json!({
            "name": "bad",
            "command": ECHO,
            "config_schema": {"type": "object", "properties": {"x": {"type": "nonsense"}}}
        }),
    );
    let bad = ctl(&home, &["validate"]);
    assert!(!bad.status.success());
    let stdout = text(&bad.stdout);
    assert!(
        stdout.contains("bad.json") && stdout.contains("is not a valid config schema"),
        "{stdout}"
    );
}

#[test]
fn list_shows_every_manifest_with_its_status_and_fails_when_one_is_not_ok() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    home.native_manifest("gone", "/nonexistent/cjm-gone", &[]);
    std::fs::write(home.plugins_dir().join("broken.json"), "{\"name\": ").unwrap();

    let listed = ctl(&home, &["list"]);
    assert!(!listed.status.success(), "{listed:?}");
    let stdout = text(&listed.stdout);
    let stderr = text(&listed.stderr);
    let row = |name: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .to_owned()
    };
    assert!(
        stdout.lines().next().unwrap().contains(" STATUS "),
        "{stdout}"
    );
    assert!(row("cjm-echo").contains(" ok "), "{stdout}");
    assert!(
        row("gone").contains(" command missing: /nonexistent/cjm-gone "),
        "{stdout}"
    );
    let broken = row("broken");
    assert!(broken.contains(" broken: "), "{stdout}");
    assert!(broken.ends_with("broken.json"), "{stdout}");
    // Said once, in the table: neither a log line nor a "skipped" line repeats it.
    assert!(!stderr.contains("broken.json"), "{stderr}");

    let run = ctl(&home, &["exec", "broken"]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("cjm-ctl: plugin broken: its manifest ")
            && stderr.contains("broken.json cannot be used: not valid JSON"),
        "{stderr}"
    );
    assert!(!stderr.contains("not found"), "{stderr}");

    let listed = ctl(&home, &["list", "--json"]);
    assert!(!listed.status.success());
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let status = |name: &str| {
        report["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .chain(report["problems"].as_array().unwrap())
            .find(|entry| entry["name"] == name)
            .map(|entry| entry["status"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{name} not in {report}"))
    };
    assert_eq!(status("cjm-echo"), "ok");
    assert_eq!(status("gone"), "command missing: /nonexistent/cjm-gone");
    assert!(status("broken").starts_with("broken: "), "{report}");

    std::fs::remove_file(home.plugins_dir().join("broken.json")).unwrap();
    std::fs::remove_file(home.plugins_dir().join("gone.json")).unwrap();
    let listed = ctl(&home, &["list"]);
    assert!(listed.status.success(), "{listed:?}");
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    std::fs::write(home.plugins_dir().join("broken.json"), "[]").unwrap();
    let listed = Command::new(CTL)
        .args(["list"])
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = text(&listed.stderr);
    // Asked for, the manager's own lines are there, and plain.
    assert!(stderr.contains("broken.json"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn dash_h_is_help_everywhere_and_version_prints_the_version() {
    let home = TestHome::new();
    for (short, long) in [
        (&["-h"][..], &["--help"][..]),
        (&["list", "-h"], &["list", "--help"]),
        (&["exec", "-h"], &["exec", "--help"]),
        (&["exec", "cjm-echo", "--stream", "-h"], &["exec", "--help"]),
        (&["install-all", "-h"], &["install-all", "--help"]),
        (&["logs", "-h"], &["logs", "--help"]),
    ] {
        let short_run = ctl(&home, short);
        let long_run = ctl(&home, long);
        assert!(short_run.status.success(), "{short:?}: {short_run:?}");
        assert_eq!(text(&short_run.stdout), text(&long_run.stdout), "{short:?}");
        assert!(text(&short_run.stdout).starts_with("Usage: "), "{short:?}");
    }
    let version = ctl(&home, &["--version"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout),
        format!("cjm-ctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    let nothing = ctl(&home, &[]);
    assert!(!nothing.status.success());
    assert!(text(&nothing.stderr).contains("--help"), "{nothing:?}");
}

#[test]
fn list_says_where_each_plugin_runs_and_tls_fingerprint_is_the_hosts_kept_one() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let fingerprint = text(&ctl(&home, &["tls-fingerprint"]).stdout);
    let fingerprint = fingerprint.trim();
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    assert_eq!(
        text(&ctl(&home, &["tls-fingerprint"]).stdout).trim(),
        fingerprint
    );
    let write = |name: &str, placement: Value| {
        let mut manifest = serde_json::json!({
            "name": name,
            "version": "1.0.0",
            "command": "/nonexistent/never-run-here",
        });
        manifest
            .as_object_mut()
            .unwrap()
            .extend(placement.as_object().unwrap().clone());
        std::fs::write(
            home.plugins_dir().join(format!("{name}.json")),
            manifest.to_string(),
        )
        .unwrap();
    };
    write(
        "pod",
        serde_json::json!({"attach": {"url": "https://10.0.0.7:7443", "server_fingerprint": fingerprint}}),
    );
    write(
        "on-ray",
        serde_json::json!({"placement": {"ray": {"address": "http://head:8265"}}}),
    );
    write(
        "typo",
        serde_json::json!({"placement": {"ray": {"adress": "http://head:8265"}}}),
    );
    let listed = ctl(&home, &["list", "--json"]);
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let entry = |name: &str| {
        report["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .chain(report["problems"].as_array().unwrap())
            .find(|entry| entry["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {report}"))
            .clone()
    };
    assert_eq!(entry("cjm-echo")["where"], "local");
    assert_eq!(entry("pod")["where"], "attach https://10.0.0.7:7443");
    // An attached worker's command is never run here: it is not asked for.
    assert_eq!(entry("pod")["status"], "ok");
    assert_eq!(entry("on-ray")["where"], "ray http://head:8265");
    // The binary Ray would ship is missing.
    assert_eq!(
        entry("on-ray")["status"],
        "command missing: /nonexistent/never-run-here"
    );
    let typo = entry("typo")["status"].as_str().unwrap().to_owned();
    assert!(
        typo.contains("\"placement\": unknown field `adress`"),
        "{typo}"
    );
    let table = text(&ctl(&home, &["list"]).stdout);
    assert!(table.lines().next().unwrap().contains(" WHERE "), "{table}");
}
