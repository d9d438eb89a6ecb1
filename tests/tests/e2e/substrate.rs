//! The successor, cjm-substrate 0.0.74 from PyPI, under our host: a capability of
//! its form loaded from the v2 manifest its own `write_manifest` writes (told from a
//! 0.0.46 one by the installer's `resolved` set), started as its worker is
//! (`python -m cjm_substrate.core.worker --fd N --ppid P --adapters ..`), given the
//! folders under the successor's names and its declared worker environment, called
//! plain and over `/task`, with typed errors; what its `/health` adds shown; a job's
//! accounts and every attempt's call metrics in the journal and `cjm-ctl jobs show`;
//! and its workspace marker as one more place where manifests live.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cjm_manager::jobs::{job_accounts, job_call_metrics, JobOptions, JobState, Jobs, TaskCall};
use cjm_manager::{CallArgs, ErrorCategory, PluginManager};
use cjm_metadata::{Secret, SecretStore};
use serde_json::{json, Value};

use crate::common::*;
use crate::python_env;

const CAPABILITY: &str = "cjm-substrate-echo";
const TASK: &str = "echo-store";

/// Write the capability's and its adapter's manifests into `dir` with the
/// successor's own code; its adapter introspection runs `conda run -n ENV python ..`,
/// so a `conda` that runs the venv's Python goes first on PATH.
fn generate_manifests(home: &TestHome, dir: &Path) {
    let path = python_env::path_with_conda_shim(home, python_env::python_substrate());
    let out = Command::new(python_env::python_substrate())
        .arg(python_env::fixture_dir_substrate().join("generate_manifests.py"))
        .arg(dir)
        .arg(python_env::fixture_dir_substrate())
        .arg(home.path())
        .env("PATH", path)
        .env("PYTHONPATH", python_env::fixture_dir_substrate())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn manager_of(home: &TestHome) -> PluginManager {
    let manifests = home.path().join("manifests");
    generate_manifests(home, &manifests);
    let mut options = home.options();
    options.search_paths.push(manifests);
    let manager = PluginManager::new(options);
    manager.discover_manifests();
    assert!(
        manager.discovery_problems().is_empty(),
        "{:?}",
        manager.discovery_problems()
    );
    manager
}

fn argv(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|&byte| byte == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect()
}

fn ctl(home: &TestHome, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(CTL);
    command
        .args(args)
        .env("CJM_HOME", home.path())
        .env_remove("CJM_WORKSPACE")
        .current_dir(home.path())
        .env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substrate_capability_runs_under_our_host_plain_task_and_typed_errors() {
    let home = TestHome::new();
    SecretStore::at(home.path().join("secrets.json"))
        .set(CAPABILITY, "ECHO_TOKEN", Secret::new("s3cret"))
        .unwrap();
    let manager = manager_of(&home);
    let servers = manager.capabilities_for_task(TASK);
    assert_eq!(servers.len(), 1, "{servers:?}");

    manager.load_plugin(CAPABILITY, None).await.unwrap();
    let info = manager.worker_info(CAPABILITY).unwrap();
    assert_eq!(info.substrate_version.as_deref(), Some("0.0.74"));
    let python = info.python_executable.clone().unwrap();
    assert_eq!(
        Path::new(&python).canonicalize().unwrap(),
        python_env::python_substrate().canonicalize().unwrap(),
        "{python}"
    );
    let argv = argv(info.pid);
    let at = |flag: &str| argv.iter().position(|word| word == flag);
    assert!(
        argv.windows(2)
            .any(|pair| pair == ["-m", "cjm_substrate.core.worker"]),
        "{argv:?}"
    );
    assert!(at("--fd").is_some() && at("--ppid").is_some(), "{argv:?}");
    assert!(
        argv.windows(2)
            .any(|pair| pair == ["--adapters", "cjm_echo_adapter.impl:EchoAdapter"]),
        "{argv:?}"
    );

    let answer = manager
        .execute_plugin(CAPABILITY, CallArgs::new().kwarg("text", "hi"))
        .await
        .unwrap();
    let data_root = home.path().join("plugin_data");
    let own = data_root.join(CAPABILITY);
    assert_eq!(answer["echo"], "hi");
    let env = &answer["env"];
    assert_eq!(env["CJM_CAPABILITY_DATA_DIR"], json!(data_root.to_str()));
    assert_eq!(env["CJM_PLUGIN_DATA_DIR"], json!(data_root.to_str()));
    assert_eq!(env["CAPABILITY_DATA_DIR"], json!(own.to_str()));
    assert_eq!(
        env["ECHO_STORE"],
        json!(own.join("store").to_str()),
        "the successor's placeholder in a declared default"
    );
    assert_eq!(env["ECHO_TOKEN"], "s3cret", "a secret of the store");

    let err = manager
        .execute_plugin(CAPABILITY, CallArgs::new().kwarg("fail", true))
        .await
        .unwrap_err();
    assert_eq!(err.category(), Some(ErrorCategory::UserInput), "{err:?}");
    assert!(err.to_string().contains("no text to echo"), "{err}");

    let stored = manager
        .execute_task(
            CAPABILITY,
            TASK,
            "store",
            CallArgs::new().kwarg("text", "a b c"),
        )
        .await
        .unwrap();
    assert_eq!(stored, json!({"words": 3}));
    assert_eq!(
        std::fs::read_to_string(own.join("written.txt")).unwrap(),
        "a b c"
    );
    let err = manager
        .execute_task(CAPABILITY, TASK, "fail", CallArgs::new())
        .await
        .unwrap_err();
    assert_eq!(err.category(), Some(ErrorCategory::Fatal), "{err:?}");
    assert!(err.to_string().contains("the store is corrupt"), "{err}");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substrate_accounts_and_call_metrics_land_in_the_journal_and_jobs_show() {
    let home = TestHome::new();
    let manager = manager_of(&home);
    manager.load_plugin(CAPABILITY, None).await.unwrap();
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(manager.clone(), JobOptions::default().journal(&journal))
        .await
        .unwrap();
    let task = jobs
        .submit_task(
            CAPABILITY,
            TaskCall::new(TASK, "store"),
            CallArgs::new().kwarg("text", "one two three four"),
            0,
        )
        .unwrap();
    let task_id = jobs.journal_id(task).unwrap();
    let ended = jobs.wait(task).await.unwrap();
    assert_eq!(ended.result, Some(json!({"words": 4})));
    let plain = jobs
        .submit(CAPABILITY, CallArgs::new().kwarg("text", "x"), 0)
        .unwrap();
    let plain_id = jobs.journal_id(plain).unwrap();
    assert_eq!(
        jobs.wait(plain).await.unwrap().status.state,
        JobState::Succeeded
    );
    jobs.sync_journal().await;

    let accounts = job_accounts(&journal, &task_id).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].event_type, "task_account");
    assert_eq!(accounts[0].payload["ok"], true);
    let io = accounts[0].payload["io"].as_object().unwrap();
    assert!(io.contains_key("wchar"), "{io:?}");

    let metrics = job_call_metrics(&journal, &task_id).unwrap();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    let measured = &metrics[0].metrics;
    assert_eq!(metrics[0].attempt, 1);
    assert!(measured.bytes_out > 0, "{measured:?}");
    assert_eq!(measured.bytes_in, Some(br#"{"words":4}"#.len() as u64));
    assert!(measured.post_secs > 0.0 && measured.decode_secs.is_some());
    let worker = measured.worker_secs.unwrap();
    assert!(worker <= measured.post_secs + 0.001, "{measured:?}");
    // The worker wrote 18 bytes (and fsynced them) during the call.
    assert!(
        measured.io.get("wchar").is_some_and(|&bytes| bytes >= 18),
        "{measured:?}"
    );
    // A plain call is measured the same on our side; the worker accounts for nothing.
    let plain_metrics = job_call_metrics(&journal, &plain_id).unwrap();
    assert_eq!(plain_metrics.len(), 1, "{plain_metrics:?}");
    assert!(plain_metrics[0]
        .metrics
        .bytes_in
        .is_some_and(|bytes| bytes > 0));
    assert_eq!(plain_metrics[0].metrics.worker_secs, None);
    jobs.shutdown().await;
    manager.shutdown().await;

    let shown = ctl(&home, &["jobs", "show", &task_id], &[]);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("call 1: "), "{text}");
    assert!(
        text.contains(&format!("{} B out", measured.bytes_out)),
        "{text}"
    );
    assert!(text.contains("B in") && text.contains("io "), "{text}");
    assert!(text.contains("account 1: task_account"), "{text}");
    let shown = ctl(&home, &["jobs", "show", &task_id, "--json"], &[]);
    let report: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(report["call_metrics"][0]["bytes_out"], measured.bytes_out);
    assert_eq!(report["call_metrics"][0]["worker_s"], json!(worker));
    assert_eq!(report["accounts"][0]["event_type"], "task_account");
}

#[test]
fn substrate_workspace_manifests_are_discovered_and_list_health_shows_its_release() {
    let home = TestHome::new();
    let workspace = tempfile::tempdir().unwrap();
    let root: PathBuf = workspace.path().to_path_buf();
    let manifests = root.join(".cjm/manifests");
    generate_manifests(&home, &manifests);

    // Without the workspace the capability is nowhere on the search paths.
    let listed = ctl(&home, &["list", "--json"], &[]);
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(report["plugins"], json!([]), "{report}");

    // Named by CJM_WORKSPACE, its manifests are found only once it is marked.
    let unmarked = ctl(&home, &["list", "--json"], &[("CJM_WORKSPACE", &root)]);
    let report: Value = serde_json::from_slice(&unmarked.stdout).unwrap();
    assert_eq!(report["plugins"], json!([]), "{report}");
    let warned = String::from_utf8_lossy(&unmarked.stderr);
    assert!(warned.contains("has no cjm-workspace.yaml"), "{warned}");

    std::fs::write(root.join("cjm-workspace.yaml"), "name: ws\n").unwrap();
    let listed = ctl(
        &home,
        &["list", "--json", "--health"],
        &[("CJM_WORKSPACE", &root)],
    );
    assert!(listed.status.success(), "{listed:?}");
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let plugins = report["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{report}");
    assert_eq!(plugins[0]["name"], CAPABILITY);
    assert_eq!(
        plugins[0]["manifest"],
        json!(manifests.join("cjm-substrate-echo.json"))
    );
    assert_eq!(
        plugins[0]["health"]["substrate_version"], "0.0.74",
        "{report}"
    );
    assert!(plugins[0]["health"]["python_executable"].is_string());

    // Found by walking up from a folder inside it, as the successor finds it; the
    // table shows the release too.
    let inside = root.join("media/clips");
    std::fs::create_dir_all(&inside).unwrap();
    let listed = Command::new(CTL)
        .args(["list", "--health"])
        .env("CJM_HOME", home.path())
        .env_remove("CJM_WORKSPACE")
        .env_remove("RUST_LOG")
        .current_dir(&inside)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("SUBSTRATE") && text.contains("0.0.74"),
        "{text}"
    );
    // The probe stopped every worker it started.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while home_workers(&home) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a probed worker is left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes whose command line names this home (the workers a probe started).
fn home_workers(home: &TestHome) -> usize {
    let marker = home.path().to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|entry| {
            std::fs::read(entry.path().join("environ"))
                .map(|env| String::from_utf8_lossy(&env).contains(&marker))
                .unwrap_or(false)
                && std::fs::read(entry.path().join("cmdline"))
                    .map(|argv| {
                        String::from_utf8_lossy(&argv).contains("cjm_substrate.core.worker")
                    })
                    .unwrap_or(false)
        })
        .count()
}

/// The fixture package, copied into the test's home so that pip's in-tree build
/// output stays out of the repository.
fn copy_fixture(home: &TestHome) -> PathBuf {
    let target = home.path().join("src/cjm-substrate-echo");
    let mut pending = vec![(python_env::fixture_dir_substrate(), target.clone())];
    while let Some((from, to)) = pending.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in entries(&from) {
            let name = entry.file_name().unwrap().to_owned();
            if name == "__pycache__"
                || name == "build"
                || name.to_string_lossy().ends_with(".egg-info")
            {
                continue;
            }
            if entry.is_dir() {
                pending.push((entry.clone(), to.join(&name)));
            } else {
                std::fs::copy(&entry, to.join(&name)).unwrap();
            }
        }
    }
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substrate_install_all_makes_a_python_312_venv_and_records_the_successor() {
    let home = TestHome::new();
    let package = copy_fixture(&home);
    let yaml = home.path().join("plugins.yaml");
    // No python_version: the entry needs cjm-substrate, so a Python 3.12 or newer is
    // looked for.
    std::fs::write(
        &yaml,
        format!(
            "plugins:\n  - name: {CAPABILITY}\n    package: {}\n    \
             interface_libs: [\"cjm-substrate==0.0.74\"]\n",
            package.display(),
        ),
    )
    .unwrap();
    let installed = ctl(
        &home,
        &["install-all", "--config", yaml.to_str().unwrap()],
        &[],
    );
    let log = std::fs::read_to_string(home.path().join(format!("logs/install-{CAPABILITY}.log")))
        .unwrap_or_default();
    assert!(
        installed.status.success(),
        "{}\n{}\n{log}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join(format!("{CAPABILITY}.json"))).unwrap(),
    )
    .unwrap();
    let env_python = home.path().join(format!("envs/{CAPABILITY}/bin/python"));
    assert_eq!(manifest["python_path"], env_python.to_str().unwrap());
    assert_eq!(manifest["module"], "cjm_substrate_echo.capability");
    assert_eq!(manifest["class"], "EchoCapability");
    assert_eq!(manifest["cjm_substrate_version"], "0.0.74");
    assert!(manifest.get("cjm_plugin_system_version").is_none());
    assert_eq!(manifest["worker_env"][0]["name"], "ECHO_STORE");
    let version = Command::new(&env_python)
        .args(["-c", "import sys; print(sys.version_info >= (3, 12))"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "True");

    let manager = PluginManager::new(home.options());
    manager.discover_manifests();
    manager.load_plugin(CAPABILITY, None).await.unwrap();
    let info = manager.worker_info(CAPABILITY).unwrap();
    assert_eq!(info.substrate_version.as_deref(), Some("0.0.74"));
    assert_eq!(
        info.python_executable.as_deref(),
        env_python.to_str(),
        "the worker runs the venv install-all made"
    );
    let answer = manager
        .execute_plugin(CAPABILITY, CallArgs::new().kwarg("text", "installed"))
        .await
        .unwrap();
    assert_eq!(answer["echo"], "installed");
    manager.shutdown().await;
}

/// A manifest that records nothing of its environment (written by hand, in our flat
/// form): the environment is asked which release it has, and the successor's worker
/// is started for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substrate_environment_unrecorded_in_the_manifest_is_asked() {
    let home = TestHome::new();
    home.write_manifest(
        "echo-by-hand",
        json!({
            "name": "echo-by-hand",
            "version": "0.2.0",
            "python_path": python_env::python_substrate(),
            "module": "cjm_substrate_echo.capability",
            "class": "EchoCapability",
            "env_vars": {"PYTHONPATH": python_env::fixture_dir_substrate()},
        }),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("echo-by-hand", None).await.unwrap();
    let info = manager.worker_info("echo-by-hand").unwrap();
    assert_eq!(info.substrate_version.as_deref(), Some("0.0.74"));
    let argv = argv(info.pid);
    assert!(
        argv.windows(2)
            .any(|pair| pair == ["-m", "cjm_substrate.core.worker"])
            && argv.iter().any(|word| word == "--fd"),
        "{argv:?}"
    );
    let answer = manager
        .execute_plugin("echo-by-hand", CallArgs::new().kwarg("text", "asked"))
        .await
        .unwrap();
    assert_eq!(answer["echo"], "asked");
    manager.shutdown().await;
}

/// Without a Python 3.12 or newer, an entry that needs the successor fails before
/// anything is made, naming what was looked for.
#[test]
fn substrate_install_all_without_python_312_says_what_it_looked_for() {
    let home = TestHome::new();
    let empty = home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let yaml = home.path().join("plugins.yaml");
    std::fs::write(
        &yaml,
        format!("plugins:\n  - name: {CAPABILITY}\n    package: cjm-capability-none\n"),
    )
    .unwrap();
    let out = ctl(
        &home,
        &["install-all", "--config", yaml.to_str().unwrap()],
        &[("PATH", &empty), ("PYENV_ROOT", &empty)],
    );
    assert!(!out.status.success(), "{out:?}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("plugin of cjm-substrate"), "{said}");
    assert!(
        said.contains("looked for python3.14, python3.13, python3.12 on PATH")
            && said.contains(&format!("{}/versions/*/bin/python3", empty.display())),
        "{said}"
    );
    assert!(!home.path().join(format!("envs/{CAPABILITY}")).exists());
}
