//! The plugin instance and the rules for calling it: `&self` methods share it, `&mut
//! self` methods have it alone, and a panic becomes an error instead of a dead worker.

use parking_lot::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use cjm_interface::{Plugin, PluginError};

/// A plugin, seen both as one and as its own type: a task adapter is bound to the
/// plugin's type, and gets it back by downcasting (`Plugin` has no `Any` supertrait,
/// and upcasting `dyn Plugin` needs a newer Rust than the workspace's).
pub(crate) trait Hosted: Send + Sync {
    fn plugin(&self) -> &dyn Plugin;
    fn plugin_mut(&mut self) -> &mut dyn Plugin;
    fn any(&self) -> &dyn Any;
}

impl<P: Plugin> Hosted for P {
    fn plugin(&self) -> &dyn Plugin {
        self
    }

    fn plugin_mut(&mut self) -> &mut dyn Plugin {
        self
    }

    fn any(&self) -> &dyn Any {
        self
    }
}

pub(crate) struct PluginHost {
    plugin: RwLock<Box<dyn Hosted>>,
    name: String,
    version: String,
}

impl PluginHost {
    pub(crate) fn new<P: Plugin>(plugin: Box<P>) -> Self {
        let name = plugin.name().to_owned();
        let version = plugin.version().to_owned();
        PluginHost {
            plugin: RwLock::new(plugin),
            name,
            version,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Shared access, for `&self` methods.
    pub(crate) fn read(&self) -> MappedRwLockReadGuard<'_, dyn Plugin> {
        RwLockReadGuard::map(self.plugin.read(), |hosted| hosted.plugin())
    }

    /// Shared access to the plugin as its own type (for its task adapters).
    pub(crate) fn read_any(&self) -> MappedRwLockReadGuard<'_, dyn Any> {
        RwLockReadGuard::map(self.plugin.read(), |hosted| hosted.any())
    }

    /// Sole access, for `&mut self` methods: waits for every call in flight.
    pub(crate) fn write(&self) -> MappedRwLockWriteGuard<'_, dyn Plugin> {
        RwLockWriteGuard::map(self.plugin.write(), |hosted| hosted.plugin_mut())
    }
}

/// What a plugin call ended with, panics included.
#[derive(Debug)]
pub(crate) enum CallFailure {
    Plugin(PluginError),
    Panic(String),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Plugin(err) => write!(f, "{err}"),
            CallFailure::Panic(message) => write!(f, "plugin panicked: {message}"),
        }
    }
}

impl CallFailure {
    /// The failure as a plugin error (a panic is a `fatal` one), and its `kind`.
    pub(crate) fn as_plugin_error(&self) -> (PluginError, &'static str) {
        match self {
            CallFailure::Plugin(err) => (err.clone(), err.kind().as_str()),
            CallFailure::Panic(_) => (PluginError::failed(self.to_string()), "panic"),
        }
    }
}

/// Run one plugin call, turning a panic into [`CallFailure::Panic`] with its message.
pub(crate) fn guarded<T>(call: impl FnOnce() -> Result<T, PluginError>) -> Result<T, CallFailure> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(CallFailure::Plugin(err)),
        Err(payload) => Err(CallFailure::Panic(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        String::from("(panic payload is not a string)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_failures_with_their_message() {
        let failure = guarded::<()>(|| panic!("model file {} is corrupt", "x.bin")).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "plugin panicked: model file x.bin is corrupt"
        );
        let failure = guarded::<()>(|| Err(PluginError::failed("no"))).unwrap_err();
        assert_eq!(failure.to_string(), "no");
        assert_eq!(guarded(|| Ok(3)).unwrap(), 3);
    }
}
