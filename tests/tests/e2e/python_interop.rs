//! Interop with the Python original (cjm_plugin_system 0.0.20 from PyPI): its
//! plugins, unchanged, under our installer and manager, and its host-side client
//! driving our worker. The Python comes from `python_env` (never skipped).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cjm_manager::{
    BlockingPluginManager, CallArgs, ConfigMap, ManagerError, PluginManager, SafetyScheduler,
};
use cjm_scheduling::{BoxFuture, StatsError, StatsSource, SystemStats};
use serde_json::{json, Value};

use crate::common::*;
use crate::python_env::{self, ORIGINAL};

const PY_ECHO: &str = "cjm-echo-py";

fn config(value: Value) -> ConfigMap {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The fixture package's folder, for workers started from the test's Python.
fn fixture_package() -> PathBuf {
    python_env::fixture_dir().join("cjm-echo-py")
}

/// A manifest of the original's Python form, run by the test's Python with the
/// fixture package on PYTHONPATH.
fn python_manifest(home: &TestHome, name: &str, class: &str, module: &str, extra: Value) {
    let mut manifest = json!({
        "name": name,
        "version": "0.1.0",
        "category": "test",
        "python_path": python_env::python(),
        "module": module,
        "class": class,
        "env_vars": {"PYTHONPATH": fixture_package()},
    });
    if let (Some(fields), Value::Object(extra)) = (manifest.as_object_mut(), extra) {
        fields.extend(extra);
    }
    home.write_manifest(name, manifest);
}

fn install_all(home: &TestHome, config: &Path) -> std::process::Output {
    Command::new(CTL)
        .args(["install-all", "--config"])
        .arg(config)
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG")
        .current_dir(home.path())
        .output()
        .unwrap()
}

/// The fixture package, copied into the test's home so that pip's in-tree build
/// output stays out of the repository and concurrent runs do not share it.
fn copy_fixture(home: &TestHome) -> PathBuf {
    let target = home.path().join("src/cjm-echo-py");
    let mut pending = vec![(fixture_package(), target.clone())];
    while let Some((from, to)) = pending.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in entries(&from) {
            let name = entry.file_name().unwrap().to_owned();
            if name == "__pycache__" || name == "build" {
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

#[test]
fn a_python_plugin_installed_by_install_all_runs_every_capability_under_our_manager() {
    let home = TestHome::new();
    let package = copy_fixture(&home);
    let yaml = home.path().join("plugins.yaml");
    std::fs::write(
        &yaml,
        format!(
            "plugins:\n  - name: {PY_ECHO}\n    python_version: \"3\"\n    package: {}\n    \
             interface_libs: [\"{}\"]\n",
            package.display(),
            ORIGINAL.requirement
        ),
    )
    .unwrap();

    let installed = install_all(&home, &yaml);
    let log = std::fs::read_to_string(home.path().join(format!("logs/install-{PY_ECHO}.log")))
        .unwrap_or_default();
    assert!(
        installed.status.success(),
        "{}\n{}\n{log}",
        text(&installed.stdout),
        text(&installed.stderr)
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join(format!("{PY_ECHO}.json"))).unwrap(),
    )
    .unwrap();
    let env_python = home.path().join(format!("envs/{PY_ECHO}/bin/python"));
    assert_eq!(manifest["python_path"], env_python.to_str().unwrap());
    assert_eq!(manifest["module"], "cjm_echo_py.plugin");
    assert_eq!(manifest["class"], "EchoPlugin");
    assert_eq!(manifest["env_name"], PY_ECHO);
    // The version of the original it was installed with: it decides --fd or --port.
    assert_eq!(manifest["cjm_plugin_system_version"], "0.0.20");
    assert_eq!(manifest["category"], "test");
    // From the plugin instance, as the original's installer reads it.
    assert_eq!(
        manifest["config_schema"]["properties"]["prefix"]["maxLength"],
        100
    );
    let again = install_all(&home, &yaml);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("unchanged"),
        "{}",
        text(&again.stdout)
    );

    let manager = BlockingPluginManager::new(home.options()).unwrap();
    manager.discover_manifests();
    manager
        .load_plugin(PY_ECHO, Some(config(json!({"prefix": ">> "}))))
        .unwrap();
    let pid = manager.manager().worker_info(PY_ECHO).unwrap().pid;
    assert_ne!(pid, std::process::id());

    // Blocking facade, plain and file-backed arguments.
    let out = manager
        .execute_plugin(PY_ECHO, CallArgs::new().arg("hi").kwarg("repeat", 2))
        .unwrap();
    assert_eq!(out["result"], ">> hihi");
    assert_eq!(out["processed_by_pid"], pid);
    let out = manager
        .execute_plugin(
            PY_ECHO,
            CallArgs::new()
                .arg("f")
                .file_kwarg("file_path", String::from("read by the worker")),
        )
        .unwrap();
    assert_eq!(out["file_content_read"], "read by the worker");
    assert!(entries(&home.temp_dir()).is_empty(), "temporary files left");
    let chunks: Vec<Value> = manager
        .execute_plugin_stream(PY_ECHO, CallArgs::new().arg(2))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(chunks.len(), 2);

    // Async: plain, stream, and the two ways the original reports an error.
    manager.block_on(async {
        let async_manager = manager.manager();
        let out = async_manager
            .execute_plugin(PY_ECHO, CallArgs::new().kwarg("text", "a"))
            .await
            .unwrap();
        assert_eq!(out["result"], ">> a");
        let chunks = async_manager
            .execute_plugin_stream(PY_ECHO, CallArgs::new().kwarg("count", 4))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let expected: Vec<Value> = (0..4)
            .map(|i| json!({"chunk": i, "status": "streaming"}))
            .collect();
        assert_eq!(chunks, expected);
        // The generator fails: the original answers 200 and a final error line.
        let err = async_manager
            .execute_plugin_stream(PY_ECHO, CallArgs::new().arg("many"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("many"), "{err}");
        let err = async_manager
            .execute_plugin(PY_ECHO, CallArgs::new().arg("x").kwarg("colour", 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    });

    // The worker's output is in the plugin's log: the traceback of that error.
    let logs = manager.plugin_logs(PY_ECHO, 200).unwrap();
    assert!(logs.contains(&format!("starting {PY_ECHO}")), "{logs}");
    assert!(
        logs.contains("unexpected keyword argument 'colour'"),
        "{logs}"
    );

    // Configuration and schema, update (a refused one keeps the previous), reload.
    assert_eq!(
        manager.plugin_config(PY_ECHO).unwrap(),
        json!({"prefix": ">> "})
    );
    let schema = manager.plugin_config_schema(PY_ECHO).unwrap();
    assert_eq!(schema["properties"]["prefix"]["type"], "string");
    manager
        .update_plugin_config(PY_ECHO, config(json!({"prefix": "< "})))
        .unwrap();
    assert!(manager
        .update_plugin_config(PY_ECHO, config(json!({"colour": "red"})))
        .is_err());
    assert_eq!(
        manager.plugin_config(PY_ECHO).unwrap(),
        json!({"prefix": "< "})
    );
    manager.reload_plugin(PY_ECHO, None).unwrap();
    let reloaded = manager.manager().worker_info(PY_ECHO).unwrap().pid;
    assert_ne!(reloaded, pid);
    assert!(wait_group_gone(pid, Duration::from_secs(10)).is_empty());
    assert_eq!(
        manager.plugin_config(PY_ECHO).unwrap(),
        json!({"prefix": "< "})
    );
    let out = manager
        .execute_plugin(PY_ECHO, CallArgs::new().arg("b"))
        .unwrap();
    assert_eq!(out["result"], "< b");

    let stats = manager.plugin_stats(PY_ECHO).unwrap();
    assert_eq!(stats.pid, reloaded);
    assert!(stats.memory_rss_mb > 1.0, "{stats:?}");

    manager.unload_plugin(PY_ECHO).unwrap();
    assert_eq!(
        wait_group_gone(reloaded, Duration::from_secs(10)),
        Vec::<u32>::new()
    );
    manager.unload_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_python_plugin_leaves_no_process_of_its_group() {
    let home = TestHome::new();
    python_manifest(
        &home,
        "cjm-spawner-py",
        "SpawnerPlugin",
        "cjm_echo_py.spawner",
        json!({}),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-spawner-py", None).await.unwrap();
    let worker = manager.worker_info("cjm-spawner-py").unwrap().pid;
    let out = manager
        .execute_plugin("cjm-spawner-py", CallArgs::new())
        .await
        .unwrap();
    let child = u32::try_from(out["child_pid"].as_u64().unwrap()).unwrap();
    assert!(alive(child));
    let members = group_members(worker);
    assert!(
        members.contains(&worker) && members.contains(&child),
        "{members:?}"
    );

    manager.unload_plugin("cjm-spawner-py").await.unwrap();
    assert_eq!(
        wait_group_gone(worker, Duration::from_secs(10)),
        Vec::<u32>::new()
    );
    assert!(!alive(child));
    manager.shutdown().await;
}

/// GPU memory as a driver would report it: each listed process holds its share
/// while it lives, of `capacity`.
#[derive(Debug, Clone)]
struct Vram {
    capacity: f64,
    holders: Arc<Mutex<Vec<(u32, f64)>>>,
}

impl StatsSource for Vram {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>> {
        let held: f64 = self
            .holders
            .lock()
            .unwrap()
            .iter()
            .filter(|(pid, _)| alive(*pid))
            .map(|(_, mb)| mb)
            .sum();
        Box::pin(std::future::ready(Ok(SystemStats::with_free(
            Some(self.capacity - held),
            Some(64_000.0),
        ))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_gpu_plugins_are_refused_and_evicted_by_the_scheduler() {
    let home = TestHome::new();
    let gpu = json!({"resources": {"requires_gpu": true, "min_gpu_vram_mb": 4000}});
    for name in ["py-gpu-a", "py-gpu-b"] {
        python_manifest(&home, name, "EchoPlugin", "cjm_echo_py.plugin", gpu.clone());
    }
    let vram = Vram {
        capacity: 6_000.0,
        holders: Arc::default(),
    };
    let mut options = home.options();
    options.scheduler = Arc::new(SafetyScheduler::new());
    options.stats_source = Some(Arc::new(vram.clone()));
    let manager = PluginManager::new(options);
    // Both workers start at once, each on a port of its own.
    let loaded = manager.load_all(Default::default()).await;
    assert!(loaded.values().all(Result::is_ok), "{loaded:?}");
    let pid = |name: &str| manager.worker_info(name).unwrap().pid;
    let (a, b) = (pid("py-gpu-a"), pid("py-gpu-b"));
    vram.holders.lock().unwrap().push((a, 4_000.0));

    // b holds nothing: stopping it frees nothing, and a's 4000 MB leave 2000.
    let err = manager
        .execute_plugin("py-gpu-a", CallArgs::new().arg("x"))
        .await
        .unwrap_err();
    let ManagerError::NotEnoughGpuMemory { evicted, .. } = &err else {
        panic!("not a GPU refusal: {err}");
    };
    assert_eq!(evicted, &["py-gpu-b"]);
    assert!(
        err.to_string()
            .contains("GPU memory needed 4000 MB, free 2000 MB"),
        "{err}"
    );
    assert!(
        manager.worker_info("py-gpu-b").is_none(),
        "b was not stopped"
    );
    assert!(wait_group_gone(b, Duration::from_secs(10)).is_empty());

    // a is idle and holds 4000 MB: evicting it lets b run.
    let out = manager
        .execute_plugin("py-gpu-b", CallArgs::new().arg("y"))
        .await
        .unwrap();
    assert_eq!(out["result"], "y");
    assert!(
        manager.worker_info("py-gpu-a").is_none(),
        "a was not evicted"
    );
    assert!(wait_group_gone(a, Duration::from_secs(10)).is_empty());
    manager.shutdown().await;
}

/// A stand-in for the Python interpreter whose first start finds its port taken,
/// as uvicorn reports it; later starts run the real worker.
fn port_taken_once(home: &TestHome) -> PathBuf {
    let path = home.path().join("python-port-taken-once");
    let marker = home.path().join("port-was-taken");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ ! -e '{marker}' ]; then\n  : > '{marker}'\n  echo \"ERROR:    \
             [Errno 98] error while attempting to bind on address ('127.0.0.1', 1): \
             address already in use\" >&2\n  exit 1\nfi\nexec '{python}' \"$@\"\n",
            marker = marker.display(),
            python = python_env::python().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_whose_port_was_taken_starts_again_on_another() {
    let home = TestHome::new();
    python_manifest(
        &home,
        "py-port",
        "EchoPlugin",
        "cjm_echo_py.plugin",
        // Recorded as install-all does, so that the stand-in is not asked for it.
        json!({"python_path": port_taken_once(&home), "cjm_plugin_system_version": "0.0.20"}),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("py-port", None).await.unwrap();
    let out = manager
        .execute_plugin("py-port", CallArgs::new().arg("ok"))
        .await
        .unwrap();
    assert_eq!(out["result"], "ok");
    let logs = manager.plugin_logs("py-port", 100).unwrap();
    assert_eq!(logs.matches("starting py-port").count(), 2, "{logs}");
    assert_eq!(logs.matches("address already in use").count(), 1, "{logs}");
    manager.shutdown().await;
}

#[test]
fn the_originals_client_gets_the_same_answers_from_our_worker_as_from_its_own() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(python_env::python())
        .arg(python_env::fixture_dir().join("original_client.py"))
        .arg("--ours")
        .arg(ECHO)
        .arg("--plugin-path")
        .arg(fixture_package())
        .arg("--work")
        .arg(work.path())
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the original's client saw differences:\n{}\n{}",
        text(&output.stderr),
        text(&output.stdout)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ours"]["execute"]["result"], ">> hihi");
    assert_eq!(
        report["ours"]["execute_stream"].as_array().unwrap().len(),
        4
    );
    assert_eq!(report["ours"]["stopped"], true);
}
