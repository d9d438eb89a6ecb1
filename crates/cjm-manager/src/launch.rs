//! From a manifest to the command that starts its worker.

use std::path::Path;

use cjm_metadata::{CjmHome, Launch, Manifest};
use cjm_proxy::{LaunchSpec, ListenMode};

use crate::ManagerOptions;

/// The original's universal worker module, which hosts a Python plugin class.
const PYTHON_WORKER_MODULE: &str = "cjm_plugin_system.core.worker";

pub(crate) fn launch_spec(
    manifest: &Manifest,
    manifest_path: &Path,
    options: &ManagerOptions,
) -> LaunchSpec {
    let log_path = CjmHome::log_path(&options.home, &manifest.name);
    let (program, args, listen) = match manifest.resolved_launch(manifest_path.parent()) {
        Launch::Native { command, args } => (command, args, ListenMode::InheritUnixSocket),
        Launch::Python {
            python_path,
            module,
            class,
        } => (
            python_path,
            vec![
                String::from("-m"),
                String::from(PYTHON_WORKER_MODULE),
                String::from("--module"),
                module,
                String::from("--class"),
                class,
            ],
            ListenMode::WorkerBinds,
        ),
    };
    let mut spec = LaunchSpec::new(manifest.name.clone(), program, log_path);
    spec.args = args;
    spec.env = manifest
        .env_vars
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    spec.listen = listen;
    spec.start_timeout = options.start_timeout;
    spec.temp_dir = options.temp_dir.clone();
    spec.socket_dir = options.socket_dir.clone();
    spec
}
