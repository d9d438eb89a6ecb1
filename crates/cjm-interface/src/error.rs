use std::fmt;

/// What went wrong inside a plugin, as the plugin reports it.
///
/// The worker turns it into the protocol's `{"detail": ..}` error body; `kind`
/// travels beside it as an extension field that peers of the original ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    kind: ErrorKind,
    message: String,
}

/// The broad class of a [`PluginError`]. It travels as the `kind` field of the error
/// body; the status stays the original's (400 from `/initialize`, 500 from `/execute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed arguments the plugin cannot use.
    InvalidArgument,
    /// A configuration was refused; the plugin keeps its previous one.
    InvalidConfig,
    /// The plugin tried and failed.
    Failed,
}

impl ErrorKind {
    /// The stable name used in the wire protocol's `kind` extension field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Failed => "failed",
        }
    }
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<std::io::Error> for PluginError {
    fn from(err: std::io::Error) -> Self {
        PluginError::failed(err.to_string())
    }
}
