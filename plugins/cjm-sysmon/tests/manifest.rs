//! The binary prints its manifest as one JSON line, as the installer expects.

use std::process::Command;

use serde_json::Value;

#[test]
fn manifest_is_one_json_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_cjm-sysmon"))
        .arg("--manifest")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let manifest: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(manifest["name"], "cjm-sysmon");
    assert_eq!(manifest["category"], "system_monitor");
    assert_eq!(manifest["resources"]["requires_gpu"], false);
}
