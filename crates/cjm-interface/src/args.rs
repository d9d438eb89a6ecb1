use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::{ConfigMap, FileBacked, PluginError};

/// The arguments of one execution as a plugin receives them: positional `args` and
/// keyword `kwargs`, as a Python caller of the original would pass them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    pub args: Vec<Value>,
    pub kwargs: ConfigMap,
}

impl Call {
    pub fn new(args: Vec<Value>, kwargs: ConfigMap) -> Self {
        Call { args, kwargs }
    }

    /// The parameter at `position` or named `name`, as Python binds `def f(a, b=..)`.
    /// Absent and `null` both give `None`.
    pub fn optional<T: DeserializeOwned>(
        &self,
        position: usize,
        name: &str,
    ) -> Result<Option<T>, PluginError> {
        let positional = self.args.get(position);
        let keyword = self.kwargs.get(name);
        let value = match (positional, keyword) {
            (Some(_), Some(_)) => {
                return Err(PluginError::invalid_argument(format!(
                    "got multiple values for argument '{name}'"
                )))
            }
            (Some(value), None) | (None, Some(value)) => value,
            (None, None) => return Ok(None),
        };
        if value.is_null() {
            return Ok(None);
        }
        T::deserialize(value).map(Some).map_err(|err| {
            PluginError::invalid_argument(format!("argument '{name}' ({value}): {err}"))
        })
    }

    /// A parameter that must be given.
    pub fn required<T: DeserializeOwned>(
        &self,
        position: usize,
        name: &str,
    ) -> Result<T, PluginError> {
        self.optional(position, name)?.ok_or_else(|| {
            PluginError::invalid_argument(format!("missing required argument '{name}'"))
        })
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
        Ok(Call {
            args: request.args,
            kwargs: request.kwargs,
        })
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
    pub args: Vec<Arg>,
    pub kwargs: Vec<(String, Arg)>,
}

impl CallArgs {
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

    pub fn arg(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<Arg>) -> Self {
        self.kwargs.push((name.into(), value.into()));
        self
    }

    pub fn file_arg(self, file: impl FileBacked + 'static) -> Self {
        self.arg(Arg::File(Arc::new(file)))
    }

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
