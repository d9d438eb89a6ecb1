use serde_json::Value;

use crate::{Call, ConfigMap, PluginError};

/// The chunks of a streaming execution. It may borrow the plugin: the worker drives it
/// on the thread that created it, while the plugin is held for reading (so it need not
/// be `Send`, and a configuration change waits until the stream has ended).
pub type ChunkIter<'a> = Box<dyn Iterator<Item = Result<Value, PluginError>> + 'a>;

/// A plugin: one instance lives in its own worker process and is driven over HTTP.
///
/// The worker serves each connection on a thread of its own and runs the plugin's
/// methods right on that thread (a stream's iterator on a thread of the stream's
/// own). The host opens a connection per concurrent call, so methods taking `&self`
/// may run at the same time on several threads: hence `Sync`, and interior
/// mutability behind a lock for anything they change. Methods taking `&mut self`
/// (`initialize`, `cleanup`) run alone: they wait for every call and stream in
/// flight to end, and calls arriving meanwhile wait for them.
///
/// A panic in a method called for a request becomes an error answer (500), and the
/// worker keeps serving the same instance.
pub trait Plugin: Send + Sync + 'static {
    /// Unique plugin identifier. Read once, when the worker starts.
    fn name(&self) -> &str;

    /// Semantic version string. Read once, when the worker starts.
    fn version(&self) -> &str;

    /// Initialize or re-configure, on every `POST /initialize`. `config` has been
    /// checked against [`config_schema`](Self::config_schema) already, by the worker
    /// or by the host that started it (a configuration that breaks the schema is
    /// refused with 400 and never gets here); keys the caller left out are absent, so
    /// defaults are the plugin's to fill in. On error the plugin must keep its
    /// previous configuration.
    fn initialize(&mut self, config: ConfigMap) -> Result<(), PluginError>;

    /// The plugin's main functionality: one `POST /execute`. The result is sent as
    /// JSON; an error goes back with its [`kind`](PluginError::kind) and message.
    fn execute(&self, call: Call) -> Result<Value, PluginError>;

    /// Results chunk by chunk (`POST /execute_stream`, one NDJSON line per chunk).
    /// An error returned here, before any chunk, fails the call as `execute` would;
    /// an `Err` item ends the stream with an error line. The iterator is dropped
    /// when the host goes away. A plugin that does not stream yields its `execute`
    /// result once.
    fn execute_stream(&self, call: Call) -> Result<ChunkIter<'_>, PluginError> {
        let result = self.execute(call)?;
        Ok(Box::new(std::iter::once(Ok(result))))
    }

    /// JSON Schema of the configuration (`{}` when the plugin has none). Asked for
    /// when the worker starts (a root that cannot describe an object stops it there;
    /// a schema broken deeper refuses every configuration) and on
    /// `GET /config_schema`, so it should be cheap and always the same.
    fn config_schema(&self) -> Value {
        Value::Object(ConfigMap::new())
    }

    /// The configuration in force (`{}` when the plugin has none), on `GET /config`.
    fn current_config(&self) -> Value {
        Value::Object(ConfigMap::new())
    }

    /// Release what the plugin holds (models, GPU memory) before the worker stops:
    /// once, on `POST /cleanup` or on SIGTERM, whichever comes first.
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
