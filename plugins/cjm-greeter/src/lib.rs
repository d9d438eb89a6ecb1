// The README's example plugin, kept here whole so that what the README shows is
// built and tested: a greeting with a typed configuration.

use cjm_interface::{Call, ChunkIter, ConfigMap, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How the greeter greets
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)] // keys left out take their defaults
#[schemars(rename = "cjm-greeter", title = "Greeter configuration")]
pub struct GreeterConfig {
    /// Said before the name
    #[schemars(title = "Greeting", length(min = 1, max = 40))]
    pub greeting: String,
    /// How many times the greeting is said
    #[schemars(range(min = 1, max = 10))]
    pub repeat: u32,
    /// Letter case of the greeting; none keeps it as written
    pub style: Option<Style>,
}

// The defaults must satisfy the schema above: a plugin loaded without a
// configuration starts on them.
impl Default for GreeterConfig {
    fn default() -> Self {
        GreeterConfig {
            greeting: String::from("hello"),
            repeat: 1,
            style: None,
        }
    }
}

/// Letter case of the greeting
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    Upper,
    Lower,
}

#[derive(Debug, Default)]
pub struct Greeter {
    config: GreeterConfig,
}

impl Greeter {
    fn greet(&self, who: &str) -> String {
        let greeting = match self.config.style {
            Some(Style::Upper) => self.config.greeting.to_uppercase(),
            Some(Style::Lower) => self.config.greeting.to_lowercase(),
            None => self.config.greeting.clone(),
        };
        format!("{greeting}, {who}")
    }
}

impl Plugin for Greeter {
    fn name(&self) -> &str {
        "cjm-greeter"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn initialize(&mut self, config: ConfigMap) -> Result<(), PluginError> {
        // All or nothing: a refused configuration leaves the old one in force.
        self.config = cjm_worker::config::parse(&config)?;
        Ok(())
    }

    fn execute(&self, call: Call) -> Result<Value, PluginError> {
        let who: String = call.required(0, "who")?; // positional 0 or kwarg "who"
        let text = vec![self.greet(&who); self.config.repeat as usize].join(" ");
        Ok(json!({ "text": text }))
    }

    fn execute_stream(&self, call: Call) -> Result<ChunkIter<'_>, PluginError> {
        let who: String = call.required(0, "who")?;
        let greeting = self.greet(&who);
        // One chunk per greeting, made as the host reads them.
        Ok(Box::new(
            (0..self.config.repeat).map(move |n| Ok(json!({ "n": n, "text": greeting }))),
        ))
    }

    fn config_schema(&self) -> Value {
        cjm_worker::config::schema::<GreeterConfig>()
    }

    fn current_config(&self) -> Value {
        cjm_worker::config::to_value(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_satisfy_the_schema() {
        cjm_worker::config::check_defaults::<GreeterConfig>().unwrap();
    }

    #[test]
    fn greets_as_configured() {
        let mut greeter = Greeter::default();
        let config = json!({"greeting": "Hi", "repeat": 2, "style": "upper"});
        greeter
            .initialize(config.as_object().cloned().unwrap())
            .unwrap();
        let call: Call = serde_json::from_value(json!({"args": ["Ada"]})).unwrap();
        assert_eq!(
            greeter.execute(call).unwrap(),
            json!({"text": "HI, Ada HI, Ada"})
        );
    }

    #[test]
    fn a_configuration_breaking_the_schema_changes_nothing() {
        let mut greeter = Greeter::default();
        let bad = json!({"repeat": 0, "colour": "red"});
        let err = greeter
            .initialize(bad.as_object().cloned().unwrap())
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("repeat: 0 is less than the minimum of 1"),
            "{message}"
        );
        assert!(message.contains("colour: unknown key"), "{message}");
        assert_eq!(greeter.config, GreeterConfig::default());
    }
}
