//! The JSON writer against serde_json, byte for byte, over arbitrary values: strings
//! with every kind of escape, any Unicode, long runs across the writer's scan blocks,
//! nested arrays and objects, integers and floats.
#![allow(clippy::unwrap_used)]

use cjm_interface::json;
use cjm_interface::wire::ExecuteRequest;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The writer scans strings in blocks of this many bytes.
const SCAN_BLOCK: usize = 4096;

/// Strings of every sort: anything at all; short ones dense with characters that
/// need escaping; and long ones (past the writer's 4 KiB scan blocks and its 16-byte
/// steps) with a few such characters, often just before, on or after a block's edge.
fn text() -> impl Strategy<Value = String> {
    let filler = prop_oneof![SCAN_BLOCK - 2..SCAN_BLOCK + 2, 0..2 * SCAN_BLOCK];
    let special = prop_oneof![
        (0u8..0x20).prop_map(char::from),
        Just('"'),
        Just('\\'),
        Just('\u{7f}'),
        Just('é'),
        Just('漢'),
        Just('🎉'),
        Just('\u{2028}'),
        any::<char>(),
    ];
    prop_oneof![
        4 => any::<String>(),
        4 => vec(prop_oneof![special.clone(), Just('a')], 0..48)
            .prop_map(|chars| chars.into_iter().collect()),
        2 => vec((filler, special), 1..4).prop_map(|segments| {
            let mut text = String::new();
            for (len, special) in segments {
                text.extend(std::iter::repeat_n('x', len));
                text.push(special);
            }
            text.push_str("tail");
            text
        }),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become null, as serde_json makes them.
        any::<f64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop_oneof![Just(0.0), Just(-0.0), Just(1e300), Just(5e-324), Just(0.1)]
            .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(text(), inner, 0..8).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(text(), value(), 0..4).prop_map(|map| map.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn to_vec_writes_what_serde_json_writes(value in value()) {
        let ours = json::to_vec(&value);
        let theirs = serde_json::to_vec(&value).unwrap();
        prop_assert!(ours == theirs, "{}\n!=\n{}", String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    }

    #[test]
    fn a_call_body_is_the_wire_types_serialisation(args in vec(value(), 0..3), kwargs in object()) {
        let mut ours = Vec::new();
        json::write_call_body(&mut ours, &args, &kwargs);
        let theirs = serde_json::to_vec(&ExecuteRequest { args, kwargs, envelope: None }).unwrap();
        prop_assert!(ours == theirs, "{}\n!=\n{}", String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    }

    #[test]
    fn writers_append_to_what_the_buffer_holds(
        prefix in vec(any::<u8>(), 0..16),
        items in vec(value(), 0..3),
        map in object(),
        text in text(),
    ) {
        let mut out = prefix.clone();
        json::write_array(&mut out, &items);
        prop_assert_eq!(out, appended(&prefix, &items));
        let mut out = prefix.clone();
        json::write_object(&mut out, &map);
        prop_assert_eq!(out, appended(&prefix, &map));
        let mut out = prefix.clone();
        json::write_str(&mut out, &text);
        prop_assert_eq!(out, appended(&prefix, &text));
        let value = Value::Array(items);
        let mut out = prefix.clone();
        json::write_value(&mut out, &value);
        prop_assert_eq!(out, appended(&prefix, &value));
    }
}

/// `prefix`, then serde_json's bytes of `value`.
fn appended<T: serde::Serialize + ?Sized>(prefix: &[u8], value: &T) -> Vec<u8> {
    let mut expected = prefix.to_vec();
    expected.extend(serde_json::to_vec(value).unwrap());
    expected
}
