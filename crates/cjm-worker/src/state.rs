//! The worker's state, shared by every request: the plugin, its schema check, the
//! access secret and the calls in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
}

impl Worker {
    pub(crate) fn new(
        host: PluginHost,
        max_body_bytes: usize,
        config_check: ConfigCheck,
        access: Option<AccessToken>,
        adapters: crate::TaskAdapters,
    ) -> Self {
        Worker {
            host,
            max_body_bytes,
            config_check,
            access,
            cpu: Mutex::new(CpuSampler::new()),
            cleaned_up: AtomicBool::new(false),
            calls: Arc::default(),
            adapters,
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
