use std::fmt;

/// What went wrong inside a plugin, as the plugin reports it.
///
/// The worker turns it into the protocol's error body: `detail` (the message),
/// `kind` (our extension) and `_job_error` (the original's typed error, 0.0.21 on),
/// whose `category` tells a host whether trying again may help. The status follows
/// the category: 400 for the caller's mistakes, 409 for a cancelled call, 500 for
/// the rest.
///
/// It displays as its message alone and has no [`source`](std::error::Error::source):
/// what caused it (an I/O error, a library's error) is part of the message, because
/// only the message crosses the process boundary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    kind: ErrorKind,
    message: String,
    retry_after_seconds: Option<f64>,
    fields_invalid: Vec<String>,
}

/// The class of a [`PluginError`]. It travels as the `kind` field of the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed arguments the plugin cannot use.
    InvalidArgument,
    /// A configuration was refused; the plugin keeps its previous one.
    InvalidConfig,
    /// The plugin tried and failed, and trying again will not help.
    Failed,
    /// A passing failure (a timeout, a busy service): trying again may help.
    Transient,
    /// Out of a resource (GPU memory, system memory, disk).
    Resource,
    /// The call was asked to stop and did.
    Cancelled,
}

/// The broad class of a failure, in the original's words (`JobError.category`):
/// what a host does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCategory {
    /// The caller's input (arguments, configuration, a missing file): fix it.
    UserInput,
    /// Temporary: trying again may succeed.
    Transient,
    /// Out of memory or another resource: free some, or wait.
    Resource,
    /// A bug or an unrecoverable state: trying again will not help.
    Fatal,
}

impl ErrorCategory {
    /// Every category, in order.
    pub const ALL: [ErrorCategory; 4] = [
        ErrorCategory::UserInput,
        ErrorCategory::Transient,
        ErrorCategory::Resource,
        ErrorCategory::Fatal,
    ];

    /// The original's name: `user_input`, `transient`, `resource`, `fatal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::UserInput => "user_input",
            ErrorCategory::Transient => "transient",
            ErrorCategory::Resource => "resource",
            ErrorCategory::Fatal => "fatal",
        }
    }

    /// The category of an original's name; `None` for a name it does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        ErrorCategory::ALL
            .into_iter()
            .find(|category| category.as_str() == name)
    }

    /// Whether the original counts errors of this category as safe to try again
    /// (`JobError.retriable`): all but `fatal`.
    pub fn retriable_by_default(self) -> bool {
        self != ErrorCategory::Fatal
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorKind {
    /// The stable name used in the wire protocol's `kind` extension field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Failed => "failed",
            ErrorKind::Transient => "transient",
            ErrorKind::Resource => "resource",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// The kind of a `kind` name; `None` for a name it does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ErrorKind::InvalidArgument,
            ErrorKind::InvalidConfig,
            ErrorKind::Failed,
            ErrorKind::Transient,
            ErrorKind::Resource,
            ErrorKind::Cancelled,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }

    /// The category errors of this kind belong to. A cancelled call is no failure
    /// to classify; as an error it counts as `fatal` (not to be tried again).
    pub fn category(self) -> ErrorCategory {
        match self {
            ErrorKind::InvalidArgument | ErrorKind::InvalidConfig => ErrorCategory::UserInput,
            ErrorKind::Transient => ErrorCategory::Transient,
            ErrorKind::Resource => ErrorCategory::Resource,
            ErrorKind::Failed | ErrorKind::Cancelled => ErrorCategory::Fatal,
        }
    }
}

impl PluginError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: message.into(),
            retry_after_seconds: None,
            fields_invalid: Vec::new(),
        }
    }

    /// The caller passed arguments the plugin cannot use (`user_input`).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// A configuration was refused (`user_input`).
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    /// The plugin failed for good (`fatal`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    /// A passing failure (`transient`): a host may try again.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// Out of a resource (`resource`).
    pub fn resource(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Resource, message)
    }

    /// The call stopped because it was asked to (see
    /// [`Call::check_cancelled`](crate::Call::check_cancelled)).
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }

    /// This error with a hint of how long to wait before trying again.
    pub fn with_retry_after(mut self, seconds: f64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// This error naming the inputs that were wrong.
    pub fn with_invalid_fields(
        mut self,
        fields: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.fields_invalid = fields.into_iter().map(Into::into).collect();
        self
    }

    /// The error's class.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error's category, as the host sees it.
    pub fn category(&self) -> ErrorCategory {
        self.kind.category()
    }

    /// Whether trying again may help (the original's default for the category).
    pub fn retriable(&self) -> bool {
        self.kind != ErrorKind::Cancelled && self.category().retriable_by_default()
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long to wait before trying again, when the plugin said.
    pub fn retry_after_seconds(&self) -> Option<f64> {
        self.retry_after_seconds
    }

    /// The inputs that were wrong, when the plugin said.
    pub fn fields_invalid(&self) -> &[String] {
        &self.fields_invalid
    }
}

impl From<std::io::Error> for PluginError {
    /// By the original's table: a missing or unreadable file is the caller's
    /// (`user_input`), an interrupted or timed-out one `transient`, out of space
    /// `resource`, anything else `fatal`.
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound | Io::PermissionDenied | Io::NotADirectory | Io::IsADirectory => {
                ErrorKind::InvalidArgument
            }
            Io::TimedOut
            | Io::Interrupted
            | Io::WouldBlock
            | Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted => ErrorKind::Transient,
            Io::OutOfMemory | Io::StorageFull | Io::QuotaExceeded => ErrorKind::Resource,
            _ => ErrorKind::Failed,
        };
        PluginError::new(kind, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_categories_round_trip_by_name() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::InvalidConfig,
            ErrorKind::Failed,
            ErrorKind::Transient,
            ErrorKind::Resource,
            ErrorKind::Cancelled,
        ] {
            assert_eq!(ErrorKind::from_name(kind.as_str()), Some(kind));
        }
        for category in ErrorCategory::ALL {
            assert_eq!(ErrorCategory::from_name(category.as_str()), Some(category));
        }
        assert_eq!(ErrorCategory::from_name("bogus"), None);
    }

    #[test]
    fn categories_follow_the_originals_table() {
        assert_eq!(
            PluginError::invalid_argument("x").category(),
            ErrorCategory::UserInput
        );
        assert!(PluginError::transient("x").retriable());
        assert!(!PluginError::failed("x").retriable());
        assert!(!PluginError::cancelled("x").retriable());
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(
            PluginError::from(missing).category(),
            ErrorCategory::UserInput
        );
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        assert_eq!(PluginError::from(full).category(), ErrorCategory::Resource);
    }

    /// Every clause of the chain once: no cause is both named and returned.
    fn assert_said_once(err: &(dyn std::error::Error + 'static)) -> String {
        let chain = crate::ErrorChain(err);
        assert_eq!(chain.repeated_clause(), None, "in {chain}");
        chain.to_string()
    }

    #[test]
    fn every_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "/data/a.wav: no such file");
        let err = PluginError::from(io);
        assert_eq!(assert_said_once(&err), "/data/a.wav: no such file");
        let err = PluginError::invalid_argument("argument 'n': expected u32");
        assert_eq!(assert_said_once(&err), "argument 'n': expected u32");
        let read = crate::body::BodyError::Read(std::io::Error::other("connection reset"));
        assert_eq!(assert_said_once(&read), "connection reset");
        let too_large = crate::body::BodyError::<std::io::Error>::TooLarge { limit: 4 };
        assert_eq!(
            assert_said_once(&too_large),
            "body exceeds the limit of 4 bytes"
        );
    }
}
