//! `cjm-relay` puts the original's Python worker behind a remote worker's front
//! (pinned TLS, handshake, lease): a host attaches to it as to any remote worker,
//! and the Python worker goes with the relay. A 0.0.46 worker is handed a Unix socket
//! in a folder of the relay's (`--fd 3`): it listens on no port anyone could call.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cjm_interface::wire;
use cjm_manager::{CallArgs, CjmHome, PluginManager};
use serde_json::json;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::common::*;
use crate::python_env;

const RELAY: &str = env!("CARGO_BIN_EXE_e2e-relay");
const ECHO: &str = env!("CARGO_BIN_EXE_e2e-echo");

/// The relay in front of `python`'s worker hosting the echo fixture, its temporary
/// folder `tmp`, with `env` added.
fn relay_command(python: &Path, home: &TestHome, tmp: &Path, env: &[(&str, &str)]) -> Command {
    let fingerprint = cjm_manager::host_tls_fingerprint(&CjmHome::at(home.path())).unwrap();
    let mut relay = Command::new(RELAY);
    relay
        .args(["--listen", "127.0.0.2:0", "--lease-secs", "30", "--"])
        .arg(python)
        .args([
            "-m",
            "cjm_plugin_system.core.worker",
            "--module",
            "cjm_echo_py.plugin",
            "--class",
            "EchoPlugin",
        ])
        .env("PYTHONPATH", python_env::fixture_dir().join("cjm-echo-py"))
        .env("TMPDIR", tmp)
        .env(wire::CLIENT_CERT_SHA256_ENV, &fingerprint)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    relay
}

/// Attach a manager to the relay whose handshake `stdout` gives, call and stream
/// through it; the Python worker's pid.
async fn attach_and_call(
    home: &TestHome,
    stdout: &mut BufReader<tokio::process::ChildStdout>,
    relay_pid: u32,
) -> (PluginManager, u32) {
    let handshake = cjm_proxy::read_handshake(stdout, Duration::from_secs(60))
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
    assert_ne!(python_pid, relay_pid, "/health is the Python worker's");
    assert!(alive(python_pid));
    let chunks = manager
        .execute_plugin_stream("echo-py-remote", CallArgs::new().arg(3))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    (manager, python_pid)
}

/// A Ray job's stop is a SIGTERM to the relay: the Python worker goes with it.
async fn stop(relay: &mut tokio::process::Child, python_pid: u32) {
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

/// The TCP sockets `pid` listens on (their inodes).
fn tcp_listening(pid: u32) -> Vec<u64> {
    let owned: HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|table| {
            std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // st 0A: LISTEN.
                    (fields.get(3) == Some(&"0A"))
                        .then(|| fields.get(9)?.parse::<u64>().ok())
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .filter(|inode| owned.contains(inode))
        .collect()
}

/// The relay's folders for its child's socket under `tmp`.
fn relay_folders(tmp: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("cjm-relay-"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_behind_the_relay_is_attached_to_over_tls_and_goes_with_it() {
    let home = TestHome::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = relay_command(python_env::python_046(), &home, tmp.path(), &[])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(relay.stdout.take().unwrap());
    let relay_pid = relay.id().unwrap();
    let (manager, python_pid) = attach_and_call(&home, &mut stdout, relay_pid).await;

    // Its socket is in a folder only this user can enter, and it listens on no port
    // that any local user could call past the relay's TLS.
    let folders = relay_folders(tmp.path());
    assert_eq!(folders.len(), 1, "{folders:?}");
    let mode = std::fs::metadata(&folders[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(folders[0].join("worker.sock").exists());
    assert_eq!(tcp_listening(python_pid), Vec::<u64>::new());
    manager.shutdown().await;

    stop(&mut relay, python_pid).await;
    assert_eq!(relay_folders(tmp.path()), Vec::<std::path::PathBuf>::new());
}

/// A release before 0.0.46 knows only `--port`: the host tells the relay so
/// (`CJM_RELAY_CHILD_LISTEN=port`), and the worker binds a loopback port itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_before_0_0_46_behind_the_relay_binds_its_own_port() {
    let home = TestHome::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut relay = relay_command(
        python_env::python(),
        &home,
        tmp.path(),
        &[("CJM_RELAY_CHILD_LISTEN", "port")],
    )
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(relay.stdout.take().unwrap());
    let relay_pid = relay.id().unwrap();
    let (manager, python_pid) = attach_and_call(&home, &mut stdout, relay_pid).await;
    assert_eq!(tcp_listening(python_pid).len(), 1);
    assert!(relay_folders(tmp.path()).is_empty());
    manager.shutdown().await;
    stop(&mut relay, python_pid).await;
}

/// Whoever answers `/health` on the child's port must be the child (or of its
/// process group): here the child starts the real worker in a session of its own,
/// as someone who had taken the port first would be. The relay refuses to serve it.
#[tokio::test]
async fn a_health_answer_from_outside_the_workers_process_group_is_refused() {
    let home = TestHome::new();
    let fingerprint = cjm_manager::host_tls_fingerprint(&CjmHome::at(home.path())).unwrap();
    let mut relay = Command::new(RELAY)
        .args(["--listen", "127.0.0.2:0", "--child-port", "--"])
        .args(["setsid", "--fork", "--wait", ECHO])
        .env(wire::CLIENT_CERT_SHA256_ENV, &fingerprint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = relay.stdout.take().unwrap();
    let mut stderr = relay.stderr.take().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), relay.wait())
        .await
        .expect("the relay gives up on a worker it cannot tell from a stranger")
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).await.unwrap();
    stderr.read_to_string(&mut err).await.unwrap();
    assert!(!status.success());
    assert!(out.is_empty(), "no handshake: {out}");
    assert!(err.contains("another process holds its port"), "{err}");
}
