//! The check `/initialize` makes before the plugin sees a configuration.
//!
//! The schema is compiled on first need, not when the worker starts: a worker started
//! by our host is handed configurations the host has already validated against the
//! same schema (see `wire::CONFIG_CHECKED_HEADER`), so it may never need to compile
//! it. That keeps the JSON Schema machinery (over a millisecond to compile the
//! meta-schema, and megabytes of code) off the start-up path and out of an idle
//! worker's memory.

use std::sync::OnceLock;

use cjm_validation::{ConfigValidator, SchemaError};
use hyper::header::HeaderValue;
use serde_json::Value;

pub(crate) struct ConfigCheck {
    schema: Value,
    fingerprint: String,
    validator: OnceLock<Result<ConfigValidator, SchemaError>>,
}

impl ConfigCheck {
    /// Refuses at once what is wrong without compiling (a root that is not an object
    /// schema); the rest of a broken schema shows at the first check.
    pub(crate) fn new(schema: Value) -> Result<Self, SchemaError> {
        cjm_validation::check_schema_root(&schema)?;
        Ok(ConfigCheck {
            fingerprint: cjm_validation::schema_fingerprint(&schema),
            schema,
            validator: OnceLock::new(),
        })
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether the host's claim names this very schema.
    pub(crate) fn is_checked_by(&self, claim: Option<&HeaderValue>) -> bool {
        claim.is_some_and(|claim| claim.as_bytes() == self.fingerprint.as_bytes())
    }

    pub(crate) fn validator(&self) -> Result<&ConfigValidator, &SchemaError> {
        self.validator
            .get_or_init(|| ConfigValidator::new(&self.schema))
            .as_ref()
    }

    /// Whether the schema has been compiled (for tests of the start-up path).
    #[cfg(test)]
    pub(crate) fn is_compiled(&self) -> bool {
        self.validator.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}})
    }

    #[test]
    fn compiles_only_when_first_needed() {
        let check = ConfigCheck::new(schema()).unwrap();
        assert!(!check.is_compiled());
        let validator = check.validator().unwrap();
        assert!(validator.validate(&json!({"n": 0})).is_err());
        assert!(check.is_compiled());
    }

    #[test]
    fn believes_only_a_claim_naming_its_own_schema() {
        let check = ConfigCheck::new(schema()).unwrap();
        let own = cjm_validation::schema_fingerprint(&schema());
        assert!(check.is_checked_by(Some(&HeaderValue::from_str(&own).unwrap())));
        let other = cjm_validation::schema_fingerprint(&json!({"type": "object"}));
        assert!(!check.is_checked_by(Some(&HeaderValue::from_str(&other).unwrap())));
        assert!(!check.is_checked_by(None));
        assert!(!check.is_compiled());
    }

    #[test]
    fn a_broken_schema_is_refused_at_once_or_at_first_check() {
        assert!(ConfigCheck::new(json!({"type": "string"})).is_err());
        let late = ConfigCheck::new(json!({"type": "object", "minProperties": -1})).unwrap();
        assert!(late.validator().is_err());
    }
}
