use serde_json::Value;

use crate::{Call, ConfigMap, PluginError};

/// The chunks of a streaming execution. It may borrow the plugin: the worker drives it
/// on the thread that created it, while the plugin is held for reading.
pub type ChunkIter<'a> = Box<dyn Iterator<Item = Result<Value, PluginError>> + 'a>;

/// A plugin: one instance lives in its own worker process and is driven over HTTP.
///
/// Methods taking `&self` may run concurrently (the worker calls them from a thread
/// pool); methods taking `&mut self` run alone, after every call in flight has ended.
/// A panic in any method becomes an error answer and the worker keeps serving.
pub trait Plugin: Send + Sync + 'static {
    /// Unique plugin identifier.
    fn name(&self) -> &str;

    /// Semantic version string.
    fn version(&self) -> &str;

    /// Initialize or re-configure. On error the plugin must keep its previous
    /// configuration.
    fn initialize(&mut self, config: ConfigMap) -> Result<(), PluginError>;

    /// The plugin's main functionality.
    fn execute(&self, call: Call) -> Result<Value, PluginError>;

    /// Results chunk by chunk. A plugin that does not stream yields its `execute`
    /// result once.
    fn execute_stream(&self, call: Call) -> Result<ChunkIter<'_>, PluginError> {
        let result = self.execute(call)?;
        Ok(Box::new(std::iter::once(Ok(result))))
    }

    /// JSON Schema of the configuration (`{}` when the plugin has none).
    fn config_schema(&self) -> Value {
        Value::Object(ConfigMap::new())
    }

    /// The configuration in force (`{}` when the plugin has none).
    fn current_config(&self) -> Value {
        Value::Object(ConfigMap::new())
    }

    /// Release what the plugin holds (models, GPU memory) before the worker stops.
    fn cleanup(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    // ---- The original 0.0.46's lifecycle hooks: all optional. ----

    /// Re-configure from `old` to `new` (the host's `/reconfigure`), for a plugin that
    /// can keep what a change does not touch (a loaded model when only a threshold
    /// changed). The default is [`initialize`](Self::initialize) with `new`. On error
    /// the plugin must keep `old`.
    fn reconfigure(&mut self, old: ConfigMap, new: ConfigMap) -> Result<(), PluginError> {
        let _ = old;
        self.initialize(new)
    }

    /// The host disabled the plugin: its worker stays, and may release heavy
    /// resources (GPU memory) until [`on_enable`](Self::on_enable). Runs after the
    /// calls in flight have ended.
    fn on_disable(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    /// The host enabled the plugin again: re-acquire eagerly, or leave it to the next
    /// call.
    fn on_enable(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Acquire what calls will need (download a model, warm a cache) ahead of them.
    /// Report progress through `control` while it runs: a host counts a prefetch
    /// whose progress does not change for its stall time as failed.
    fn prefetch(&self, control: &crate::CallControl) -> Result<(), PluginError> {
        let _ = control;
        Ok(())
    }

    /// The live domains of configuration fields whose choices depend on the
    /// machine (the models present, the devices): `{field: options}`, `{}` when
    /// none (the original's `get_config_options`).
    fn config_options(&self) -> Value {
        Value::Object(ConfigMap::new())
    }

    /// For a system monitor plugin: the machine's figures (`gpu_free_memory_mb`,
    /// `memory_available_mb`, ...), answered on `/get_system_status`. `None`: the
    /// plugin is no monitor (the endpoint answers 404).
    fn system_status(&self) -> Option<Result<Value, PluginError>> {
        None
    }

    /// For a system monitor plugin: the processes it sees, answered on
    /// `/list_processes`. `None`: the plugin is no monitor.
    fn list_processes(&self) -> Option<Result<Value, PluginError>> {
        None
    }
}
