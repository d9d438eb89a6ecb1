use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::{CallControl, ConfigMap, FileBacked, PluginError};

/// One execution as a plugin receives it: positional `args` and keyword `kwargs`, as
/// a Python caller of the original would pass them, and the call's [`CallControl`]
/// for reporting progress and noticing cancellation.
///
/// ```
/// use cjm_interface::{Call, PluginError};
/// use serde_json::{json, Value};
///
/// fn execute(call: Call) -> Result<Value, PluginError> {
///     let steps: u32 = call.or(0, "steps", 3)?;
///     for step in 0..steps {
///         call.check_cancelled()?; // stops here once the host cancels
///         call.report_progress(f64::from(step) / f64::from(steps), format!("step {step}"));
///     }
///     Ok(json!({"done": steps}))
/// }
/// assert_eq!(execute(Call::default()).unwrap(), json!({"done": 3}));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: ConfigMap,
    control: CallControl,
    /// The envelope the body came with, until the worker makes the call's control.
    envelope: Option<crate::envelope::CallEnvelope>,
}

impl PartialEq for Call {
    /// Equal arguments; the controls do not count.
    fn eq(&self, other: &Self) -> bool {
        self.args == other.args && self.kwargs == other.kwargs
    }
}

impl Call {
    /// A call with these arguments and a control nobody watches.
    pub fn new(args: Vec<Value>, kwargs: ConfigMap) -> Self {
        Call {
            args,
            kwargs,
            control: CallControl::default(),
            envelope: None,
        }
    }

    /// The envelope the call's body came with (the worker moves it into the call's
    /// control: plugins read it there, [`CallControl::job_id`]).
    pub fn take_envelope(&mut self) -> Option<crate::envelope::CallEnvelope> {
        self.envelope.take()
    }

    /// This call, run under `control` (the worker gives every call one).
    pub fn with_control(mut self, control: CallControl) -> Self {
        self.control = control;
        self
    }

    /// A handle on this call's progress and cancellation, to move into threads or
    /// keep in a stream's iterator.
    pub fn control(&self) -> CallControl {
        self.control.clone()
    }

    /// The job the call runs for, when the host runs it as one (see
    /// [`CallControl::job_id`]).
    pub fn job_id(&self) -> Option<&str> {
        self.control.job_id()
    }

    /// Report how far the call has got (see [`CallControl::report_progress`]).
    pub fn report_progress(&self, fraction: f64, message: impl Into<String>) {
        self.control.report_progress(fraction, message);
    }

    /// `Err` once the host asked the call to stop; propagate it with `?`.
    pub fn check_cancelled(&self) -> Result<(), PluginError> {
        self.control.check_cancelled()
    }

    /// Whether the host asked the call to stop.
    pub fn is_cancelled(&self) -> bool {
        self.control.is_cancelled()
    }

    /// The parameter at `position` or named `name`, as Python binds `def f(a, b=..)`.
    /// Absent and `null` both give `None`.
    pub fn optional<T: DeserializeOwned>(
        &self,
        position: usize,
        name: &str,
    ) -> Result<Option<T>, PluginError> {
        let value = match (self.args.get(position), self.kwargs.get(name)) {
            (Some(_), Some(_)) => return Err(multiple_values(name)),
            (Some(value), None) | (None, Some(value)) => value,
            (None, None) => return Ok(None),
        };
        if value.is_null() {
            return Ok(None);
        }
        T::deserialize(value)
            .map(Some)
            .map_err(|err| bad_argument(name, &err))
    }

    /// [`optional`](Self::optional), moving the value out of the call instead of
    /// copying it: a large string or array argument costs nothing to take. What is
    /// left in its place reads as `null`.
    pub fn take_optional<T: DeserializeOwned>(
        &mut self,
        position: usize,
        name: &str,
    ) -> Result<Option<T>, PluginError> {
        let slot = match (self.args.get_mut(position), self.kwargs.get_mut(name)) {
            (Some(_), Some(_)) => return Err(multiple_values(name)),
            (Some(slot), None) | (None, Some(slot)) => slot,
            (None, None) => return Ok(None),
        };
        if slot.is_null() {
            return Ok(None);
        }
        serde_json::from_value(slot.take())
            .map(Some)
            .map_err(|err| bad_argument(name, &err))
    }

    /// [`required`](Self::required), moving the value out (see
    /// [`take_optional`](Self::take_optional)).
    pub fn take_required<T: DeserializeOwned>(
        &mut self,
        position: usize,
        name: &str,
    ) -> Result<T, PluginError> {
        self.take_optional(position, name)?
            .ok_or_else(|| missing(name))
    }

    /// A keyword argument that must be given (a task adapter's calls have keyword
    /// arguments only).
    pub fn kwarg<T: DeserializeOwned>(&self, name: &str) -> Result<T, PluginError> {
        self.required(usize::MAX, name)
    }

    /// A parameter that must be given.
    pub fn required<T: DeserializeOwned>(
        &self,
        position: usize,
        name: &str,
    ) -> Result<T, PluginError> {
        self.optional(position, name)?.ok_or_else(|| missing(name))
    }

    /// A parameter with a default.
    pub fn or<T: DeserializeOwned>(
        &self,
        position: usize,
        name: &str,
        default: T,
    ) -> Result<T, PluginError> {
        Ok(self.optional(position, name)?.unwrap_or(default))
    }

    /// Refuse keyword arguments the plugin does not know, naming them.
    pub fn reject_unknown_kwargs(&self, known: &[&str]) -> Result<(), PluginError> {
        let unknown: Vec<&str> = self
            .kwargs
            .keys()
            .map(String::as_str)
            .filter(|key| !known.contains(key))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(PluginError::invalid_argument(format!(
                "unexpected keyword argument(s) {unknown:?}; known: {known:?}"
            )))
        }
    }
}

/// The body of `/execute` and `/execute_stream`, parsed: both parts are optional.
impl<'de> Deserialize<'de> for Call {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let request = crate::wire::ExecuteRequest::deserialize(deserializer)?;
        let mut call = Call::new(request.args, request.kwargs);
        call.envelope = request.envelope;
        Ok(call)
    }
}

/// One argument of a host-side call.
#[derive(Clone)]
pub enum Arg {
    /// Travels inline as JSON.
    Value(Value),
    /// Travels as the path of a temporary file the host writes and later removes.
    File(Arc<dyn FileBacked>),
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Value(value) => f.debug_tuple("Value").field(value).finish(),
            Arg::File(file) => f
                .debug_tuple("File")
                .field(&format_args!("<file-backed{}>", file.file_suffix()))
                .finish(),
        }
    }
}

impl<T: Into<Value>> From<T> for Arg {
    fn from(value: T) -> Self {
        Arg::Value(value.into())
    }
}

/// The arguments of a host-side call, built up fluently:
/// `CallArgs::new().arg("hello").kwarg("repeat", 2).file_kwarg("file_path", bytes)`.
#[derive(Debug, Clone, Default)]
pub struct CallArgs {
    /// Positional arguments, in order.
    pub args: Vec<Arg>,
    /// Keyword arguments, in the order given; a name given twice counts once, with
    /// its last value.
    pub kwargs: Vec<(String, Arg)>,
}

impl CallArgs {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plain JSON arguments, as `cjm-ctl exec --args/--kwargs` takes them.
    pub fn from_json(args: Vec<Value>, kwargs: ConfigMap) -> Self {
        CallArgs {
            args: args.into_iter().map(Arg::Value).collect(),
            kwargs: kwargs
                .into_iter()
                .map(|(name, value)| (name, Arg::Value(value)))
                .collect(),
        }
    }

    /// These arguments and one more positional one.
    pub fn arg(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// These arguments and keyword argument `name`.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<Arg>) -> Self {
        self.kwargs.push((name.into(), value.into()));
        self
    }

    /// These arguments and one more positional one that travels as a file.
    pub fn file_arg(self, file: impl FileBacked + 'static) -> Self {
        self.arg(Arg::File(Arc::new(file)))
    }

    /// These arguments and keyword argument `name`, travelling as a file.
    pub fn file_kwarg(self, name: impl Into<String>, file: impl FileBacked + 'static) -> Self {
        self.kwarg(name, Arg::File(Arc::new(file)))
    }

    /// Whether any argument travels as a file.
    pub fn has_files(&self) -> bool {
        self.args
            .iter()
            .chain(self.kwargs.iter().map(|(_, arg)| arg))
            .any(|arg| matches!(arg, Arg::File(_)))
    }
}

fn missing(name: &str) -> PluginError {
    PluginError::invalid_argument(format!("missing required argument '{name}'"))
}

fn multiple_values(name: &str) -> PluginError {
    PluginError::invalid_argument(format!("got multiple values for argument '{name}'"))
}

/// An argument of the wrong shape. serde's message shows the value it got; a payload
/// of megabytes is cut short.
fn bad_argument(name: &str, err: &serde_json::Error) -> PluginError {
    const SHOWN: usize = 200;
    let mut reason = err.to_string();
    if reason.len() > SHOWN {
        let mut end = SHOWN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    PluginError::invalid_argument(format!("argument '{name}': {reason}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ErrorKind;

    fn call(body: Value) -> Call {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn binds_positional_then_keyword_like_python() {
        let c = call(json!({"args": ["hi"], "kwargs": {"repeat": 3}}));
        assert_eq!(c.required::<String>(0, "text").unwrap(), "hi");
        assert_eq!(c.or::<u32>(1, "repeat", 1).unwrap(), 3);
        assert_eq!(c.optional::<String>(2, "file_path").unwrap(), None);
    }

    #[test]
    fn absent_body_parts_default_to_empty() {
        let c = call(json!({}));
        assert!(c.args.is_empty() && c.kwargs.is_empty());
        assert_eq!(c.or::<u32>(0, "repeat", 7).unwrap(), 7);
    }

    #[test]
    fn null_is_absent() {
        let c = call(json!({"kwargs": {"file_path": null}}));
        assert_eq!(c.optional::<String>(0, "file_path").unwrap(), None);
    }

    #[test]
    fn errors_name_the_argument() {
        let c = call(json!({"args": ["x"], "kwargs": {"text": "y", "repeat": "many"}}));
        let twice = c.required::<String>(0, "text").unwrap_err();
        assert_eq!(twice.kind(), ErrorKind::InvalidArgument);
        assert!(twice
            .message()
            .contains("multiple values for argument 'text'"));
        let wrong_type = c.or::<u32>(1, "repeat", 1).unwrap_err();
        assert!(wrong_type.message().contains("'repeat'"), "{wrong_type}");
        let missing = call(json!({})).required::<String>(0, "text").unwrap_err();
        assert!(missing
            .message()
            .contains("missing required argument 'text'"));
    }

    #[test]
    fn taking_moves_the_value_out_without_copying_it() {
        let mut c = call(json!({"args": ["x".repeat(1000)], "kwargs": {"n": 3}}));
        let held = c.args[0].as_str().unwrap().as_ptr();
        let text: String = c.take_required(0, "text").unwrap();
        assert_eq!(text.as_ptr(), held);
        assert_eq!(c.take_optional::<String>(0, "text").unwrap(), None);
        assert_eq!(c.take_required::<u32>(1, "n").unwrap(), 3);
        let missing = c.take_required::<u32>(1, "n").unwrap_err();
        assert!(missing.message().contains("missing required argument 'n'"));
    }

    #[test]
    fn taking_a_wrong_type_or_a_duplicate_names_the_argument() {
        let mut c = call(json!({"args": [1, "a"], "kwargs": {"text": "b"}}));
        let wrong = c.take_required::<String>(0, "count").unwrap_err();
        assert_eq!(wrong.kind(), ErrorKind::InvalidArgument);
        assert!(wrong.message().contains("argument 'count'"), "{wrong}");
        assert!(wrong.message().contains("expected a string"), "{wrong}");
        let twice = c.take_required::<String>(1, "text").unwrap_err();
        assert!(twice
            .message()
            .contains("multiple values for argument 'text'"));
        assert_eq!(c.args[1], "a", "a refused duplicate stays in place");
    }

    #[test]
    fn a_huge_wrong_argument_is_shown_cut_short() {
        let c = call(json!({"args": ["x".repeat(1_000_000)]}));
        let err = c.required::<u32>(0, "count").unwrap_err();
        assert!(err.message().len() < 400, "{}", err.message().len());
        assert!(err.message().contains("xxx..."), "{err}");
    }

    #[test]
    fn unknown_kwargs_are_named() {
        let c = call(json!({"kwargs": {"text": "a", "colour": 1}}));
        let err = c.reject_unknown_kwargs(&["text", "repeat"]).unwrap_err();
        assert!(err.message().contains("colour"), "{err}");
    }

    #[test]
    fn call_args_report_file_arguments() {
        let plain = CallArgs::new().arg("a").kwarg("n", 2);
        assert!(!plain.has_files());
        assert!(plain.file_kwarg("f", b"data".to_vec()).has_files());
    }
}
