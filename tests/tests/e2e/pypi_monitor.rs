//! A published plugin that nobody here wrote, from PyPI, the way a user gets it:
//! `cjm-system-monitor-nvidia` 0.0.24 (a 0.0.46 `ToolCapability` without a meta
//! module, with `cjm-capability-primitives` pinned to 0.0.8, whose later releases pull
//! in the successor) installed by `cjm-ctl install-all` from a plugins.yaml into a
//! Python 3.12 venv, listed, read as the scheduler's system monitor (its
//! `/get_system_status`), called plainly and over `/task` (each refused with its own
//! words and exit status), and removed. On a machine without an NVIDIA GPU it says so:
//! `gpu_type` "None" and no GPU figure.
//!
//! Needs `python3.12` or newer (on PATH or pyenv's) and PyPI; about 20 s.

use cjm_scheduling::LocalMonitor;
use serde_json::Value;

use crate::common::*;
use crate::pypi::{ctl, text, workers_of};

const PLUGIN: &str = "cjm-system-monitor-nvidia";

#[test]
fn the_nvidia_monitor_from_pypi_installs_reports_this_machine_and_goes() {
    let home = TestHome::new();
    let config = home.path().join("plugins.yaml");
    std::fs::write(
        &config,
        format!(
            "plugins:\n  - name: {PLUGIN}\n    package: {PLUGIN}==0.0.24\n    \
             interface_libs: [\"cjm_plugin_system==0.0.46\", \"cjm-capability-primitives==0.0.8\"]\n"
        ),
    )
    .unwrap();
    let installed = ctl(
        &home,
        &["install-all", "--config", config.to_str().unwrap()],
    );
    assert!(
        installed.status.success(),
        "{}\n{}",
        text(&installed.stderr),
        std::fs::read_to_string(home.path().join(format!("logs/install-{PLUGIN}.log")))
            .unwrap_or_default()
    );
    // Read as 0.0.46's installer reads a plugin with no meta module: its one
    // ToolCapability in <module>.plugin, named after its distribution.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join(format!("{PLUGIN}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["name"], PLUGIN);
    assert_eq!(manifest["version"], "0.0.24");
    assert_eq!(manifest["module"], "cjm_system_monitor_nvidia.plugin");
    assert_eq!(manifest["class"], "NvidiaMonitorPlugin");
    assert_eq!(manifest["cjm_plugin_system_version"], "0.0.46");

    let listed: Value = serde_json::from_slice(&ctl(&home, &["list", "--json"]).stdout).unwrap();
    assert_eq!(listed["plugins"][0]["name"], PLUGIN);
    assert_eq!(listed["plugins"][0]["status"], "ok");

    // The scheduler's figures from the plugin, as its own route gives them.
    let read = ctl(&home, &["stats", "--monitor", PLUGIN, "--json"]);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let stats: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert!(stats["memory_total_mb"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(
        stats["memory_available_mb"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    let has_gpu = LocalMonitor::new()
        .map(|monitor| !monitor.snapshot().gpus.is_empty())
        .unwrap_or(false);
    if has_gpu {
        assert_eq!(stats["gpu_type"], "NVIDIA", "{stats}");
        assert!(
            stats["gpu_total_memory_mb"].as_f64().unwrap() > 0.0,
            "{stats}"
        );
    } else {
        // No GPU here: said as such, and no zero that would read as a full GPU.
        assert_eq!(stats["gpu_type"], "None", "{stats}");
        assert!(stats.get("gpu_free_memory_mb").is_none(), "{stats}");
        assert!(stats.get("gpu_total_memory_mb").is_none(), "{stats}");
    }

    // It serves no `execute` and binds no adapter: each refusal in its own words.
    let plain = ctl(&home, &["exec", PLUGIN]);
    assert_eq!(plain.status.code(), Some(70), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("has no attribute 'execute'"),
        "{}",
        text(&plain.stderr)
    );
    let task = ctl(&home, &["task", PLUGIN, "monitoring", "get_system_status"]);
    assert_eq!(task.status.code(), Some(65), "{}", text(&task.stderr));
    assert!(
        text(&task.stderr).contains("no task \"monitoring\""),
        "{}",
        text(&task.stderr)
    );
    // Every command stopped the worker it started.
    assert_eq!(workers_of(&home), Vec::<u32>::new());

    let removed = ctl(&home, &["remove", PLUGIN]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(!home.plugins_dir().join(format!("{PLUGIN}.json")).exists());
    assert!(!home.path().join("envs").join(PLUGIN).exists());
}
