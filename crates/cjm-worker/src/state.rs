//! The worker's state, shared by every request: the plugin, its schema check, the
//! access secret and the calls in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cjm_interface::substrate::SubstrateVersion;
use cjm_interface::wire::ErrorNames;
use parking_lot::Mutex;

use crate::auth::AccessToken;
use crate::calls::Calls;
use crate::config_check::ConfigCheck;
use crate::host::{guarded, CallFailure, PluginHost};
use crate::proc_stats::CpuSampler;

pub(crate) struct Worker {
    pub(crate) host: PluginHost,
    pub(crate) max_body_bytes: usize,
    /// The plugin's config schema: `/initialize` checks with it before the plugin
    /// sees a configuration.
    pub(crate) config_check: ConfigCheck,
    /// `None`: started without a secret, every request is served.
    pub(crate) access: Option<AccessToken>,
    pub(crate) cpu: Mutex<CpuSampler>,
    cleaned_up: AtomicBool,
    /// The calls in flight, for `/cancel` and `/progress`.
    pub(crate) calls: Arc<Calls>,
    /// The task adapters `/task` serves.
    pub(crate) adapters: crate::TaskAdapters,
    /// The successor's release `/health` answers as, with this program's path.
    pub(crate) substrate: Option<(SubstrateVersion, String)>,
}

impl Worker {
    pub(crate) fn new(
        host: PluginHost,
        max_body_bytes: usize,
        config_check: ConfigCheck,
        access: Option<AccessToken>,
        adapters: crate::TaskAdapters,
        substrate: Option<SubstrateVersion>,
    ) -> Self {
        // The successor's host shows this path in its refusals; ours is the binary.
        let substrate = substrate.map(|version| {
            let program = std::env::current_exe()
                .map(|path| path.display().to_string())
                .unwrap_or_default();
            (version, program)
        });
        Worker {
            host,
            max_body_bytes,
            config_check,
            access,
            cpu: Mutex::new(CpuSampler::new()),
            cleaned_up: AtomicBool::new(false),
            calls: Arc::default(),
            adapters,
            substrate,
        }
    }

    /// The exception names of the host this worker answers (see
    /// `wire::ErrorNames`): the successor's when it answers as a cjm-substrate release.
    pub(crate) fn error_names(&self) -> ErrorNames {
        match self.substrate {
            Some(_) => ErrorNames::Substrate,
            None => ErrorNames::Original,
        }
    }

    /// Run the plugin's cleanup once, whoever asks first (`/cleanup` or SIGTERM).
    pub(crate) fn cleanup_once(&self) -> Result<(), CallFailure> {
        if self.cleaned_up.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut plugin = self.host.write();
        guarded(|| plugin.cleanup())
    }
}
