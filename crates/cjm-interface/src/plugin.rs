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
}
