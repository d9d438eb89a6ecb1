//! Making a manager: its shared state, empty until discovery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cjm_scheduling::LocalMonitor;
use parking_lot::{Mutex, RwLock};

use super::{PluginManager, Shared};
use crate::discovery::Discovery;
use crate::store::HostStore;
use crate::ManagerOptions;

/// # Making one
///
/// A manager with its options; it discovers nothing until asked
/// ([Discovery](#discovery)).
impl PluginManager {
    /// A manager with no plugins discovered yet.
    pub fn new(options: ManagerOptions) -> Self {
        let local_monitor = match LocalMonitor::new() {
            Ok(monitor) => Some(Arc::new(monitor)),
            Err(err) => {
                tracing::warn!("{err}");
                None
            }
        };
        let (store, disabled) = open_store(&options);
        PluginManager {
            shared: Arc::new(Shared {
                options,
                discovery: RwLock::new(Discovery::default()),
                loaded: RwLock::new(HashMap::new()),
                loading: Mutex::new(HashSet::new()),
                disabled: Mutex::new(disabled),
                local_monitor,
                system_monitor: RwLock::new(None),
                idle_sweeper: std::sync::atomic::AtomicBool::new(false),
                store,
                live_schemas: Mutex::new(HashMap::new()),
                drifts: Mutex::new(HashMap::new()),
                diagnostics_db: Mutex::new(None),
                plugin_events: tokio::sync::broadcast::channel(super::events::EVENTS_BUFFER).0,
            }),
        }
    }

    /// The options the manager was made with.
    pub fn options(&self) -> &ManagerOptions {
        &self.shared.options
    }
}

/// The host store, when kept configurations or learned profiles are wanted, and the
/// names it keeps disabled. A store that cannot be opened costs the host only what it
/// would keep: it runs on, saying so. Opening blocks (up to the busy timeout while
/// another host writes): it is done once, here.
fn open_store(options: &ManagerOptions) -> (Option<HostStore>, HashSet<String>) {
    if !options.keep_configs && !options.learn_profiles {
        return (None, HashSet::new());
    }
    match HostStore::open(&options.home.root().join(crate::store::FILE_NAME)) {
        Ok((store, disabled)) if options.keep_configs => (Some(store), disabled),
        Ok((store, _)) => (Some(store), HashSet::new()),
        Err(err) => {
            tracing::warn!("{err}; configurations and profiles are not kept");
            (None, HashSet::new())
        }
    }
}
