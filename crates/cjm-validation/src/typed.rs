//! The original's helpers for configuration types: defaults, JSON object to config and
//! back, field checks. Each type's schema is compiled once per process.

use std::any::{type_name, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::error::{ConfigError, InvalidConfig, Violation};
use crate::schema::{schema_for, ConfigType};
use crate::validator::{compile, render_path, violation, ConfigValidator};
use crate::ConfigMap;

/// How [`dict_to_config`] treats the JSON object it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validation {
    /// Validate against the schema, and refuse unknown keys (naming the closest known
    /// one): for configurations people type.
    Strict,
    /// Validate against the schema after dropping unknown keys.
    Lenient,
    /// Drop unknown keys and only convert, as the original does with `validate=False`;
    /// values that do not fit the type are still refused.
    Off,
}

/// The compiled schema of config type `T`, made on first use and shared afterwards.
pub fn validator_for<T: ConfigType>() -> Result<Arc<ConfigValidator>, ConfigError> {
    static VALIDATORS: OnceLock<Mutex<HashMap<TypeId, Arc<ConfigValidator>>>> = OnceLock::new();
    let validators = VALIDATORS.get_or_init(Mutex::default);
    let cached = validators.lock().get(&TypeId::of::<T>()).cloned();
    if let Some(validator) = cached {
        return Ok(validator);
    }
    // Compiled outside the lock: two threads may both compile on first use, which
    // costs a little time once rather than serialising every caller behind one.
    let validator = ConfigValidator::new(&schema_for::<T>())
        .map(Arc::new)
        .map_err(|error| ConfigError::Schema {
            of: format!("config type {}", type_name::<T>()),
            error,
        })?;
    validators
        .lock()
        .insert(TypeId::of::<T>(), Arc::clone(&validator));
    Ok(validator)
}

/// The defaults of config type `T`: every field whose schema has a `default`
/// (`#[serde(default)]` on the struct gives every field one).
pub fn extract_defaults<T: ConfigType>() -> ConfigMap {
    schema_for::<T>()
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .filter_map(|(key, property)| Some((key.clone(), property.get("default")?.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// A `T` from a JSON object. Keys left out take their defaults when `T` declares them
/// (`#[serde(default)]`); see [`Validation`] for unknown keys and checks.
pub fn dict_to_config<T: ConfigType>(
    data: &ConfigMap,
    validation: Validation,
) -> Result<T, ConfigError> {
    let validator = validator_for::<T>()?;
    let known_only = |data: &ConfigMap| -> ConfigMap {
        data.iter()
            .filter(|(key, _)| validator.known_keys().contains(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    };
    let config = match validation {
        Validation::Strict => Value::Object(data.clone()),
        Validation::Lenient | Validation::Off => Value::Object(known_only(data)),
    };
    if validation != Validation::Off {
        validator.validate(&config)?;
    }
    T::deserialize(&config).map_err(|err| {
        ConfigError::Invalid(InvalidConfig::new(vec![Violation {
            path: String::new(),
            keyword: String::from("type"),
            value: config.clone(),
            message: format!("does not fit {}: {err}", type_name::<T>()),
        }]))
    })
}

/// The JSON object of a configuration.
pub fn config_to_dict<T: Serialize>(config: &T) -> Result<ConfigMap, ConfigError> {
    let not_an_object = |found: String| ConfigError::NotAnObject {
        type_name: type_name::<T>().to_owned(),
        found,
    };
    match serde_json::to_value(config) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(not_an_object(other.to_string())),
        Err(err) => Err(not_an_object(format!("an error: {err}"))),
    }
}

/// Check one value against the schema of one field (its `type`, `minimum`,
/// `maxLength`, `enum`, `pattern`, `format`, ...), with `field_name` leading each
/// violation's path. The field schema is compiled for this one call: for repeated
/// checks use [`ConfigValidator::validate_field`].
pub fn validate_field_value(
    value: &Value,
    field_schema: &Value,
    field_name: &str,
) -> Result<(), ConfigError> {
    let compiled = compile(field_schema).map_err(|error| ConfigError::Schema {
        of: format!("field {field_name}"),
        error,
    })?;
    let violations: Vec<Violation> = compiled
        .iter_errors(value)
        .map(|error| {
            let mut violation = violation(&error);
            let inner = render_path(error.instance_path().segments());
            violation.path = match inner.as_str() {
                "" => field_name.to_owned(),
                _ if inner.starts_with('[') => format!("{field_name}{inner}"),
                _ => format!("{field_name}.{inner}"),
            };
            violation
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(InvalidConfig::new(violations)))
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(default)]
    struct Greeter {
        #[schemars(length(min = 1, max = 10))]
        greeting: String,
        #[schemars(range(min = 1, max = 5))]
        repeat: u32,
        shout: Option<bool>,
    }

    impl Default for Greeter {
        fn default() -> Self {
            Greeter {
                greeting: String::from("hello"),
                repeat: 1,
                shout: None,
            }
        }
    }

    fn object(value: Value) -> ConfigMap {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn defaults_are_those_of_the_type() {
        assert_eq!(
            extract_defaults::<Greeter>(),
            object(json!({"greeting": "hello", "repeat": 1, "shout": null}))
        );
        let from_defaults: Greeter =
            dict_to_config(&extract_defaults::<Greeter>(), Validation::Strict).unwrap();
        assert_eq!(from_defaults, Greeter::default());
    }

    #[test]
    fn dict_to_config_fills_defaults_and_validates() {
        let config: Greeter =
            dict_to_config(&object(json!({"repeat": 3})), Validation::Strict).unwrap();
        assert_eq!(config.repeat, 3);
        assert_eq!(config.greeting, "hello");

        let bad = object(json!({"repeat": 0, "greeting": "", "shout": "yes"}));
        let err = dict_to_config::<Greeter>(&bad, Validation::Strict).unwrap_err();
        let ConfigError::Invalid(invalid) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(invalid.violations().len(), 3, "{err}");
        assert!(
            err.to_string()
                .contains("repeat: 0 is less than the minimum of 1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_depend_on_the_validation_mode() {
        let data = object(json!({"repeat": 2, "gretting": "hi"}));
        let err = dict_to_config::<Greeter>(&data, Validation::Strict).unwrap_err();
        assert!(
            err.to_string().contains(r#"did you mean "greeting"?"#),
            "{err}"
        );
        for mode in [Validation::Lenient, Validation::Off] {
            let config: Greeter = dict_to_config(&data, mode).unwrap();
            assert_eq!((config.repeat, config.greeting.as_str()), (2, "hello"));
        }
    }

    #[test]
    fn without_validation_only_the_type_is_checked() {
        let config: Greeter =
            dict_to_config(&object(json!({"repeat": 99})), Validation::Off).unwrap();
        assert_eq!(config.repeat, 99);
        let err = dict_to_config::<Greeter>(&object(json!({"repeat": "x"})), Validation::Off)
            .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn config_to_dict_round_trips() {
        let config = Greeter {
            greeting: String::from("hey"),
            repeat: 2,
            shout: Some(true),
        };
        let map = config_to_dict(&config).unwrap();
        assert_eq!(
            map,
            object(json!({"greeting": "hey", "repeat": 2, "shout": true}))
        );
        assert_eq!(
            dict_to_config::<Greeter>(&map, Validation::Strict).unwrap(),
            config
        );
        let err = config_to_dict(&5).unwrap_err();
        assert!(
            err.to_string()
                .contains("must serialise to a JSON object, got 5"),
            "{err}"
        );
    }

    #[test]
    fn validate_field_value_checks_one_field() {
        let field = json!({"type": "integer", "minimum": 1, "maximum": 5});
        assert_eq!(validate_field_value(&json!(3), &field, "repeat"), Ok(()));
        let err = validate_field_value(&json!(9), &field, "repeat").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: repeat: 9 is greater than the maximum of 5"
        );
        let list = json!({"type": "array", "items": {"enum": ["a"]}});
        let err = validate_field_value(&json!(["a", "b"]), &list, "tags").unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"tags[1]: "b" is not one of "a""#),
            "{err}"
        );
        let err = validate_field_value(&json!(1), &json!({"type": 7}), "bad").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the schema of field bad is not a valid"),
            "{err}"
        );
    }

    #[test]
    fn the_validator_of_a_type_is_compiled_once() {
        let first = validator_for::<Greeter>().unwrap();
        let second = validator_for::<Greeter>().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}
