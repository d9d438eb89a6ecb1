//! Making a manager: its shared state, empty until discovery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cjm_scheduling::LocalMonitor;
use parking_lot::{Mutex, RwLock};

use super::{PluginManager, Shared};
use crate::discovery::Discovery;
use crate::ManagerOptions;

/// # Making one
///
/// A manager with its options; it discovers nothing until asked
/// ([Discovery](#discovery)).
impl PluginManager {
    /// A manager with no plugins discovered yet.
    pub fn new(options: ManagerOptions) -> Self {
        let local_monitor = match LocalMonitor::new() {
            Ok(monitor) => Some(monitor),
            Err(err) => {
                tracing::warn!("{err}");
                None
            }
        };
        PluginManager {
            shared: Arc::new(Shared {
                options,
                discovery: RwLock::new(Discovery::default()),
                loaded: RwLock::new(HashMap::new()),
                loading: Mutex::new(HashSet::new()),
                disabled: Mutex::new(HashSet::new()),
                local_monitor,
                system_monitor: RwLock::new(None),
                idle_sweeper: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The options the manager was made with.
    pub fn options(&self) -> &ManagerOptions {
        &self.shared.options
    }
}
