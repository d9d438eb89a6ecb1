//! Task adapters, the original 0.0.46's typed task channel: a plugin (the "tool")
//! serves named tasks (`"graph-storage"`, `"transcription"`) through adapters bound
//! to it, each a set of named methods with named parameters. A host calls one with
//! `POST /task {"task", "method", "kwargs", "envelope"}`; `/structural_surface`
//! lists them, so that hosts can match them without loading the plugin.
//!
//! ```
//! use cjm_interface::{Call, ConfigMap, Plugin, PluginError};
//! use cjm_worker::{TaskAdapter, TaskAdapters, TaskMethod};
//! use serde_json::{json, Value};
//!
//! struct Counter;
//! impl Plugin for Counter {
//!     fn name(&self) -> &str { "counter" }
//!     fn version(&self) -> &str { "0.1.0" }
//!     fn initialize(&mut self, _config: ConfigMap) -> Result<(), PluginError> { Ok(()) }
//!     fn execute(&self, _call: Call) -> Result<Value, PluginError> { Ok(json!(null)) }
//! }
//!
//! /// The "counting" task, served by `Counter`.
//! struct Counting;
//! impl TaskAdapter<Counter> for Counting {
//!     fn task_name(&self) -> &str { "counting" }
//!     fn methods(&self) -> Vec<TaskMethod> {
//!         vec![TaskMethod::new("count_words", &["text"])]
//!     }
//!     fn call(&self, _plugin: &Counter, method: &str, call: Call) -> Result<Value, PluginError> {
//!         match method {
//!             "count_words" => {
//!                 let text: String = call.kwarg("text")?;
//!                 Ok(json!({"words": text.split_whitespace().count()}))
//!             }
//!             // Never reached: the worker answers 404 for a method not listed.
//!             other => Err(PluginError::invalid_argument(format!("no method {other}"))),
//!         }
//!     }
//! }
//!
//! let adapters = TaskAdapters::new().with(Counting);
//! assert_eq!(adapters.tasks(), ["counting"]);
//! // In the plugin's main: cjm_worker::main_with_adapters(about, adapters, make_plugin)
//! ```

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cjm_interface::envelope::{TaskRequest, KIND_UNKNOWN_TASK, TASK_ACCOUNT};
use cjm_interface::{json, wire, Call, Plugin, PluginError};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::ResponseBody;
use crate::host::guarded;
use crate::request::answer_off_io;
use crate::respond::{bytes_response, error_response, failure_response, refused_response};
use crate::state::Worker;

/// One method of a task adapter: its name and its parameters' names, in order (what
/// a host matches an adapter's protocol against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMethod {
    /// The method's name; one starting with `_` is never served.
    pub name: String,
    /// Its parameters' names.
    pub params: Vec<String>,
}

impl TaskMethod {
    /// Method `name` with parameters `params`.
    pub fn new(name: impl Into<String>, params: &[&str]) -> Self {
        TaskMethod {
            name: name.into(),
            params: params.iter().map(|param| (*param).to_owned()).collect(),
        }
    }
}

/// A task served by plugin type `P`: the typed half of the original's "capability
/// unit" split. The worker calls [`call`](Self::call) only for a method that
/// [`methods`](Self::methods) lists, with the plugin shared as for `execute`
/// (several calls may run at once), panics caught, and the call's control (progress,
/// cancellation, [`job_id`](Call::job_id)) in `call`.
pub trait TaskAdapter<P: Plugin>: Send + Sync + 'static {
    /// The task's name, such as `"graph-storage"`.
    fn task_name(&self) -> &str;

    /// The methods it serves. Read once, when the worker starts.
    fn methods(&self) -> Vec<TaskMethod>;

    /// Run `method` on `plugin` with the call's keyword arguments (`call.kwargs`;
    /// `call.kwarg::<T>("name")` reads one typed).
    fn call(&self, plugin: &P, method: &str, call: Call) -> Result<Value, PluginError>;
}

/// The task adapters a worker serves, each bound to the plugin type it was written
/// for ([`serve`](crate::serve) refuses adapters of another plugin type).
#[derive(Clone, Default)]
pub struct TaskAdapters {
    bound: Vec<Arc<dyn Bound>>,
}

impl fmt::Debug for TaskAdapters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.tasks()).finish()
    }
}

impl TaskAdapters {
    /// No adapters.
    pub fn new() -> Self {
        TaskAdapters::default()
    }

    /// These adapters and `adapter`.
    pub fn with<P: Plugin>(mut self, adapter: impl TaskAdapter<P>) -> Self {
        let task = adapter.task_name().to_owned();
        let methods = adapter.methods();
        self.bound.push(Arc::new(Typed {
            adapter,
            task,
            methods,
            plugin: PhantomData,
        }));
        self
    }

    /// The tasks, in the order they were added.
    pub fn tasks(&self) -> Vec<&str> {
        self.bound.iter().map(|bound| bound.task()).collect()
    }

    pub(crate) fn find(&self, task: &str) -> Option<&dyn Bound> {
        self.bound
            .iter()
            .find(|bound| bound.task() == task)
            .map(|bound| &**bound)
    }

    /// Refuse what cannot be served: an adapter of another plugin type, a task
    /// without a name or bound twice, a method without a name or twice in a task.
    pub(crate) fn check_for<P: Plugin>(&self) -> Result<(), TaskAdapterError> {
        let mut seen: Vec<&str> = Vec::new();
        for bound in &self.bound {
            let task = bound.task();
            if bound.plugin_type() != TypeId::of::<P>() {
                return Err(TaskAdapterError::OtherPlugin {
                    task: task.to_owned(),
                    written_for: bound.plugin_type_name(),
                    served: std::any::type_name::<P>(),
                });
            }
            if task.is_empty() {
                return Err(TaskAdapterError::Unnamed);
            }
            if seen.contains(&task) {
                return Err(TaskAdapterError::BoundTwice(task.to_owned()));
            }
            seen.push(task);
            let mut names: Vec<&str> = Vec::new();
            for method in bound.methods() {
                if method.name.is_empty() || method.name.starts_with('_') {
                    return Err(TaskAdapterError::BadMethod {
                        task: task.to_owned(),
                        method: method.name.clone(),
                    });
                }
                if names.contains(&method.name.as_str()) {
                    return Err(TaskAdapterError::BadMethod {
                        task: task.to_owned(),
                        method: method.name.clone(),
                    });
                }
                names.push(&method.name);
            }
        }
        Ok(())
    }

    /// The adapters in `/structural_surface`: each task with its methods.
    pub(crate) fn surface(&self) -> Vec<Value> {
        self.bound
            .iter()
            .map(|bound| {
                json!({
                    "task_name": bound.task(),
                    "methods": bound.methods().iter().map(method_surface).collect::<Vec<_>>(),
                })
            })
            .collect()
    }

    /// Every adapter method, in the original's surface shape (`name`, `signature`,
    /// `params`): what an adapter manifest's protocol members are matched against.
    pub(crate) fn surface_methods(&self) -> Vec<Value> {
        self.bound
            .iter()
            .flat_map(|bound| bound.methods().iter().map(method_surface))
            .collect()
    }
}

fn method_surface(method: &TaskMethod) -> Value {
    let mut signature = vec![String::from("self")];
    signature.extend(method.params.iter().cloned());
    json!({
        "name": method.name,
        "signature": format!("({})", signature.join(", ")),
        "params": method.params,
    })
}

/// Task adapters a worker cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskAdapterError {
    /// The adapter was written for another plugin type.
    #[error("task adapter {task:?} is written for plugin type {written_for}, not {served}")]
    OtherPlugin {
        /// Its task.
        task: String,
        /// The plugin type it takes.
        written_for: &'static str,
        /// The plugin type served.
        served: &'static str,
    },
    /// An adapter's `task_name` is empty.
    #[error("a task adapter has an empty task_name")]
    Unnamed,
    /// Two adapters serve one task.
    #[error("task {0:?} has two adapters; one task, one adapter")]
    BoundTwice(String),
    /// A method's name is empty, starts with `_`, or is listed twice.
    #[error("task {task:?}: method name {method:?} is empty, starts with '_' or is listed twice")]
    BadMethod {
        /// The task.
        task: String,
        /// The method's name.
        method: String,
    },
}

/// An adapter with its plugin type erased.
pub(crate) trait Bound: Send + Sync {
    fn task(&self) -> &str;
    fn methods(&self) -> &[TaskMethod];
    fn plugin_type(&self) -> TypeId;
    fn plugin_type_name(&self) -> &'static str;
    fn call(&self, plugin: &dyn Any, method: &str, call: Call) -> Result<Value, PluginError>;
}

struct Typed<P, A> {
    adapter: A,
    task: String,
    methods: Vec<TaskMethod>,
    plugin: PhantomData<fn(&P)>,
}

impl<P: Plugin, A: TaskAdapter<P>> Bound for Typed<P, A> {
    fn task(&self) -> &str {
        &self.task
    }

    fn methods(&self) -> &[TaskMethod] {
        &self.methods
    }

    fn plugin_type(&self) -> TypeId {
        TypeId::of::<P>()
    }

    fn plugin_type_name(&self) -> &'static str {
        std::any::type_name::<P>()
    }

    fn call(&self, plugin: &dyn Any, method: &str, call: Call) -> Result<Value, PluginError> {
        // `serve` checked every adapter's plugin type against the one it serves.
        let Some(plugin) = plugin.downcast_ref::<P>() else {
            return Err(PluginError::failed(format!(
                "task adapter {:?} is written for plugin type {}",
                self.task,
                std::any::type_name::<P>()
            )));
        };
        self.adapter.call(plugin, method, call)
    }
}

/// `POST /task`: the body is read on the I/O thread, the adapter runs off it (as
/// `/execute`). 404 for a task or method not served, naming what is.
pub(crate) async fn task(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let id = crate::task::call_id(&request);
    answer_off_io(worker, request, move |worker, asked: TaskRequest| {
        run_task(worker, id, asked)
    })
    .await
}

fn run_task(worker: &Worker, id: Option<String>, asked: TaskRequest) -> Response<ResponseBody> {
    let task = asked.task.unwrap_or_default();
    let method = asked.method.unwrap_or_default();
    let Some(adapter) = worker.adapters.find(&task) else {
        return error_response(
            StatusCode::NOT_FOUND,
            format!(
                "No adapter bound for task {task:?} (bound: {:?})",
                worker.adapters.tasks()
            ),
            Some(KIND_UNKNOWN_TASK),
        );
    };
    if !adapter.methods().iter().any(|known| known.name == method) {
        let known: Vec<&str> = adapter.methods().iter().map(|m| m.name.as_str()).collect();
        return error_response(
            StatusCode::NOT_FOUND,
            format!("Task {task:?} adapter has no method {method:?} (methods: {known:?})"),
            Some(KIND_UNKNOWN_TASK),
        );
    }
    let running = match worker.calls.start_with(id, asked.envelope) {
        Ok(running) => running,
        Err(refused) => return refused_response(worker, &refused),
    };
    let control = running.control();
    let started = Instant::now();
    let io = crate::io_counters::mark();
    let result = {
        let _span = crate::log_lines::call_span(&control).entered();
        let _attributed = crate::output::attribute(control.id());
        let call = Call::new(Vec::new(), asked.kwargs).with_control(control.clone());
        let plugin = worker.host.read_any();
        guarded(|| adapter.call(&*plugin, &method, call))
    };
    drop(running);
    // The worker's own account of every task call, as the original records it.
    let mut account = Map::new();
    account.insert(String::from("task"), json!(task));
    account.insert(String::from("method"), json!(method));
    account.insert(String::from("ok"), json!(result.is_ok()));
    let seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    account.insert(String::from("duration_s"), json!(seconds));
    // As the successor's worker: what the call read and wrote, on success only.
    if let (Ok(_), Some(io)) = (&result, io.since()) {
        account.insert(String::from("io"), io);
    }
    if let Err(failure) = &result {
        let category = failure.as_plugin_error().0.category();
        account.insert(String::from("error_category"), json!(category.as_str()));
    }
    control.record_account(TASK_ACCOUNT, account);
    let mut response = match result {
        Ok(value) => bytes_response(
            StatusCode::OK,
            wire::CONTENT_TYPE_JSON,
            Bytes::from(json::to_vec(&value)),
        ),
        Err(failure) => failure_response(worker, &failure),
    };
    crate::envelope::attach_accounts(&mut response, &control);
    response
}

#[cfg(test)]
mod tests {
    use cjm_interface::ConfigMap;

    use super::*;

    struct One;
    struct Other;

    macro_rules! plugin {
        ($type:ident) => {
            impl Plugin for $type {
                fn name(&self) -> &str {
                    stringify!($type)
                }
                fn version(&self) -> &str {
                    "0"
                }
                fn initialize(&mut self, _config: ConfigMap) -> Result<(), PluginError> {
                    Ok(())
                }
                fn execute(&self, _call: Call) -> Result<Value, PluginError> {
                    Ok(Value::Null)
                }
            }
        };
    }
    plugin!(One);
    plugin!(Other);

    struct Named(&'static str, Vec<TaskMethod>);

    impl<P: Plugin> TaskAdapter<P> for Named {
        fn task_name(&self) -> &str {
            self.0
        }
        fn methods(&self) -> Vec<TaskMethod> {
            self.1.clone()
        }
        fn call(&self, _plugin: &P, method: &str, call: Call) -> Result<Value, PluginError> {
            Ok(json!({"method": method, "kwargs": call.kwargs, "job": call.job_id()}))
        }
    }

    fn ok() -> Vec<TaskMethod> {
        vec![TaskMethod::new("find", &["word"])]
    }

    #[test]
    fn adapters_a_worker_cannot_serve_are_refused_naming_why() {
        let good = TaskAdapters::new().with::<One>(Named("search", ok()));
        assert_eq!(good.check_for::<One>(), Ok(()));
        let err = good.check_for::<Other>().unwrap_err();
        assert!(matches!(&err, TaskAdapterError::OtherPlugin { task, .. } if task == "search"));
        assert!(
            err.to_string().contains("One") && err.to_string().contains("Other"),
            "{err}"
        );
        let twice = good.clone().with::<One>(Named("search", ok()));
        assert_eq!(
            twice.check_for::<One>(),
            Err(TaskAdapterError::BoundTwice(String::from("search")))
        );
        let unnamed = TaskAdapters::new().with::<One>(Named("", ok()));
        assert_eq!(unnamed.check_for::<One>(), Err(TaskAdapterError::Unnamed));
        for bad in ["", "_hidden"] {
            let adapters =
                TaskAdapters::new().with::<One>(Named("t", vec![TaskMethod::new(bad, &[])]));
            assert!(matches!(
                adapters.check_for::<One>(),
                Err(TaskAdapterError::BadMethod { method, .. }) if method == bad
            ));
        }
        let repeated = TaskAdapters::new().with::<One>(Named("t", [ok(), ok()].concat()));
        assert!(repeated.check_for::<One>().is_err());
    }

    #[test]
    fn an_adapter_gets_its_plugin_and_the_calls_envelope() {
        let adapters = TaskAdapters::new().with::<One>(Named("search", ok()));
        let bound = adapters.find("search").unwrap();
        assert!(adapters.find("other").is_none());
        let mut kwargs = ConfigMap::new();
        kwargs.insert(String::from("word"), json!("x"));
        let envelope = cjm_interface::envelope::CallEnvelope::for_job("s-3", 1);
        let control = cjm_interface::CallControl::with_envelope("c", Some(envelope));
        let call = Call::new(Vec::new(), kwargs).with_control(control);
        let answer = bound.call(&One, "find", call).unwrap();
        assert_eq!(
            answer,
            json!({"method": "find", "kwargs": {"word": "x"}, "job": "s-3"})
        );
        // Another plugin type is an error, never a wrong cast.
        assert!(bound.call(&Other, "find", Call::default()).is_err());
        let surface = adapters.surface_methods();
        assert_eq!(surface[0]["params"], json!(["word"]));
        assert_eq!(surface[0]["signature"], "(self, word)");
    }
}
