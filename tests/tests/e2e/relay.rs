//! `cjm-relay` puts the original's Python worker behind a remote worker's front
//! (pinned TLS, handshake, lease): a host attaches to it as to any remote worker,
//! and the Python worker goes with the relay.

use std::process::Stdio;
use std::time::Duration;

use cjm_interface::wire;
use cjm_manager::{CallArgs, CjmHome, PluginManager};
use serde_json::json;
use tokio::io::BufReader;
use tokio::process::Command;

use crate::common::*;
use crate::python_env;

const RELAY: &str = env!("CARGO_BIN_EXE_e2e-relay");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_behind_the_relay_is_attached_to_over_tls_and_goes_with_it() {
    let home = TestHome::new();
    let fingerprint = cjm_manager::host_tls_fingerprint(&CjmHome::at(home.path())).unwrap();
    let mut relay = Command::new(RELAY)
        .args(["--listen", "127.0.0.2:0", "--lease-secs", "30", "--"])
        .arg(python_env::python())
        .args([
            "-m",
            "cjm_plugin_system.core.worker",
            "--module",
            "cjm_echo_py.plugin",
            "--class",
            "EchoPlugin",
        ])
        .env("PYTHONPATH", python_env::fixture_dir().join("cjm-echo-py"))
        .env(wire::CLIENT_CERT_SHA256_ENV, &fingerprint)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(relay.stdout.take().unwrap());
    let handshake = cjm_proxy::read_handshake(&mut stdout, Duration::from_secs(60))
        .await
        .unwrap();
    home.write_manifest(
        "echo-py-remote",
        json!({
            "name": "echo-py-remote",
            "version": "0.1.0",
            "command": "/nonexistent/relay",
            "attach": {
                "url": format!("https://127.0.0.2:{}", handshake.port),
                "server_fingerprint": handshake.server_cert_sha256.to_string(),
            },
        }),
    );
    let manager = PluginManager::new(home.options());
    manager.discover_manifests();
    manager.load_plugin("echo-py-remote", None).await.unwrap();
    let answer = manager
        .execute_plugin("echo-py-remote", CallArgs::new().arg("from python"))
        .await
        .unwrap();
    assert_eq!(answer["result"], "from python", "{answer}");
    let python_pid = manager.worker_info("echo-py-remote").unwrap().pid;
    assert_ne!(
        python_pid,
        relay.id().unwrap(),
        "/health is the Python worker's"
    );
    assert!(alive(python_pid));
    let chunks = manager
        .execute_plugin_stream("echo-py-remote", CallArgs::new().arg(3))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    manager.shutdown().await;

    // A Ray job's stop is a SIGTERM to the relay: the Python worker goes with it.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(relay.id().unwrap() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), relay.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(wait_gone(python_pid, Duration::from_secs(5)).is_some());
}
