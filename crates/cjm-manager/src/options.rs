use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cjm_metadata::{CjmHome, HomeError};
use cjm_scheduling::{PermissiveScheduler, ResourceScheduler, StatsSource};

use crate::FaultPolicy;

/// How a [`PluginManager`](crate::PluginManager) finds, starts and admits plugins.
/// Made with [`from_env`](Self::from_env) or [`with_home`](Self::with_home), then
/// adjusted field by field; fields may be added in later releases.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerOptions {
    /// Where logs go (and, by default, where manifests come from).
    pub home: CjmHome,
    /// Manifest folders in priority order: a name found earlier shadows later ones.
    pub search_paths: Vec<PathBuf>,
    /// Admits executions (see the README's "Scheduling"); the default admits all.
    pub scheduler: Arc<dyn ResourceScheduler>,
    /// Where the scheduler's figures come from; `None`: the built-in local monitor
    /// (sysinfo, NVML). A plugin registered with
    /// [`register_system_monitor`](crate::PluginManager::register_system_monitor)
    /// takes precedence over both.
    pub stats_source: Option<Arc<dyn StatsSource>>,
    /// How long a worker may take to become ready.
    pub start_timeout: Duration,
    /// Where file-backed arguments are written for the duration of a call.
    pub temp_dir: PathBuf,
    /// Where native workers' Unix sockets are made, each in a private folder of its
    /// own. The default: `$XDG_RUNTIME_DIR` (the user's own), else the system's
    /// temporary folder.
    pub socket_dir: PathBuf,
    /// Call timeouts and restarts, for plugins without an entry in
    /// `plugin_fault_policies`. The default: no timeout, no restarts.
    pub fault_policy: FaultPolicy,
    /// Fault policies by plugin name.
    pub plugin_fault_policies: HashMap<String, FaultPolicy>,
    /// Stop a worker idle this long (it starts again, with its configuration, on its
    /// next call), for plugins whose manifest sets no `keep_alive_secs` and that have
    /// no entry in `plugin_keep_alive`. The default: `None`, workers stay up.
    pub keep_alive: Option<Duration>,
    /// Keep-alives by plugin name, over their manifests'.
    pub plugin_keep_alive: HashMap<String, Duration>,
    /// `cjm-relay`, shipped with Python plugins placed by Ray (it gives the original's
    /// worker a remote worker's TLS front). `None`: `cjm-relay` beside this program,
    /// else on `PATH`.
    pub relay_program: Option<PathBuf>,
    /// Keep each plugin's (and instance's) configuration and enabled flag in
    /// `CJM_HOME/host.sqlite3`: a plugin loaded again without a configuration starts
    /// on the one it last had, checked against its worker's live config schema when
    /// that changed. The default: on (the original's host keeps them too).
    pub keep_configs: bool,
    /// Record what each call was seen to use (peak memory, GPU memory, duration) per
    /// plugin and configuration, in `CJM_HOME/host.sqlite3`. The default: on.
    pub learn_profiles: bool,
    /// Admit a call by the larger of its manifest's declaration and what its calls
    /// were seen to use (beyond what its running worker already holds). The default:
    /// on. It changes nothing under the default permissive scheduler; under one that
    /// checks resources an understated manifest is the very failure it is there to
    /// prevent.
    pub admit_by_learned_profiles: bool,
}

impl ManagerOptions {
    /// `CJM_HOME` (or `~/.cjm`), its default search paths, the permissive scheduler.
    pub fn from_env() -> Result<Self, HomeError> {
        Ok(Self::with_home(CjmHome::from_env()?))
    }

    /// Defaults for the given home folder.
    pub fn with_home(home: CjmHome) -> Self {
        if let Err(err) = cjm_metadata::Workspace::resolve() {
            // Discovery goes on without it: the global manifests are still there.
            tracing::warn!("{err}; its manifests are not searched");
        }
        ManagerOptions {
            search_paths: home.default_search_paths(),
            home,
            scheduler: Arc::new(PermissiveScheduler),
            stats_source: None,
            start_timeout: Duration::from_secs(30),
            temp_dir: std::env::temp_dir(),
            socket_dir: cjm_proxy::default_socket_dir(),
            fault_policy: FaultPolicy::default(),
            plugin_fault_policies: HashMap::new(),
            keep_alive: None,
            plugin_keep_alive: HashMap::new(),
            relay_program: None,
            keep_configs: true,
            learn_profiles: true,
            admit_by_learned_profiles: true,
        }
    }

    /// The fault policy in force for `plugin`.
    pub fn fault_policy_for(&self, plugin: &str) -> &FaultPolicy {
        self.plugin_fault_policies
            .get(plugin)
            .unwrap_or(&self.fault_policy)
    }
}
