//! The soak's code path at a tiny scale, so that `cargo test` keeps it working; the
//! real run is `cargo xtask soak`.

use std::process::Command;

#[test]
fn a_tiny_soak_runs_clean() {
    let output = Command::new(env!("CARGO_BIN_EXE_cjm-soak"))
        .args(["--calls", "300", "--cycles", "5", "--load-secs", "1"])
        .args(["--clients", "4", "--workers", "2"])
        .arg("--echo")
        .arg(env!("CARGO_BIN_EXE_soak-echo"))
        .output()
        .expect("cjm-soak runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in ["calls: 300 calls", "cycles: 5 load", "0 errors", "steady"] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}
