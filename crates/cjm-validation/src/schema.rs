//! A configuration schema derived from a config type, in the original's shape.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// What a plugin's configuration type is: a struct whose JSON Schema is derived
/// (`#[derive(JsonSchema)]`) and that travels as JSON. Implemented for every such type.
pub trait ConfigType: JsonSchema + Serialize + DeserializeOwned + 'static {}

impl<T: JsonSchema + Serialize + DeserializeOwned + 'static> ConfigType for T {}

/// The `format`s that schemars adds to numbers to say their Rust width. They are not
/// constraints (the range is given by `minimum`/`maximum`) and the original never
/// emits them, so a form generator would take them for string formats.
const RUST_NUMBER_FORMATS: &[&str] = &[
    "int", "int8", "int16", "int32", "int64", "int128", "uint", "uint8", "uint16", "uint32",
    "uint64", "uint128", "float", "double",
];

/// The JSON Schema of config type `T`, as the original's `dataclass_to_jsonschema`
/// shapes it: top-level `name` (the type's schema name: its Rust name, or
/// `#[schemars(rename = "...")]`), `title` (`#[schemars(title = "...")]`, else the
/// name), `description` (the doc comment, else empty), `type: object` and
/// `properties`; each field with `title`, `description`, `default` and whatever
/// constraints were declared (`range` gives `minimum`/`maximum`, `length` gives
/// `minLength`/`maxLength`, `regex` gives `pattern`, `extend("format" = ..)` and
/// `extend("enum" = [..])` the rest, a Rust enum of unit variants an `enum`).
///
/// `Option<T>` becomes nullable (`"type": [.., "null"]`), `Vec<T>` an array of `T`.
/// Subschemas are inlined, so the result has no `$defs` or `$ref` (a recursive type,
/// which a configuration has no need of, would keep them).
pub fn schema_for<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    strip_rust_number_formats(&mut schema);
    if let Value::Object(root) = &mut schema {
        shape_root(root, &T::schema_name());
    }
    schema
}

/// Keywords whose value is an object of subschemas.
const SCHEMA_MAP_KEYWORDS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Keywords whose value is a subschema or a list of them.
const SUBSCHEMA_KEYWORDS: &[&str] = &[
    "items",
    "prefixItems",
    "additionalProperties",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "anyOf",
    "oneOf",
    "allOf",
];

fn shape_root(root: &mut Map<String, Value>, name: &str) {
    root.insert("name".into(), Value::from(name));
    root.entry("title").or_insert_with(|| Value::from(name));
    root.entry("description").or_insert_with(|| Value::from(""));
    root.entry("type").or_insert_with(|| Value::from("object"));
    root.entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
}

fn strip_rust_number_formats(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    let describes_number = object.get("type").is_some_and(|kind| {
        let is_number = |kind: &Value| matches!(kind.as_str(), Some("integer" | "number"));
        match kind {
            Value::Array(kinds) => kinds.iter().any(is_number),
            other => is_number(other),
        }
    });
    let rust_format = object
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|format| RUST_NUMBER_FORMATS.contains(&format));
    if describes_number && rust_format {
        object.remove("format");
    }
    // Only subschemas are searched: a property may well be named `format`, and a
    // `default` or `enum` value may hold anything.
    for (keyword, value) in object.iter_mut() {
        if SCHEMA_MAP_KEYWORDS.contains(&keyword.as_str()) {
            if let Value::Object(schemas) = value {
                schemas.values_mut().for_each(strip_rust_number_formats);
            }
        } else if SUBSCHEMA_KEYWORDS.contains(&keyword.as_str()) {
            match value {
                Value::Array(schemas) => schemas.iter_mut().for_each(strip_rust_number_formats),
                subschema => strip_rust_number_formats(subschema),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        #[default]
        Fast,
        Careful,
    }

    /// Everything a form needs
    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(default)]
    #[schemars(rename = "sample", title = "Sample configuration")]
    struct Sample {
        /// Prepended to every result
        #[schemars(title = "Prefix", length(min = 1, max = 100))]
        prefix: String,
        #[schemars(range(min = 4096, max = 67_108_864))]
        chunk_bytes: usize,
        level: Option<u8>,
        mode: Mode,
        maybe_mode: Option<Mode>,
        tags: Vec<String>,
        #[schemars(extend("format" = "email"))]
        contact: Option<String>,
        #[schemars(regex(pattern = r"^[a-z]+$"))]
        word: String,
        #[schemars(extend("enum" = ["a", "b"]))]
        letter: String,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                prefix: String::from(">"),
                chunk_bytes: 1 << 20,
                level: None,
                mode: Mode::Fast,
                maybe_mode: None,
                tags: Vec::new(),
                contact: None,
                word: String::from("abc"),
                letter: String::from("a"),
            }
        }
    }

    #[test]
    fn derived_schema_has_the_original_shape() {
        let schema = schema_for::<Sample>();
        assert_eq!(schema["name"], "sample");
        assert_eq!(schema["title"], "Sample configuration");
        assert_eq!(schema["description"], "Everything a form needs");
        assert_eq!(schema["type"], "object");
        assert!(schema.get("$schema").is_none() && schema.get("$defs").is_none());
        let properties = &schema["properties"];
        assert_eq!(
            properties["prefix"],
            json!({
                "type": "string", "title": "Prefix", "description": "Prepended to every result",
                "default": ">", "minLength": 1, "maxLength": 100,
            })
        );
        assert_eq!(
            properties["chunk_bytes"],
            json!({"type": "integer", "default": 1_048_576, "minimum": 4096, "maximum": 67_108_864})
        );
        assert_eq!(
            properties["level"],
            json!({"type": ["integer", "null"], "default": null, "minimum": 0, "maximum": 255})
        );
        assert_eq!(
            properties["mode"],
            json!({"type": "string", "enum": ["fast", "careful"], "default": "fast"})
        );
        assert_eq!(
            properties["maybe_mode"]["enum"],
            json!(["fast", "careful", null])
        );
        assert_eq!(
            properties["tags"],
            json!({"type": "array", "items": {"type": "string"}, "default": []})
        );
        assert_eq!(properties["contact"]["format"], "email");
        assert_eq!(properties["contact"]["type"], json!(["string", "null"]));
        assert_eq!(properties["word"]["pattern"], "^[a-z]+$");
        assert_eq!(properties["letter"]["enum"], json!(["a", "b"]));
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Bare {
        count: u32,
    }

    #[test]
    fn a_bare_struct_gets_name_title_and_empty_description() {
        let schema = schema_for::<Bare>();
        assert_eq!(schema["name"], "Bare");
        assert_eq!(schema["title"], "Bare");
        assert_eq!(schema["description"], "");
        assert_eq!(schema["required"], json!(["count"]));
        assert_eq!(
            schema["properties"]["count"],
            json!({"type": "integer", "minimum": 0})
        );
    }

    #[test]
    fn only_rust_number_formats_are_stripped() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "format": {"type": "integer", "format": "int64"},
                "when": {"type": "string", "format": "date"},
                "list": {"type": "array", "items": {"type": "number", "format": "double"}},
                "fixed": {"default": {"type": "integer", "format": "int32"}},
            },
        });
        strip_rust_number_formats(&mut schema);
        assert_eq!(schema["properties"]["format"], json!({"type": "integer"}));
        assert_eq!(schema["properties"]["when"]["format"], "date");
        assert_eq!(
            schema["properties"]["list"]["items"],
            json!({"type": "number"})
        );
        assert_eq!(
            schema["properties"]["fixed"]["default"]["format"], "int32",
            "a default is a value, not a schema"
        );
    }
}
