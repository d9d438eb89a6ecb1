//! `--listen` in a plugin built with and without remote serving (cargo feature
//! `remote`): this file is both the test and the plugin it runs. Run as a test (no
//! `CJM_TEST_LISTEN_PLUGIN`), it starts itself as the plugin with `--listen` and
//! looks at how that plugin ends; `cargo test -p cjm-worker --no-default-features
//! --test listen` checks the lean build.
//!
//! No libtest harness (see Cargo.toml): a harness would refuse `--listen` as one of
//! its own options.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cjm_interface::{Call, ConfigMap, Plugin, PluginError};
use serde_json::Value;

const CHILD: &str = "CJM_TEST_LISTEN_PLUGIN";

struct Quiet;

impl Plugin for Quiet {
    fn name(&self) -> &str {
        "quiet"
    }
    fn version(&self) -> &str {
        "0.1.0"
    }
    fn initialize(&mut self, _config: ConfigMap) -> Result<(), PluginError> {
        Ok(())
    }
    fn execute(&self, _call: Call) -> Result<Value, PluginError> {
        Ok(Value::Null)
    }
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return cjm_worker::main(cjm_worker::About::new(), |_| Ok(Quiet));
    }
    // Without the host's fingerprint a remote worker cannot start either, so neither
    // build serves anything here: what differs is what the plugin says.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--listen", "127.0.0.1:0"])
        .env(CHILD, "1")
        .env_remove("CJM_CLIENT_CERT_SHA256")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("the plugin did not exit within 30 s of --listen");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let expected = if cfg!(feature = "remote") {
        // Remote serving is there: it asks for what it needs to pin the host.
        "--listen needs CJM_CLIENT_CERT_SHA256"
    } else {
        "this plugin was built without remote serving (cjm-worker feature `remote`)"
    };
    if status.success() || !stderr.contains(expected) {
        eprintln!("--listen: expected a failure saying {expected:?}; got {status}: {stderr}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "--listen (feature remote: {}): ok",
        cfg!(feature = "remote")
    );
    ExitCode::SUCCESS
}
