//! The binary, not just the library: `--manifest` is how the installer learns about
//! the plugin, so it must print exactly one JSON line and nothing else on stdout.

use std::process::Command;

use serde_json::Value;

#[test]
fn manifest_is_one_json_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_cjm-wordcount"))
        .arg("--manifest")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let manifest: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(manifest["name"], "cjm-wordcount");
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["category"], "text");
    assert_eq!(
        manifest["config_schema"]["properties"]["chunk_bytes"]["minimum"],
        4096
    );
    assert_eq!(manifest["resources"]["requires_gpu"], false);
}
