use std::fmt;

use serde_json::Value;

/// A schema that cannot serve as a configuration schema: not valid JSON Schema, a
/// `$ref` that does not resolve offline, or a root that cannot describe an object.
///
/// It displays as `not a valid config schema: <reason>`; the reason is the schema
/// compiler's message, so there is no [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid config schema: {reason}")]
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

/// One way in which a configuration breaks its schema.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
///
/// It displays as `invalid configuration: ` and the violations, `; ` between them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration: {}", join(violations))]
pub struct InvalidConfig {
    violations: Vec<Violation>,
}

fn join(violations: &[Violation]) -> String {
    let shown: Vec<String> = violations.iter().map(ToString::to_string).collect();
    shown.join("; ")
}

impl InvalidConfig {
    /// `violations` must not be empty: an invalid configuration breaks something.
    pub(crate) fn new(violations: Vec<Violation>) -> Self {
        debug_assert!(!violations.is_empty());
        InvalidConfig { violations }
    }

    /// Every violation, in the order the schema was checked.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The violations, taken out.
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

/// Why a typed configuration could not be made from JSON, or JSON from it.
///
/// Each variant says its cause in its own text and has no
/// [`source`](std::error::Error::source): a chain printer says it once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration breaks the schema (or does not fit the type). Displays as
    /// the [`InvalidConfig`] it holds.
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
    /// The schema of a config type or field does not compile: a bug in its
    /// declaration.
    #[error("the schema of {of} is {error}")]
    Schema {
        /// Whose schema: `config type X` or `field y`.
        of: String,
        /// What is wrong with it.
        error: SchemaError,
    },
    /// The config type did not serialise to a JSON object.
    #[error("config type {type_name} must serialise to a JSON object, got {found}")]
    NotAnObject {
        /// The Rust type's name.
        type_name: String,
        /// What it serialised to instead (or the serialiser's error).
        found: String,
    },
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use serde_json::json;

    use crate::{check_schema, config_to_dict, validate_field_value, ConfigValidator};

    /// Every clause of the chain once: no cause is both named and returned.
    fn assert_said_once(err: &(dyn Error + 'static)) -> String {
        let chain = cjm_interface::ErrorChain(err);
        assert_eq!(chain.repeated_clause(), None, "in {chain}");
        chain.to_string()
    }

    #[test]
    fn every_cause_is_said_once() {
        let validator = ConfigValidator::new(&json!({
            "type": "object",
            "properties": {"level": {"type": "integer", "maximum": 9}},
        }))
        .unwrap();
        let invalid = validator.validate(&json!({"level": 12})).unwrap_err();
        assert_eq!(
            assert_said_once(&invalid),
            "invalid configuration: level: 12 is greater than the maximum of 9"
        );

        let field = json!({"type": "integer", "maximum": 9});
        let wrapped = validate_field_value(&json!(12), &field, "level").unwrap_err();
        assert_eq!(
            assert_said_once(&wrapped),
            "invalid configuration: level: 12 is greater than the maximum of 9"
        );

        let schema = check_schema(&json!({"type": "string"})).unwrap_err();
        let text = assert_said_once(&schema);
        assert!(text.starts_with("not a valid config schema: "), "{text}");

        let broken = validate_field_value(&json!(1), &json!({"type": 7}), "bad").unwrap_err();
        let text = assert_said_once(&broken);
        assert!(
            text.starts_with("the schema of field bad is not a valid config schema: "),
            "{text}"
        );

        let not_an_object = config_to_dict(&5).unwrap_err();
        let text = assert_said_once(&not_an_object);
        assert!(
            text.ends_with("must serialise to a JSON object, got 5"),
            "{text}"
        );
    }
}
