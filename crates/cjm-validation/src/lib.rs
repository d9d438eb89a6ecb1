//! Configuration schemas for cjm plugins: derive one from a config type, validate a
//! configuration against one, and the helpers around them.
//!
//! A plugin declares its configuration once, as a struct deriving
//! [`schemars::JsonSchema`], `Serialize` and `Deserialize`; [`schema_for`] turns it into
//! the JSON Schema the original system emits (top-level `name`, `title`,
//! `description`, `type: object`, `properties`, and per field the constraint keywords),
//! so that form generators built for the original render ours.
//!
//! ```
//! use cjm_validation::{dict_to_config, schema_for, ConfigMap, Validation};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! /// How the greeter greets
//! #[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
//! #[serde(default)]
//! #[schemars(rename = "greeter", title = "Greeter configuration")]
//! struct GreeterConfig {
//!     /// Said before the name
//!     #[schemars(title = "Greeting", length(min = 1, max = 40))]
//!     greeting: String,
//!     #[schemars(range(min = 1, max = 10))]
//!     repeat: Option<u32>,
//! }
//!
//! let schema = schema_for::<GreeterConfig>();
//! assert_eq!(schema["name"], "greeter");
//! assert_eq!(schema["properties"]["greeting"]["maxLength"], 40);
//!
//! let mut config = ConfigMap::new();
//! config.insert("greeting".into(), "".into());
//! config.insert("repeat".into(), 0.into());
//! let err = dict_to_config::<GreeterConfig>(&config, Validation::Strict).unwrap_err();
//! assert!(err.to_string().contains("repeat: 0 is less than the minimum of 1"), "{err}");
//! assert!(err.to_string().contains("greeting: \"\" is shorter than 1 character"), "{err}");
//! ```
//!
//! Validation compiles a schema once ([`ConfigValidator::new`]) and reuses it; every
//! violation is reported at once, each with its path, constraint and offending value.

#![warn(missing_docs)]

mod error;
mod fingerprint;
mod keys;
mod schema;
mod typed;
mod validator;

pub use error::{ConfigError, InvalidConfig, SchemaError, Violation};
pub use fingerprint::schema_fingerprint;
pub use schema::{schema_for, ConfigType};
pub use typed::{
    config_to_dict, dict_to_config, extract_defaults, validate_field_value, validator_for,
    Validation,
};
pub use validator::{check_schema, check_schema_root, merge_update, ConfigValidator, UnknownKeys};

/// The original's names for the constraint keywords a field's schema may carry.
pub mod keywords {
    /// A field's label, as a form shows it.
    pub const TITLE: &str = "title";
    /// A field's explanation (a doc comment, when derived).
    pub const DESCRIPTION: &str = "description";
    /// The smallest number allowed, inclusive.
    pub const MINIMUM: &str = "minimum";
    /// The largest number allowed, inclusive.
    pub const MAXIMUM: &str = "maximum";
    /// The only values allowed.
    pub const ENUM: &str = "enum";
    /// The fewest characters a string may have.
    pub const MIN_LENGTH: &str = "minLength";
    /// The most characters a string may have.
    pub const MAX_LENGTH: &str = "maxLength";
    /// A regular expression a string must match.
    pub const PATTERN: &str = "pattern";
    /// A named string format (`email`, `date`, `uri`, ..), checked.
    pub const FORMAT: &str = "format";
    /// The value a field takes when the configuration leaves it out.
    pub const DEFAULT: &str = "default";
}

/// A configuration: a JSON object, as it travels on the wire (the same type as
/// `cjm_interface::ConfigMap`).
pub type ConfigMap = serde_json::Map<String, serde_json::Value>;
