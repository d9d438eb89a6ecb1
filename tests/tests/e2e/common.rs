//! What every end-to-end test needs: a temporary CJM_HOME with manifests pointing at
//! the fixture binaries, and ways to watch processes come and go.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cjm_manager::{CjmHome, ManagerOptions, PluginManager};
use procfs_core::process::Stat;
use procfs_core::FromRead;
use serde_json::{json, Value};
use tempfile::TempDir;

pub const ECHO: &str = env!("CARGO_BIN_EXE_e2e-echo");
pub const WORDCOUNT: &str = env!("CARGO_BIN_EXE_e2e-wordcount");
pub const FAULTY: &str = env!("CARGO_BIN_EXE_e2e-faulty");
pub const SYSMON: &str = env!("CARGO_BIN_EXE_e2e-sysmon");
pub const HOST: &str = env!("CARGO_BIN_EXE_e2e-host");
pub const CTL: &str = env!("CARGO_BIN_EXE_e2e-ctl");
pub const GREETER: &str = env!("CARGO_BIN_EXE_e2e-greeter");
pub const JOBS_HOST: &str = env!("CARGO_BIN_EXE_e2e-jobs-host");
pub const README_HOST: &str = env!("CARGO_BIN_EXE_readme-host");

pub struct TestHome {
    pub dir: TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        TestHome {
            dir: tempfile::tempdir().expect("temporary CJM_HOME"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.path().join("plugins")
    }

    /// Where file-backed arguments go, so tests can see that they are removed.
    pub fn temp_dir(&self) -> PathBuf {
        let dir = self.path().join("tmp");
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Write `plugins/<name>.json` for a native plugin.
    pub fn native_manifest(&self, name: &str, binary: &str, args: &[&str]) -> PathBuf {
        self.write_manifest(
            name,
            json!({
                "name": name,
                "version": "0.1.0",
                "category": "test",
                "command": binary,
                "args": args,
            }),
        )
    }

    /// Write `plugins/<name>.json` the way the installer does: the fields the binary
    /// prints with `--manifest` (its config schema among them), plus how to start it.
    pub fn installed_manifest(&self, name: &str, binary: &str, args: &[&str]) -> PathBuf {
        let out = std::process::Command::new(binary)
            .args(args)
            .arg("--manifest")
            .output()
            .expect("the plugin prints its manifest");
        assert!(out.status.success(), "{binary} --manifest: {out:?}");
        let mut manifest: Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
        manifest["name"] = json!(name);
        manifest["command"] = json!(binary);
        manifest["args"] = json!(args);
        self.write_manifest(name, manifest)
    }

    pub fn write_manifest(&self, file_stem: &str, manifest: Value) -> PathBuf {
        std::fs::create_dir_all(self.plugins_dir()).expect("plugins dir");
        let path = self.plugins_dir().join(format!("{file_stem}.json"));
        std::fs::write(&path, manifest.to_string()).expect("manifest written");
        path
    }

    pub fn options(&self) -> ManagerOptions {
        let mut options = ManagerOptions::with_home(CjmHome::at(self.path()));
        options.search_paths = vec![self.plugins_dir()];
        options.temp_dir = self.temp_dir();
        options.socket_dir = self.socket_dir();
        options
    }

    /// Where this home's workers get their Unix sockets.
    pub fn socket_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    pub fn manager(&self) -> PluginManager {
        PluginManager::new(self.options())
    }
}

/// Whether `pid` is a live process (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|stat| is_live(&stat))
}

fn stat(pid: u32) -> Option<Stat> {
    Stat::from_file(format!("/proc/{pid}/stat")).ok()
}

fn is_live(stat: &Stat) -> bool {
    !matches!(stat.state, 'Z' | 'X')
}

/// Wait up to `limit` for `pid` to be gone; how long it took, or None.
pub fn wait_gone(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Wait up to 20 s for `path` to exist (a fixture's marker that a call has started).
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`wait_for_file`] without blocking the runtime's thread.
pub async fn until_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn sigkill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Files left in a folder.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

/// A worker started by hand, as the original's host or a developer would: it binds
/// `--port` itself and has no access secret. Killed on drop.
pub struct HandStartedWorker {
    pub child: std::process::Child,
    pub port: u16,
}

impl HandStartedWorker {
    pub fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(binary, &[], env)
    }

    pub fn start_with_args(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(binary)
            .args(args)
            .arg("--port")
            .arg(port.to_string())
            .env_remove("CJM_WORKER_TOKEN")
            .env_remove("CJM_LISTEN_FD")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("worker started");
        let worker = HandStartedWorker { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "worker never listened on {port}");
            std::thread::sleep(Duration::from_millis(5));
        }
        worker
    }
}

impl Drop for HandStartedWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one raw HTTP request (closing the connection) to `127.0.0.1:port` and read
/// the whole answer: its status and text.
pub fn exchange(port: u16, request: &[u8]) -> (u16, String) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    exchange_on(stream, request)
}

/// [`exchange`] with a worker wherever it listens (a manager's workers listen on Unix
/// sockets).
pub fn exchange_at(endpoint: &cjm_manager::Endpoint, request: &[u8]) -> (u16, String) {
    match endpoint {
        cjm_manager::Endpoint::Tcp { port } => exchange(*port, request),
        cjm_manager::Endpoint::Unix { path } => {
            let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            exchange_on(stream, request)
        }
        other => panic!("raw exchanges are for local workers, not {other}"),
    }
}

/// `GET path` from the worker of a manager's plugin, with its secret, as its host
/// asks: the status and the JSON body.
pub fn worker_get(manager: &PluginManager, plugin: &str, path: &str) -> (u16, Value) {
    let info = manager
        .worker_info(plugin)
        .expect("the plugin has a worker");
    let token = initial_env_var(info.pid, "CJM_WORKER_TOKEN").expect("the worker's secret");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    let (status, text) = exchange_at(&info.endpoint, request.as_bytes());
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_else(|| panic!("no JSON body in {text:?}"));
    (status, body)
}

/// Wait up to 20 s for the worker of `plugin` to say that call `call_id` has ended.
pub async fn until_call_ended(manager: &PluginManager, plugin: &str, call_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, report) = worker_get(manager, plugin, &format!("/progress?call={call_id}"));
        if status == 200 && report["finished"] == Value::Bool(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "call {call_id} never ended: {status} {report}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn exchange_on(mut stream: impl std::io::Read + std::io::Write, request: &[u8]) -> (u16, String) {
    // The worker may answer (413, 401) and close before reading everything.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The secret as the worker was started with it (its initial environment, readable
/// only by its owner and root).
pub fn initial_env_var(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&b| b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// The live processes of process group `pgid` (zombies count as gone).
pub fn group_members(pgid: u32) -> Vec<u32> {
    entries(Path::new("/proc"))
        .iter()
        .filter_map(|path| path.file_name()?.to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|stat| is_live(&stat) && u32::try_from(stat.pgrp) == Ok(pgid))
        })
        .collect()
}

pub fn wait_group_gone(pgid: u32, limit: Duration) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let members = group_members(pgid);
        if members.is_empty() || start.elapsed() > limit {
            return members;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An error and its causes, as `cjm-ctl` (anyhow's `{:#}`) prints them.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    cjm_interface::ErrorChain(err).to_string()
}

/// Wait up to 30 s for `child` to exit (polled); its status.
pub fn exit_within(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}
