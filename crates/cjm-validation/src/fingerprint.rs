//! A short name for one exact schema, the same in every process that holds it.
//!
//! The host validates a configuration against the manifest's `config_schema` before
//! it sends it; the worker would check it again against its plugin's own schema. When
//! the host says which schema it checked against and that is the worker's own, the
//! second check is redundant (see `cjm_interface::wire::CONFIG_CHECKED_HEADER`).

use serde_json::Value;

/// FNV-1a (64 bits) of the schema in a canonical form: object keys sorted, whatever
/// order the map kept them in, so that equal schemas always agree. FNV rather than
/// std's hasher, whose output may change between Rust releases: host and worker are
/// often built apart. It guards against accidents, not forgery: only the host holding
/// the worker's secret is believed.
pub fn schema_fingerprint(schema: &Value) -> String {
    let mut hasher = Fnv1a::new();
    feed(&mut hasher, schema);
    format!("{:016x}", hasher.0)
}

struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// A string, length first, so that no two sequences of strings feed the same bytes.
    fn write_str(&mut self, text: &str) {
        self.write(&(text.len() as u64).to_le_bytes());
        self.write(text.as_bytes());
    }
}

fn feed(hasher: &mut Fnv1a, value: &Value) {
    match value {
        Value::Null => hasher.write(b"n"),
        Value::Bool(flag) => hasher.write(if *flag { b"t" } else { b"f" }),
        Value::Number(number) => {
            hasher.write(b"#");
            hasher.write_str(&number.to_string());
        }
        Value::String(text) => {
            hasher.write(b"s");
            hasher.write_str(text);
        }
        Value::Array(items) => {
            hasher.write(b"[");
            hasher.write(&(items.len() as u64).to_le_bytes());
            for item in items {
                feed(hasher, item);
            }
        }
        Value::Object(map) => {
            hasher.write(b"{");
            hasher.write(&(map.len() as u64).to_le_bytes());
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, item) in entries {
                hasher.write_str(key);
                feed(hasher, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_schemas_agree_whatever_their_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"type":"object","properties":{"a":{"minimum":1},"b":{}}}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"properties":{"b":{},"a":{"minimum":1}},"type":"object"}"#)
                .unwrap();
        assert_eq!(schema_fingerprint(&a), schema_fingerprint(&b));
        assert_eq!(schema_fingerprint(&a).len(), 16);
    }

    #[test]
    fn any_change_gives_another_fingerprint() {
        let base = json!({"type": "object", "properties": {"n": {"minimum": 1, "maximum": 10}}});
        let changed = [
            json!({"type": "object", "properties": {"n": {"minimum": 1, "maximum": 11}}}),
            json!({"type": "object", "properties": {"n": {"minimum": 1.0, "maximum": 10}}}),
            json!({"type": "object", "properties": {"m": {"minimum": 1, "maximum": 10}}}),
            json!({"type": "object", "properties": {"n": {"minimum": 1}}}),
            json!({"type": "object", "properties": {"n": {"minimum": 1, "maximum": 10}}, "required": ["n"]}),
            json!({"type": ["object"], "properties": {"n": {"minimum": 1, "maximum": 10}}}),
            json!({}),
        ];
        let fingerprint = schema_fingerprint(&base);
        for other in &changed {
            assert_ne!(schema_fingerprint(other), fingerprint, "{other}");
        }
        // Strings that concatenate alike are still told apart.
        assert_ne!(
            schema_fingerprint(&json!(["ab", "c"])),
            schema_fingerprint(&json!(["a", "bc"]))
        );
    }

    #[test]
    fn the_fingerprint_is_stable_across_builds() {
        // Pinned: a host and a worker built by different toolchains must agree.
        let schema = json!({"type": "object", "properties": {"n": {"minimum": 1}}});
        assert_eq!(schema_fingerprint(&schema), "ddb22fa7e259e830");
    }
}
