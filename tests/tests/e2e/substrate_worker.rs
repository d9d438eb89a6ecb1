//! Our workers under the original's successor, cjm-substrate 0.0.74 from PyPI: its
//! own `CapabilityManager` loads our cjm-wordcount from the v2 manifest `cjm-ctl
//! export-manifest --for-substrate` writes, without `CJM_SUBSTRATE_MISMATCH`, and
//! calls every route it has (tests/fixtures/substrate/substrate_runs_our_worker.py).
//! A release our workers do not speak is refused: by the export, by the worker, and
//! so by that host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cjm_interface::substrate::SUBSTRATE_VERSION_ENV;
use serde_json::Value;

use crate::common::*;
use crate::python_env::{self, SUBSTRATE};

const NAME: &str = "cjm-wordcount";

/// `cjm-ctl export-manifest cjm-wordcount` with `how` into `<home>/<folder>/`.
fn export(home: &TestHome, folder: &str, how: &[&str]) -> (Output, PathBuf) {
    home.installed_manifest(NAME, WORDCOUNT, &[]);
    let path = home.path().join(folder).join(format!("{NAME}.json"));
    let output = Command::new(CTL)
        .args(["export-manifest", NAME])
        .args(how)
        .arg("--out")
        .arg(&path)
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    (output, path)
}

/// Run the successor's host on the manifests in `manifests`; its JSON report.
fn run_successor(home: &TestHome, manifests: &Path, small: &Path, big: &Path) -> Value {
    let output = Command::new(python_env::python_substrate())
        .arg(python_env::fixture_dir_substrate().join("substrate_runs_our_worker.py"))
        .arg(manifests)
        .arg(NAME)
        .arg(small)
        .arg(big)
        // Never the escape hatch: the host must accept our worker as it is.
        .env_remove("CJM_SUBSTRATE_MISMATCH")
        .env_remove("CJM_WORKSPACE")
        // Its journal, diagnostics and stores go under this home.
        .env("HOME", home.path())
        .env("CJM_DATA_DIR", home.path().join("substrate-data"))
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed: {stdout}\n{}",
        SUBSTRATE.requirement,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("{err}: {stdout}"))
}

fn small_input(home: &TestHome) -> PathBuf {
    let small = home.path().join("small.txt");
    std::fs::write(&small, "a b c\n").unwrap();
    small
}

fn inputs(home: &TestHome) -> (PathBuf, PathBuf) {
    let small = small_input(home);
    let big = home.path().join("big.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    for _ in 0..2_000_000 {
        file.write_all(b"the quick brown fox jumps\n").unwrap();
    }
    drop(file);
    (small, big)
}

#[test]
fn the_substrate_manager_runs_our_worker_from_an_exported_v2_manifest() {
    let home = TestHome::new();
    let (exported, path) = export(&home, "manifests-074", &["--for-substrate", "0.0.74"]);
    assert!(exported.status.success(), "{exported:?}");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], "2.0");
    assert_eq!(manifest["code"]["name"], NAME);
    assert_eq!(
        manifest["install"]["env_vars"][SUBSTRATE_VERSION_ENV],
        "0.0.74"
    );
    let (small, big) = inputs(&home);
    let report = run_successor(&home, path.parent().unwrap(), &small, &big);

    assert_eq!(report["host_version"], "0.0.74", "{report}");
    assert_eq!(report["mismatch_variable"], Value::Null, "{report}");
    assert_eq!(report["loaded"], true, "{report}");
    assert_eq!(report["health"]["substrate_version"], "0.0.74", "{report}");
    let program = report["health"]["python_executable"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        std::fs::canonicalize(program).ok(),
        std::fs::canonicalize(WORDCOUNT).ok(),
        "{report}"
    );
    assert_eq!(report["alive"], true, "{report}");
    // Plain and streamed, as its proxy decodes them.
    assert_eq!(report["plain"]["words"], 3, "{report}");
    let chunks = report["stream"]["chunks"].as_array().unwrap();
    assert_eq!(chunks.last().unwrap()["words"], 3, "{report}");
    assert!(report["stream"].get("raised").is_none(), "{report}");
    // Typed errors: a plain call's and a stream's, in its own exception classes.
    assert_eq!(
        report["typed_error"]["type"], "CapabilityInputError",
        "{report}"
    );
    assert_eq!(
        report["stream_missing"]["raised"], "CapabilityInputError",
        "{report}"
    );
    // The task channel, with the worker's own account journalled by that host for
    // the job its envelope named, the successor's `io` counters in it.
    assert_eq!(report["counted"]["words"], 3, "{report}");
    let accounts = report["journal_accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{report}");
    assert_eq!(accounts[0]["event_type"], "task_account", "{report}");
    assert_eq!(accounts[0]["worker_reported"], true, "{report}");
    let payload = &accounts[0]["payload"];
    assert_eq!(payload["method"], "count_text", "{report}");
    assert_eq!(payload["ok"], true, "{report}");
    for counter in [
        "read_bytes",
        "write_bytes",
        "cancelled_write_bytes",
        "rchar",
        "wchar",
    ] {
        assert!(payload["io"][counter].is_u64(), "{counter}: {report}");
    }
    let unknown = report["unknown_task"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(unknown.contains("No adapter bound for task"), "{report}");
    let unknown = report["unknown_method"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(unknown.contains("no method"), "{report}");
    assert_eq!(
        report["task_failed"]["type"], "CapabilityInputError",
        "{report}"
    );
    // Progress of the long task call, then its cancel, as that host sees them.
    let seen = &report["progress_seen"];
    assert!(
        seen["progress"].as_f64().unwrap_or_default() > 0.0,
        "{report}"
    );
    assert!(
        seen["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bytes"),
        "{report}"
    );
    assert_eq!(report["cancel_sent"], true, "{report}");
    assert!(report["big_task"]["cancelled"].is_string(), "{report}");
    // A cancelled stream ends in its typed cancel, not in a failure.
    assert_eq!(
        report["stream_cancelled"]["raised"], "CapabilityCancelledError",
        "{report}"
    );
    assert_eq!(report["reconfigured"], true, "{report}");
    assert_eq!(report["config"]["chunk_bytes"], 4096, "{report}");
    assert!(report["stats"]["pid"].is_u64(), "{report}");
    assert!(report["stats"]["subtree_pids"].is_array(), "{report}");
    assert_eq!(report["schema_drift"], false, "{report}");
}

/// The check is real: the manifest for the 0.0.46 host (no release named) is refused
/// by the successor's host at launch, as it refuses a stale worker of its own.
#[test]
fn the_substrate_manager_refuses_our_worker_exported_for_the_046_host() {
    let home = TestHome::new();
    let (exported, path) = export(&home, "manifests-046", &["--for-original"]);
    assert!(exported.status.success(), "{exported:?}");
    let small = small_input(&home);
    let report = run_successor(&home, path.parent().unwrap(), &small, &small);
    assert_eq!(report["loaded"], false, "{report}");
    let errors = report["load_errors"].to_string();
    assert!(errors.contains("without a substrate_version"), "{report}");
}

#[test]
fn export_for_a_substrate_release_our_workers_do_not_speak_is_refused() {
    let home = TestHome::new();
    let (exported, path) = export(&home, "manifests-099", &["--for-substrate", "0.0.99"]);
    assert!(!exported.status.success(), "{exported:?}");
    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert!(
        stderr.contains("--for-substrate asks for cjm-substrate \"0.0.99\""),
        "{stderr}"
    );
    assert!(stderr.contains("speaks 0.0.74"), "{stderr}");
    assert!(!path.exists());
    // One manifest answers one host: the worker names its errors as that host does.
    let (both, path) = export(
        &home,
        "manifests-both",
        &["--for-original", "--for-substrate", "0.0.74"],
    );
    assert!(!both.status.success(), "{both:?}");
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("different hosts"), "{stderr}");
    assert!(!path.exists());
}

/// A manifest edited to ask for a release our workers do not speak: the worker
/// refuses to start, saying why, and the successor's host refuses to load it, with
/// the worker's words in its own error.
#[test]
fn a_worker_asked_for_a_release_it_does_not_speak_refuses_and_that_host_says_why() {
    let home = TestHome::new();
    let started = Instant::now();
    let refused = Command::new(WORDCOUNT)
        .args(["--port", "0"])
        .env(SUBSTRATE_VERSION_ENV, "0.0.99")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!(
            "{SUBSTRATE_VERSION_ENV} asks for cjm-substrate \"0.0.99\""
        )),
        "{said}"
    );

    let (exported, path) = export(&home, "manifests-edited", &["--for-substrate", "0.0.74"]);
    assert!(exported.status.success(), "{exported:?}");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["install"]["env_vars"][SUBSTRATE_VERSION_ENV] = Value::from("0.0.99");
    std::fs::write(&path, manifest.to_string()).unwrap();
    let small = small_input(&home);
    // Its host waits out its start-up budget (30 s) for a worker that exited.
    let report = run_successor(&home, path.parent().unwrap(), &small, &small);
    assert_eq!(report["loaded"], false, "{report}");
    let errors = report["load_errors"].to_string();
    assert!(errors.contains("failed to start"), "{report}");
    assert!(errors.contains("does not speak"), "{report}");
}
