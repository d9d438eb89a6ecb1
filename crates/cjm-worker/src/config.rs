//! Typed configuration for plugin authors: declare a config struct once, and get its
//! schema, its parsing and its JSON form from it.
//!
//! ```
//! use cjm_interface::{ConfigMap, PluginError};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use serde_json::Value;
//!
//! /// How the greeter greets
//! #[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
//! #[serde(default)]
//! #[schemars(rename = "greeter", title = "Greeter configuration")]
//! struct GreeterConfig {
//!     /// Said before the name
//!     #[schemars(title = "Greeting", length(max = 40))]
//!     greeting: String,
//! }
//!
//! // In `impl Plugin for Greeter`:
//! fn initialize(current: &mut GreeterConfig, config: ConfigMap) -> Result<(), PluginError> {
//!     *current = cjm_worker::config::parse(&config)?; // all or nothing
//!     Ok(())
//! }
//! fn config_schema() -> Value {
//!     cjm_worker::config::schema::<GreeterConfig>()
//! }
//! fn current_config(current: &GreeterConfig) -> Value {
//!     cjm_worker::config::to_value(current)
//! }
//! ```

use cjm_interface::{ConfigMap, PluginError};
use std::cell::RefCell;

use cjm_validation::{ConfigError, ConfigType, Validation};
use serde::Serialize;
use serde_json::Value;

/// The configuration `config` describes, keys left out taking their defaults. Checked
/// strictly against `T`'s schema (unknown keys refused); every violation is named in
/// the [`InvalidConfig`](cjm_interface::ErrorKind::InvalidConfig) error.
///
/// Inside `initialize`, a configuration the worker has just checked against this
/// same schema (the plugin's [`config_schema`](cjm_interface::Plugin::config_schema)
/// is [`schema::<T>()`](schema)) is not checked a second time, so the schema need
/// not even be compiled.
pub fn parse<T: ConfigType>(config: &ConfigMap) -> Result<T, PluginError> {
    if checked_already(&schema::<T>()) {
        return T::deserialize(&Value::Object(config.clone())).map_err(|err| {
            PluginError::invalid_config(format!(
                "the configuration does not fit {}: {err}",
                std::any::type_name::<T>()
            ))
        });
    }
    cjm_validation::dict_to_config(config, Validation::Strict).map_err(|err| match err {
        ConfigError::Invalid(invalid) => PluginError::invalid_config(invalid.to_string()),
        // A schema that does not compile is the plugin's bug, not the caller's.
        other => PluginError::failed(other.to_string()),
    })
}

thread_local! {
    /// While the worker runs a plugin's `initialize` (on this thread): the
    /// fingerprint of the schema the configuration was checked against.
    static CHECKED_AGAINST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Run `initialize` knowing that its configuration fits the schema with this
/// fingerprint. Cleared afterwards, also when `initialize` panics.
pub(crate) fn with_config_checked_against<R>(
    fingerprint: &str,
    initialize: impl FnOnce() -> R,
) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            CHECKED_AGAINST.with(|checked| checked.borrow_mut().take());
        }
    }
    CHECKED_AGAINST.with(|checked| *checked.borrow_mut() = Some(fingerprint.to_owned()));
    let _clear = Clear;
    initialize()
}

fn checked_already(schema: &Value) -> bool {
    CHECKED_AGAINST.with(|checked| {
        checked
            .borrow()
            .as_deref()
            .is_some_and(|fingerprint| fingerprint == cjm_validation::schema_fingerprint(schema))
    })
}

/// Whether `T::default()` satisfies `T`'s own schema; the violations if not. Call it in
/// a test of every plugin with a typed configuration: a plugin loaded without a
/// configuration starts on the schema's defaults, which come from `Default`, and a
/// `#[derive(Default)]` easily breaks a `length(min = 1)` or `range(min = 1)`.
///
/// ```
/// # use schemars::JsonSchema;
/// # use serde::{Deserialize, Serialize};
/// #[derive(Default, Serialize, Deserialize, JsonSchema)]
/// #[serde(default)]
/// struct Config {
///     #[schemars(range(min = 1))]
///     repeat: u32,
/// }
/// let err = cjm_worker::config::check_defaults::<Config>().unwrap_err();
/// assert!(err.contains("repeat: 0 is less than the minimum of 1"), "{err}");
/// ```
pub fn check_defaults<T: ConfigType + Default>() -> Result<(), String> {
    let validator = cjm_validation::validator_for::<T>().map_err(|err| err.to_string())?;
    let defaults = cjm_validation::config_to_dict(&T::default()).map_err(|err| err.to_string())?;
    validator
        .validate_map(defaults)
        .map(drop)
        .map_err(|invalid| invalid.to_string())
}

/// `T`'s JSON Schema, for [`Plugin::config_schema`](cjm_interface::Plugin::config_schema).
pub fn schema<T: ConfigType>() -> Value {
    cjm_validation::schema_for::<T>()
}

/// `config` as a JSON object, for
/// [`Plugin::current_config`](cjm_interface::Plugin::current_config).
pub fn to_value<T: Serialize>(config: &T) -> Value {
    match cjm_validation::config_to_dict(config) {
        Ok(map) => Value::Object(map),
        Err(err) => {
            tracing::error!("{err}");
            Value::Object(ConfigMap::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
    #[serde(default)]
    struct Level {
        #[schemars(range(max = 9))]
        level: u32,
    }

    fn map(value: Value) -> ConfigMap {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn parse_checks_the_schema_unless_the_worker_just_did() {
        let too_high = map(json!({"level": 12}));
        let err = parse::<Level>(&too_high).unwrap_err();
        assert!(
            err.message().contains("greater than the maximum of 9"),
            "{err}"
        );

        let own = cjm_validation::schema_fingerprint(&schema::<Level>());
        let parsed = with_config_checked_against(&own, || parse::<Level>(&too_high));
        assert_eq!(
            parsed.unwrap().level,
            12,
            "checked by the worker: not again"
        );
        // Its Rust type is still enforced.
        let wrong_type = map(json!({"level": "high"}));
        let err = with_config_checked_against(&own, || parse::<Level>(&wrong_type));
        assert!(err.unwrap_err().message().contains("does not fit"));

        let other = cjm_validation::schema_fingerprint(&json!({"type": "object"}));
        let parsed = with_config_checked_against(&other, || parse::<Level>(&too_high));
        assert!(
            parsed.is_err(),
            "checked against another schema: checked here"
        );
    }

    #[test]
    fn the_worker_check_ends_with_initialize_even_when_it_panics() {
        let own = cjm_validation::schema_fingerprint(&schema::<Level>());
        let panicked = std::panic::catch_unwind(|| {
            with_config_checked_against(&own, || panic!("initialize failed"))
        });
        assert!(panicked.is_err());
        assert!(parse::<Level>(&map(json!({"level": 12}))).is_err());
    }
}
