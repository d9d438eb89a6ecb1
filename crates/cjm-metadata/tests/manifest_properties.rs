//! Manifest parsing under arbitrary input: never a panic, always an error that says
//! something; and what parses survives being written and read back.
#![allow(clippy::unwrap_used)]

use cjm_metadata::Manifest;
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_an_error_or_a_manifest_never_a_panic(text in ".{0,200}") {
        if let Err(err) = Manifest::from_json(&text) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn manifest_like_objects_parse_or_say_why_and_round_trip(value in manifest_like()) {
        match Manifest::from_json(&value.to_string()) {
            Ok(manifest) => {
                let again = Manifest::from_json(&manifest.to_json_pretty()).unwrap();
                prop_assert_eq!(again, manifest);
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
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
    }
}
