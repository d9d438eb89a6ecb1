//! What a worker placed by Ray asks of the cluster: plain settings, there whether or
//! not this build can place workers with Ray (cargo feature `ray`), so that a host
//! reads them from a manifest either way.

use std::collections::BTreeMap;
use std::time::Duration;

/// What a worker's job asks of Ray. Made with [`RayOptions::new`], then set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RayOptions {
    /// CPUs reserved for the job (Ray's `entrypoint_num_cpus`).
    pub num_cpus: f64,
    /// GPUs reserved (`entrypoint_num_gpus`); 0 asks for none.
    pub num_gpus: f64,
    /// Memory reserved, in MiB (`entrypoint_memory`); `None` asks for none.
    pub memory_mb: Option<u64>,
    /// Custom resources (`entrypoint_resources`), such as `gpu_vram_mb`.
    pub resources: BTreeMap<String, f64>,
    /// Node labels the job must run on (`entrypoint_label_selector`).
    pub label_selector: BTreeMap<String, String>,
    /// The worker exits after this long without a request from the host; the host
    /// renews it at a third of it.
    pub lease: Duration,
    /// How long placement may take, pending for resources included.
    pub place_timeout: Duration,
    /// How long stopping a job may take.
    pub stop_timeout: Duration,
    /// For a worker that cannot serve a remote host itself (the original's Python
    /// worker): ship this instead, see [`RelayShip`].
    pub relay: Option<RelayShip>,
    /// Python packages the job's environment installs (`runtime_env.pip`).
    pub pip: Vec<String>,
    /// How long a job may pend before the host looks at what it waits for, and how
    /// often after that (see [`LaunchSpec::on_waiting`](crate::LaunchSpec::on_waiting)).
    pub pending_check: Duration,
}

/// A worker run behind `cjm-relay`: the relay's binary is shipped, and it starts
/// `command` on the node (the spec's program and arguments are this host's, and mean
/// nothing there).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayShip {
    /// The `cjm-relay` binary.
    pub binary: std::path::PathBuf,
    /// What the relay starts on the node, such as `python -m
    /// cjm_plugin_system.core.worker --module M --class C`.
    pub command: Vec<String>,
}

impl RelayShip {
    /// Ship `binary`, which runs `command` on the node.
    pub fn new(binary: impl Into<std::path::PathBuf>, command: Vec<String>) -> Self {
        RelayShip {
            binary: binary.into(),
            command,
        }
    }
}

impl RayOptions {
    /// Half a CPU, no GPU, a 30 s lease, 10 minutes to place, 60 s to stop, a pending
    /// job looked at every 2 s.
    pub fn new() -> Self {
        RayOptions {
            num_cpus: 0.5,
            num_gpus: 0.0,
            memory_mb: None,
            resources: BTreeMap::new(),
            label_selector: BTreeMap::new(),
            lease: Duration::from_secs(30),
            place_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(60),
            relay: None,
            pip: Vec::new(),
            pending_check: Duration::from_secs(2),
        }
    }
}

impl Default for RayOptions {
    fn default() -> Self {
        RayOptions::new()
    }
}
