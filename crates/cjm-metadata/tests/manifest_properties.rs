//! Manifest parsing under arbitrary input: never a panic; an error that names the
//! file and says what kind of wrong it is (not JSON at all, or JSON that is no
//! manifest); and what parses survives being written and read back.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cjm_metadata::{validate_name, Manifest, ManifestError, ManifestErrorKind};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map("[a-z_]{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Manifest-like objects: the real keys, with values of the right type or not.
fn manifest_like() -> impl Strategy<Value = Value> {
    let keys = prop::sample::subsequence(
        vec![
            "name",
            "version",
            "description",
            "command",
            "args",
            "module",
            "class",
            "python_path",
            "env_vars",
            "resources",
            "config_schema",
            "category",
            "surprise",
        ],
        0..=13,
    );
    let plausible = prop_oneof![
        "[a-z][a-z0-9_.-]{0,10}".prop_map(Value::from),
        "/[a-z/]{1,12}".prop_map(Value::from),
        vec("[a-z-]{0,6}", 0..4).prop_map(Value::from),
        btree_map("[A-Z_]{1,6}", "[a-z]{0,6}", 0..3).prop_map(|map| {
            Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
        }),
        json_value(),
    ];
    (keys, vec(plausible, 13)).prop_map(|(keys, values)| {
        let object: Map<String, Value> = keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        Value::Object(object)
    })
}

/// Text that is anything at all, a manifest-like object, or one cut short.
fn manifest_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        manifest_like().prop_map(|value| value.to_string()),
        (manifest_like(), any::<prop::sample::Index>()).prop_map(|(value, cut)| {
            let text = value.to_string();
            let mut end = cut.index(text.len() + 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        }),
        json_value().prop_map(|value| value.to_string()),
    ]
}

/// What is true of every manifest that parses: it has a usable name, and writing it
/// out and reading it back gives the same manifest.
fn check_parsed(manifest: &Manifest) -> Result<(), TestCaseError> {
    prop_assert!(validate_name(&manifest.name).is_ok(), "{manifest:?}");
    let again = Manifest::from_json(&manifest.to_json_pretty());
    prop_assert!(again.is_ok(), "{:?}", again.err());
    prop_assert_eq!(&again.unwrap(), manifest);
    Ok(())
}

/// What is true of every refusal of `text`: text that is not JSON is refused as such
/// and well-formed JSON never is; the reason is said; and the message is the file's
/// path (when read from one) and the reason.
fn check_refused(
    err: &ManifestError,
    text: &str,
    path: Option<&Path>,
) -> Result<(), TestCaseError> {
    let well_formed = serde_json::from_str::<Value>(text).is_ok();
    match &err.kind {
        ManifestErrorKind::Json(_) => prop_assert!(!well_formed, "{err}: {text:?}"),
        ManifestErrorKind::Invalid(_) => prop_assert!(well_formed, "{err}: {text:?}"),
        other => prop_assert!(false, "{other:?} for {text:?}"),
    }
    let reason = err.reason();
    prop_assert!(!reason.trim().is_empty(), "{err:?}");
    prop_assert_eq!(err.path.as_deref(), path);
    let expected = match path {
        Some(path) => format!("manifest {}: {reason}", path.display()),
        None => format!("manifest: {reason}"),
    };
    prop_assert_eq!(err.to_string(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_manifest_that_round_trips_or_a_refusal_that_says_why(
        text in manifest_text()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.json");
        std::fs::write(&path, &text).unwrap();
        match (Manifest::from_json(&text), Manifest::load(&path)) {
            (Ok(parsed), Ok(loaded)) => {
                prop_assert_eq!(&parsed, &loaded);
                check_parsed(&parsed)?;
            }
            (Err(parsed), Err(loaded)) => {
                check_refused(&parsed, &text, None)?;
                check_refused(&loaded, &text, Some(&path))?;
                prop_assert_eq!(parsed.reason(), loaded.reason());
            }
            (parsed, loaded) => prop_assert!(
                false,
                "from_json and load disagree on {text:?}: {parsed:?} / {loaded:?}"
            ),
        }
    }

    #[test]
    fn manifest_like_objects_parse_and_round_trip_or_say_what_is_wrong(
        value in manifest_like()
    ) {
        let text = value.to_string();
        match Manifest::from_json(&text) {
            Ok(manifest) => {
                check_parsed(&manifest)?;
                // Nothing given is lost: every key comes back, unknown ones included.
                let written = serde_json::to_value(&manifest).unwrap();
                for key in value.as_object().unwrap().keys() {
                    let kept = written.get(key).is_some() || is_default_when_absent(key, &value[key]);
                    prop_assert!(kept, "{key} of {value} is lost: {written}");
                }
            }
            // A JSON object is well-formed: what is wrong is its content.
            Err(err) => check_refused(&err, &text, None)?,
        }
    }
}

/// Keys whose value is the default a manifest writes back as absent.
fn is_default_when_absent(key: &str, value: &Value) -> bool {
    match key {
        "description" | "category" => value == "",
        "env_vars" => value.as_object().is_some_and(Map::is_empty),
        "args" => value.as_array().is_some_and(Vec::is_empty),
        _ => false,
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    for depth in [200, 100_000] {
        let text = format!(
            "{{\"name\": \"x\", \"version\": \"1\", \"command\": \"/x\", \"config_schema\": {}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = Manifest::from_json(&text).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        // Deep nesting after a value of the wrong type, which stops the first pass.
        let text = format!(
            "{{\"name\": 5, \"command\": \"/x\", \"surprise\": {}{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = Manifest::from_json(&text).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }
}
