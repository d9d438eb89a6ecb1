use std::fmt;

use serde_json::Value;

/// A schema that cannot serve as a configuration schema: not valid JSON Schema, a
/// `$ref` that does not resolve offline, or a root that cannot describe an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    reason: String,
}

impl SchemaError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        SchemaError {
            reason: reason.into(),
        }
    }

    /// What is wrong with the schema, without the leading "not a valid ...".
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid config schema: {}", self.reason)
    }
}

impl std::error::Error for SchemaError {}

/// One way in which a configuration breaks its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Where, as `key`, `key.sub` or `list[2]`; empty for the configuration itself.
    pub path: String,
    /// The JSON Schema keyword broken (`minimum`, `type`, `additionalProperties`, ...).
    pub keyword: String,
    /// The offending value.
    pub value: Value,
    /// What is wrong, e.g. `0 is less than the minimum of 1`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A configuration refused by its schema, with every violation found.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidConfig {
    violations: Vec<Violation>,
}

impl InvalidConfig {
    /// `violations` must not be empty: an invalid configuration breaks something.
    pub(crate) fn new(violations: Vec<Violation>) -> Self {
        debug_assert!(!violations.is_empty());
        InvalidConfig { violations }
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        for (index, violation) in self.violations.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

/// Why a typed configuration could not be made from JSON, or JSON from it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration breaks the schema (or does not fit the type).
    Invalid(InvalidConfig),
    /// The schema of a config type or field does not compile: a bug in its
    /// declaration. `of` names it (`config type X`, `field y`).
    Schema { of: String, source: SchemaError },
    /// The config type did not serialise to a JSON object.
    NotAnObject { type_name: String, found: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid(invalid) => write!(f, "{invalid}"),
            ConfigError::Schema { of, source } => write!(f, "the schema of {of} is {source}"),
            ConfigError::NotAnObject { type_name, found } => {
                write!(
                    f,
                    "config type {type_name} must serialise to a JSON object, got {found}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Invalid(invalid) => Some(invalid),
            ConfigError::Schema { source, .. } => Some(source),
            ConfigError::NotAnObject { .. } => None,
        }
    }
}

impl From<InvalidConfig> for ConfigError {
    fn from(invalid: InvalidConfig) -> Self {
        ConfigError::Invalid(invalid)
    }
}
