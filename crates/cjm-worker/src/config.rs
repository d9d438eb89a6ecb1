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
use cjm_validation::{ConfigError, ConfigType, Validation};
use serde::Serialize;
use serde_json::Value;

/// The configuration `config` describes, keys left out taking their defaults. Checked
/// strictly against `T`'s schema (unknown keys refused); every violation is named in
/// the [`InvalidConfig`](cjm_interface::ErrorKind::InvalidConfig) error.
pub fn parse<T: ConfigType>(config: &ConfigMap) -> Result<T, PluginError> {
    cjm_validation::dict_to_config(config, Validation::Strict).map_err(|err| match err {
        ConfigError::Invalid(invalid) => PluginError::invalid_config(invalid.to_string()),
        // A schema that does not compile is the plugin's bug, not the caller's.
        other => PluginError::failed(other.to_string()),
    })
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
