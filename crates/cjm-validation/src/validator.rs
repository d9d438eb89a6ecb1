//! A configuration schema compiled once, and the checks made with it.

use std::fmt;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::ValidationError;
use serde_json::Value;

use crate::error::{InvalidConfig, SchemaError, Violation};
use crate::keys;
use crate::ConfigMap;

/// What to do with top-level keys the schema does not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownKeys {
    /// Refuse them, naming the known keys and the closest one (strict mode). Applies
    /// when the schema lists `properties` and allows no others through
    /// `additionalProperties` or `patternProperties`.
    #[default]
    Refuse,
    /// Leave them to the schema, which usually lets them through.
    Allow,
}

/// A configuration schema, compiled once for any number of validations.
///
/// Cheap to clone; `Send + Sync`, so one can serve every thread.
#[derive(Clone)]
pub struct ConfigValidator {
    schema: Value,
    compiled: jsonschema::Validator,
    /// The keys of `properties`, in schema order.
    known_keys: Vec<String>,
    /// Whether the schema admits keys beyond `known_keys`.
    open: bool,
    defaults: ConfigMap,
    unknown_keys: UnknownKeys,
    fingerprint: String,
}

impl fmt::Debug for ConfigValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigValidator")
            .field("schema", &self.schema)
            .field("unknown_keys", &self.unknown_keys)
            .finish_non_exhaustive()
    }
}

/// Two validators are equal when they apply the same schema the same way.
impl PartialEq for ConfigValidator {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema && self.unknown_keys == other.unknown_keys
    }
}

/// Whether `schema` can serve as a configuration schema: valid JSON Schema, every
/// `$ref` resolvable without the network, and a root that can describe a JSON object.
pub fn check_schema(schema: &Value) -> Result<(), SchemaError> {
    ConfigValidator::new(schema).map(drop)
}

/// What can be told of a configuration schema without compiling it: its root is a
/// JSON object that can describe a JSON object. [`check_schema`] tells the rest.
pub fn check_schema_root(schema: &Value) -> Result<&ConfigMap, SchemaError> {
    let root = schema
        .as_object()
        .ok_or_else(|| SchemaError::new(format!("expected a JSON object, found {schema}")))?;
    if let Some(kind) = root.get("type") {
        let admits_object = match kind {
            Value::String(kind) => kind == "object",
            Value::Array(kinds) => kinds.iter().any(|kind| kind == "object"),
            _ => true, // the meta-schema check refuses it
        };
        if !admits_object {
            return Err(SchemaError::new(format!(
                "a configuration is a JSON object, but the schema's root has \"type\": {kind}"
            )));
        }
    }
    Ok(root)
}

/// `update` laid over `current`: its keys replace theirs, the others stay.
pub fn merge_update(current: &ConfigMap, update: &ConfigMap) -> ConfigMap {
    let mut merged = current.clone();
    for (key, value) in update {
        merged.insert(key.clone(), value.clone());
    }
    merged
}

impl ConfigValidator {
    /// Compile `schema`; unknown keys are refused (see [`UnknownKeys`]).
    pub fn new(schema: &Value) -> Result<Self, SchemaError> {
        let root = check_schema_root(schema)?;
        let compiled = compile(schema)?;
        let properties = root.get("properties").and_then(Value::as_object);
        let known_keys = properties
            .map(|properties| properties.keys().cloned().collect())
            .unwrap_or_default();
        let open = properties.is_none()
            || root.contains_key("patternProperties")
            || root
                .get("additionalProperties")
                .is_some_and(|additional| additional != &Value::Bool(false));
        let defaults = properties
            .map(|properties| {
                properties
                    .iter()
                    .filter_map(|(key, property)| {
                        Some((key.clone(), property.get("default")?.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ConfigValidator {
            fingerprint: crate::schema_fingerprint(schema),
            schema: schema.clone(),
            compiled,
            known_keys,
            open,
            defaults,
            unknown_keys: UnknownKeys::default(),
        })
    }

    /// This validator, treating keys the schema does not list as `unknown_keys`
    /// says.
    #[must_use]
    pub fn with_unknown_keys(mut self, unknown_keys: UnknownKeys) -> Self {
        self.unknown_keys = unknown_keys;
        self
    }

    /// The schema, as it was given.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The schema's [`schema_fingerprint`](crate::schema_fingerprint), computed once.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The keys the schema lists under `properties`.
    pub fn known_keys(&self) -> &[String] {
        &self.known_keys
    }

    /// The `default` of every property that has one: the configuration a plugin gets
    /// when none is given.
    pub fn defaults(&self) -> &ConfigMap {
        &self.defaults
    }

    /// Check `config` against the schema, reporting every violation at once.
    pub fn validate(&self, config: &Value) -> Result<(), InvalidConfig> {
        let Value::Object(map) = config else {
            return Err(InvalidConfig::new(vec![Violation {
                path: String::new(),
                keyword: String::from("type"),
                value: config.clone(),
                message: format!("{} is not a JSON object", describe(config)),
            }]));
        };
        let refusing = self.refuses_unknown_keys();
        let has_unknown = refusing && map.keys().any(|key| !self.is_known(key));
        if !has_unknown && self.compiled.is_valid(config) {
            return Ok(());
        }
        let mut violations: Vec<Violation> = self
            .compiled
            .iter_errors(config)
            // Unknown keys get a better message of our own below.
            .filter(|error| {
                !(refusing
                    && error.instance_path().is_empty()
                    && matches!(
                        error.kind(),
                        ValidationErrorKind::AdditionalProperties { .. }
                    ))
            })
            .map(|error| violation(&error))
            .collect();
        if refusing {
            violations.extend(
                map.iter()
                    .filter(|(key, _)| !self.is_known(key))
                    .map(|(key, value)| self.unknown_key(key, value)),
            );
        }
        if violations.is_empty() {
            // The fast check and the full one disagreed; never let that pass silently.
            return Err(InvalidConfig::new(vec![Violation {
                path: String::new(),
                keyword: String::new(),
                value: config.clone(),
                message: String::from("the configuration does not match its schema"),
            }]));
        }
        Err(InvalidConfig::new(violations))
    }

    /// [`validate`](Self::validate) for a configuration held as a map, handed back
    /// when valid (no copy is made either way).
    pub fn validate_map(&self, config: ConfigMap) -> Result<ConfigMap, InvalidConfig> {
        let config = Value::Object(config);
        self.validate(&config)?;
        match config {
            Value::Object(config) => Ok(config),
            _ => unreachable!("wrapped as an object above"),
        }
    }

    /// Check the configuration that `update` makes of `current` (see
    /// [`merge_update`]), and return it.
    pub fn validate_update(
        &self,
        current: &ConfigMap,
        update: &ConfigMap,
    ) -> Result<ConfigMap, InvalidConfig> {
        self.validate_map(merge_update(current, update))
    }

    /// Check one field's value, as a form does while it is being filled in: the value
    /// is validated in the configuration of defaults, and only the violations at or
    /// under `field` count.
    pub fn validate_field(&self, field: &str, value: &Value) -> Result<(), InvalidConfig> {
        if self.refuses_unknown_keys() && !self.is_known(field) {
            return Err(InvalidConfig::new(vec![self.unknown_key(field, value)]));
        }
        let mut probe = self.defaults.clone();
        probe.insert(field.to_owned(), value.clone());
        let violations: Vec<Violation> = match self.validate(&Value::Object(probe)) {
            Ok(()) => return Ok(()),
            Err(invalid) => invalid
                .into_violations()
                .into_iter()
                .filter(|violation| is_at_or_under(&violation.path, field))
                .collect(),
        };
        if violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidConfig::new(violations))
        }
    }

    fn refuses_unknown_keys(&self) -> bool {
        self.unknown_keys == UnknownKeys::Refuse && !self.open
    }

    fn is_known(&self, key: &str) -> bool {
        self.known_keys.iter().any(|known| known == key)
    }

    fn unknown_key(&self, key: &str, value: &Value) -> Violation {
        let mut message = String::from("unknown key");
        if let Some(closest) = keys::closest(key, &self.known_keys) {
            message.push_str(&format!(", did you mean \"{closest}\"?"));
        }
        if self.known_keys.is_empty() {
            message.push_str("; this plugin takes no configuration keys");
        } else {
            message.push_str(&format!("; known keys: {}", self.known_keys.join(", ")));
        }
        Violation {
            path: key.to_owned(),
            keyword: String::from("additionalProperties"),
            value: value.clone(),
            message,
        }
    }
}

/// Compile a (sub)schema: formats are asserted (an `email` field must hold an email
/// address), and `$ref`s are resolved without ever reaching the network.
pub(crate) fn compile(schema: &Value) -> Result<jsonschema::Validator, SchemaError> {
    jsonschema::options()
        .offline()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|err| SchemaError::new(schema_error_reason(&err)))
}

fn schema_error_reason(err: &ValidationError<'_>) -> String {
    let at = render_path(err.instance_path().segments());
    if at.is_empty() {
        err.to_string()
    } else {
        format!("at {at}: {err}")
    }
}

/// Strings longer than this are shortened in messages: a refused 1 MB value must not
/// make a 1 MB error.
const SHOWN_VALUE_CHARS: usize = 60;

/// A value as messages show it: its JSON, shortened when long.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    let length = text.chars().count();
    if length <= SHOWN_VALUE_CHARS {
        return text;
    }
    let head: String = text.chars().take(SHOWN_VALUE_CHARS - 20).collect();
    match value {
        Value::String(string) => {
            format!("{head}…\" ({} characters)", string.chars().count())
        }
        _ => format!("{head}…"),
    }
}

pub(crate) fn violation(error: &ValidationError<'_>) -> Violation {
    let path = render_path(error.instance_path().segments());
    let (value, message) = match error.kind() {
        // The instance is the whole object that lacks the property: name the property.
        ValidationErrorKind::Required { property } => (property.clone(), error.to_string()),
        _ => {
            let instance = error.instance().as_ref();
            let shown = describe(instance);
            let message = if shown.len() < instance.to_string().len() {
                error.masked_with(shown).to_string()
            } else {
                error.to_string()
            };
            (instance.clone(), message)
        }
    };
    Violation {
        path,
        keyword: error.kind().keyword().to_owned(),
        value,
        message,
    }
}

/// `a.b[2].c` from the segments of a JSON pointer into the configuration.
pub(crate) fn render_path<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            LocationSegment::Property(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
            }
            LocationSegment::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

fn is_at_or_under(path: &str, field: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> ConfigMap {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// One field's schema, and values it must accept and refuse (with a piece of the
    /// message each refusal must carry).
    struct Case {
        keyword: &'static str,
        field: Value,
        valid: Vec<Value>,
        invalid: Vec<(Value, &'static str)>,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                keyword: "type",
                field: json!({"type": "integer"}),
                valid: vec![json!(0), json!(-3), json!(1_u64 << 40)],
                invalid: vec![
                    (json!("3"), r#""3" is not of type "integer""#),
                    (json!(2.5), r#"2.5 is not of type "integer""#),
                    (json!(null), r#"null is not of type "integer""#),
                ],
            },
            Case {
                keyword: "minimum",
                field: json!({"type": "integer", "minimum": 1}),
                valid: vec![json!(1), json!(2)],
                invalid: vec![(json!(0), "0 is less than the minimum of 1")],
            },
            Case {
                keyword: "maximum",
                field: json!({"type": "number", "maximum": 1.5}),
                valid: vec![json!(1.5), json!(-10)],
                invalid: vec![(json!(1.6), "1.6 is greater than the maximum of 1.5")],
            },
            Case {
                keyword: "enum",
                field: json!({"type": "string", "enum": ["fast", "careful"]}),
                valid: vec![json!("fast"), json!("careful")],
                invalid: vec![(json!("Fast"), r#""Fast" is not one of "fast" or "careful""#)],
            },
            Case {
                keyword: "minLength",
                field: json!({"type": "string", "minLength": 2}),
                valid: vec![json!("ab"), json!("éé")],
                invalid: vec![(json!("é"), r#""é" is shorter than 2 characters"#)],
            },
            Case {
                keyword: "maxLength",
                field: json!({"type": "string", "maxLength": 3}),
                // Characters, not bytes.
                valid: vec![json!(""), json!("ééé")],
                invalid: vec![(json!("abcd"), r#""abcd" is longer than 3 characters"#)],
            },
            Case {
                keyword: "pattern",
                field: json!({"type": "string", "pattern": "^[a-z]+$"}),
                valid: vec![json!("abc")],
                invalid: vec![(json!("ab1"), r#""ab1" does not match "^[a-z]+$""#)],
            },
            Case {
                keyword: "format",
                field: json!({"type": "string", "format": "email"}),
                valid: vec![json!("someone@example.org")],
                invalid: vec![(
                    json!("not an address"),
                    r#""not an address" is not a "email""#,
                )],
            },
            Case {
                keyword: "type",
                field: json!({"type": ["string", "null"], "maxLength": 2}),
                valid: vec![json!(null), json!("ab")],
                invalid: vec![(json!(3), r#"3 is not of types "null", "string""#)],
            },
            Case {
                keyword: "type",
                field: json!({"type": "array", "items": {"type": "integer", "minimum": 0}}),
                valid: vec![json!([]), json!([0, 5])],
                invalid: vec![
                    (json!([1, -1]), "-1 is less than the minimum of 0"),
                    (json!("1"), r#""1" is not of type "array""#),
                ],
            },
        ]
    }

    #[test]
    fn each_constraint_keyword_accepts_and_refuses_values() {
        for case in cases() {
            let schema = json!({"type": "object", "properties": {"x": case.field}});
            let validator = ConfigValidator::new(&schema).unwrap();
            for value in &case.valid {
                let config = json!({"x": value});
                assert_eq!(
                    validator.validate(&config),
                    Ok(()),
                    "{} {config}",
                    case.keyword
                );
            }
            for (value, message) in &case.invalid {
                let config = json!({"x": value});
                let err = validator.validate(&config).unwrap_err();
                let text = err.to_string();
                assert!(text.contains(message), "{}: {text}", case.keyword);
                let violation = &err.violations()[0];
                assert!(violation.path.starts_with('x'), "{violation:?}");
                assert!(
                    violation.keyword == case.keyword || case.keyword == "type",
                    "{violation:?}"
                );
            }
        }
    }

    fn repeat_and_prefix() -> ConfigValidator {
        ConfigValidator::new(&json!({
            "type": "object",
            "properties": {
                "repeat": {"type": "integer", "minimum": 1, "default": 1},
                "prefix": {"type": "string", "maxLength": 3, "default": ""},
                "mode": {"enum": ["a", "b"]},
            },
        }))
        .unwrap()
    }

    #[test]
    fn every_violation_is_reported_at_once_with_path_keyword_and_value() {
        let err = repeat_and_prefix()
            .validate(&json!({"repeat": 0, "prefix": "long", "prefx": 1, "colour": "red"}))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid configuration: "), "{text}");
        assert!(
            text.contains("repeat: 0 is less than the minimum of 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"prefix: "long" is longer than 3 characters"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"prefx: unknown key, did you mean "prefix"?; known keys: repeat, prefix, mode"#
            ) || text.contains(
                r#"prefx: unknown key, did you mean "prefix"?; known keys: mode, prefix, repeat"#
            ),
            "{text}"
        );
        assert!(text.contains("colour: unknown key; known keys"), "{text}");
        let summary: Vec<(&str, &str, &Value)> = err
            .violations()
            .iter()
            .map(|v| (v.path.as_str(), v.keyword.as_str(), &v.value))
            .collect();
        assert_eq!(summary.len(), 4, "{summary:?}");
        assert!(summary.contains(&("repeat", "minimum", &json!(0))));
        assert!(summary.contains(&("prefix", "maxLength", &json!("long"))));
        assert!(summary.contains(&("prefx", "additionalProperties", &json!(1))));
        assert!(summary.contains(&("colour", "additionalProperties", &json!("red"))));
    }

    #[test]
    fn unknown_keys_pass_when_allowed_or_when_the_schema_is_open() {
        let lenient = repeat_and_prefix().with_unknown_keys(UnknownKeys::Allow);
        assert_eq!(lenient.validate(&json!({"colour": 1})), Ok(()));
        for open in [
            json!({}),
            json!({"properties": {"a": {}}, "additionalProperties": true}),
            json!({"properties": {"a": {}}, "patternProperties": {"^x_": {}}}),
        ] {
            let validator = ConfigValidator::new(&open).unwrap();
            assert_eq!(validator.validate(&json!({"x_y": 1})), Ok(()), "{open}");
        }
        // A closed schema refuses them with its own words when they are allowed.
        let closed =
            ConfigValidator::new(&json!({"properties": {"a": {}}, "additionalProperties": false}))
                .unwrap()
                .with_unknown_keys(UnknownKeys::Allow);
        let err = closed.validate(&json!({"b": 1})).unwrap_err();
        assert_eq!(err.violations()[0].keyword, "additionalProperties");
    }

    #[test]
    fn a_configuration_must_be_an_object() {
        let err = ConfigValidator::new(&json!({}))
            .unwrap()
            .validate(&json!([1]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: [1] is not a JSON object"
        );
    }

    #[test]
    fn required_properties_are_named() {
        let validator = ConfigValidator::new(&json!({
            "properties": {"model": {"type": "string"}},
            "required": ["model"],
        }))
        .unwrap();
        let err = validator.validate(&json!({})).unwrap_err();
        assert_eq!(err.violations()[0].keyword, "required");
        assert_eq!(err.violations()[0].value, json!("model"));
        assert!(
            err.to_string()
                .contains(r#""model" is a required property"#),
            "{err}"
        );
    }

    #[test]
    fn long_values_are_shortened_in_messages_but_kept_whole() {
        let long = "x".repeat(10_000);
        let err = repeat_and_prefix()
            .validate(&json!({"prefix": long}))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            text.contains("(10000 characters) is longer than 3 characters"),
            "{text}"
        );
        assert_eq!(err.violations()[0].value, json!(long));
    }

    #[test]
    fn defaults_and_known_keys_come_from_the_schema() {
        let validator = repeat_and_prefix();
        assert_eq!(
            validator.defaults(),
            &object(json!({"repeat": 1, "prefix": ""}))
        );
        let mut keys = validator.known_keys().to_vec();
        keys.sort();
        assert_eq!(keys, ["mode", "prefix", "repeat"]);
    }

    #[test]
    fn updates_merge_over_the_current_config_before_validation() {
        let validator = repeat_and_prefix();
        let current = object(json!({"repeat": 2, "prefix": "ab"}));
        let merged = validator
            .validate_update(&current, &object(json!({"prefix": "c"})))
            .unwrap();
        assert_eq!(merged, object(json!({"repeat": 2, "prefix": "c"})));
        let err = validator
            .validate_update(&current, &object(json!({"repeat": 0})))
            .unwrap_err();
        assert_eq!(err.violations().len(), 1, "{err}");
        assert_eq!(merge_update(&current, &ConfigMap::new()), current);
    }

    #[test]
    fn fields_are_checked_alone() {
        let validator = repeat_and_prefix();
        assert_eq!(validator.validate_field("repeat", &json!(5)), Ok(()));
        let err = validator.validate_field("repeat", &json!(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: repeat: 0 is less than the minimum of 1"
        );
        let err = validator.validate_field("repet", &json!(5)).unwrap_err();
        assert!(
            err.to_string().contains(r#"did you mean "repeat"?"#),
            "{err}"
        );
    }

    #[test]
    fn broken_schemas_are_refused_with_the_reason() {
        let refusals = [
            (json!([]), "expected a JSON object"),
            (
                json!({"type": "string"}),
                r#"the schema's root has "type": "string""#,
            ),
            (json!({"properties": {"a": {"type": "integr"}}}), "integr"),
            (json!({"properties": {"a": {"minimum": "one"}}}), "one"),
            (
                json!({"properties": {"a": {"pattern": "(unclosed"}}}),
                "(unclosed",
            ),
            (
                json!({"$ref": "https://example.invalid/schema.json"}),
                "example.invalid",
            ),
        ];
        for (schema, reason) in refusals {
            let err = check_schema(&schema).unwrap_err();
            assert!(
                err.to_string().starts_with("not a valid config schema: "),
                "{err}"
            );
            assert!(err.reason().contains(reason), "{schema}: {err}");
        }
        assert_eq!(check_schema(&json!({})), Ok(()));
        assert_eq!(check_schema(&json!({"type": ["object", "null"]})), Ok(()));
    }
}
