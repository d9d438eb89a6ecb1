//! A plugin's declared worker environment (`"worker_env"` in its manifest, the
//! original 0.0.46's `WORKER_ENV` of `EnvVarSpec`s): which variables its worker needs,
//! which are secret, and defaults that may name the host's folders (`${...}`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One declared variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EnvVarSpec {
    /// The variable's name: capitals, digits and `_`, not starting with a digit.
    pub name: String,
    /// Whether the worker cannot run without it: a load fails when it has no value.
    #[serde(default)]
    pub required: bool,
    /// Kept in the secret store (`cjm-ctl secrets set`), never in a manifest, a log
    /// or a command line.
    #[serde(default)]
    pub secret: bool,
    /// The value when the host's environment does not set one; the
    /// [`PLACEHOLDERS`] (`${CJM_MODELS_DIR}`, `${PLUGIN_DATA_DIR}`, .., and the
    /// successor's names for the same folders) are replaced. Not allowed for a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// What it is for, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A short name for it, for people (the original's `label`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// The values it may take (the original's `options`, unused by its host too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

/// The placeholders a default may use: the original 0.0.46's, then its successor's
/// (cjm-substrate, where a plugin is a capability) names for the same three things.
pub const PLACEHOLDERS: [&str; 7] = [
    "CJM_MODELS_DIR",
    "CJM_PLUGIN_DATA_DIR",
    "PLUGIN_DATA_DIR",
    "PLUGIN_NAME",
    "CJM_CAPABILITY_DATA_DIR",
    "CAPABILITY_DATA_DIR",
    "CAPABILITY_NAME",
];

/// The declared variables of a manifest's fields, checked: names well formed and
/// unique, no default for a secret, defaults naming only known placeholders.
pub(crate) fn from_fields(extra: &Map<String, Value>) -> Result<Vec<EnvVarSpec>, String> {
    let Some(value) = extra.get("worker_env") else {
        return Ok(Vec::new());
    };
    let specs: Vec<EnvVarSpec> =
        serde_json::from_value(value.clone()).map_err(|err| format!("\"worker_env\": {err}"))?;
    let mut seen = HashSet::new();
    for spec in &specs {
        let bad = |reason: String| format!("\"worker_env\" {}: {reason}", spec.name);
        if !is_variable_name(&spec.name) {
            return Err(bad(String::from(VARIABLE_NAME_RULE)));
        }
        if !seen.insert(spec.name.as_str()) {
            return Err(bad(String::from("declared twice")));
        }
        if spec.secret && spec.default.is_some() {
            return Err(bad(String::from(
                "a secret has no default: a manifest is no place for it",
            )));
        }
        if let Some(default) = &spec.default {
            expand(default, |_| Some(String::new())).map_err(bad)?;
        }
    }
    Ok(specs)
}

/// What [`is_variable_name`] accepts, as errors say it.
pub(crate) const VARIABLE_NAME_RULE: &str =
    "not a variable name (capitals, digits and _, not starting with a digit)";

pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_uppercase() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
}

/// `text` with every `${NAME}` replaced by `lookup(NAME)`; `$` not followed by `{`
/// stays. An unknown placeholder, one without a value, or a `${` never closed is an
/// error that says which.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{text:?} opens ${{ without closing it"))?;
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "{text:?} names ${{{name}}}; a default may name {}",
                PLACEHOLDERS.map(|known| format!("${{{known}}}")).join(", ")
            ));
        }
        let value = lookup(name).ok_or_else(|| format!("{text:?}: ${{{name}}} has no value"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(worker_env: Value) -> Result<Vec<EnvVarSpec>, String> {
        from_fields(json!({ "worker_env": worker_env }).as_object().unwrap())
    }

    #[test]
    fn declared_variables_parse_with_their_defaults() {
        let specs = parse(json!([
            {"name": "HF_HOME", "default": "${CJM_MODELS_DIR}/hf"},
            {"name": "API_KEY", "secret": true, "required": true, "description": "the key"},
        ]))
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert!(specs[1].secret && specs[1].required);
        assert!(from_fields(&Map::new()).unwrap().is_empty());
    }

    #[test]
    fn broken_declarations_say_which_and_why() {
        for (worker_env, expected) in [
            (json!([{"name": "lower"}]), "lower: not a variable name"),
            (json!([{"name": "A"}, {"name": "A"}]), "A: declared twice"),
            (
                json!([{"name": "K", "secret": true, "default": "x"}]),
                "K: a secret has no default",
            ),
            (
                json!([{"name": "D", "default": "${HOME}/x"}]),
                "D: \"${HOME}/x\" names ${HOME}",
            ),
            (
                json!([{"name": "U", "default": "${CJM_MODELS_DIR"}]),
                "without closing it",
            ),
            (
                json!([{"name": "X", "colour": 1}]),
                "unknown field `colour`",
            ),
            (json!({"name": "X"}), "\"worker_env\": invalid type"),
        ] {
            let err = parse(worker_env).unwrap_err();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }

    #[test]
    fn expansion_replaces_placeholders_and_keeps_a_lone_dollar() {
        let lookup = |name: &str| (name == "PLUGIN_NAME").then(|| String::from("whisper"));
        assert_eq!(
            expand("$5 ${PLUGIN_NAME}/x", lookup).unwrap(),
            "$5 whisper/x"
        );
        let err = expand("${CJM_MODELS_DIR}", lookup).unwrap_err();
        assert!(err.contains("${CJM_MODELS_DIR} has no value"), "{err}");
    }

    #[test]
    fn the_successors_placeholders_are_known() {
        let specs = parse(json!([
            {"name": "A", "default": "${CAPABILITY_DATA_DIR}/db"},
            {"name": "B", "default": "${CJM_CAPABILITY_DATA_DIR}/${CAPABILITY_NAME}"},
        ]))
        .unwrap();
        assert_eq!(specs.len(), 2);
    }
}
