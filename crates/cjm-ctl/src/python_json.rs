//! The hashes the original's successor (cjm-substrate) records in a v2 manifest's
//! `drift_tracking`: SHA-256 of Python's canonical JSON of a value
//! (`json.dumps(value, sort_keys=True, separators=(",", ":"))`, ASCII only), written
//! `sha256:<hex>`. Its host hashes the live `/config_schema` the same way at load and
//! warns of drift when the two differ, so these bytes must be Python's exactly.

use std::fmt::Write;

use serde_json::{Number, Value};

/// `sha256:<hex>` of `value`'s canonical Python JSON (`compute_config_schema_hash`).
pub fn schema_hash(value: &Value) -> String {
    let mut text = String::new();
    write_value(&mut text, value);
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (at, item) in items.iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Python sorts by code point, as Rust's str ordering does.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (at, key) in keys.into_iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push('}');
        }
    }
}

/// As `json.dumps` with `ensure_ascii`: only printable ASCII as is, the usual short
/// escapes, everything else `\uXXXX` (UTF-16, so surrogate pairs above the BMP).
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Integers as they are; a float as Python's `repr`: the shortest digits that read
/// back, positional for exponents from -4 to 15 (always with a fraction), else
/// `d.ddde±XX`.
fn write_number(out: &mut String, number: &Number) {
    let Some(float) = number.as_f64().filter(|_| number.is_f64()) else {
        out.push_str(&number.to_string());
        return;
    };
    if !float.is_finite() {
        // Not valid JSON; Python would write these names.
        out.push_str(if float.is_nan() {
            "NaN"
        } else if float > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        });
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "-1.25e-5".
    let scientific = format!("{float:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat(point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canonical(value: &Value) -> String {
        let mut text = String::new();
        write_value(&mut text, value);
        text
    }

    /// Each expected text is what Python 3.12's `json.dumps(v, sort_keys=True,
    /// separators=(",", ":"))` prints for the same value.
    #[test]
    fn writes_what_python_writes() {
        let cases = [
            (
                json!({"b": 1, "a": [true, null, "x"]}),
                r#"{"a":[true,null,"x"],"b":1}"#,
            ),
            (
                json!("é\u{1F600}\"\\\n\u{7f}\u{1}"),
                r#""\u00e9\ud83d\ude00\"\\\n\u007f\u0001""#,
            ),
            (json!(1.0), "1.0"),
            (json!(0.1), "0.1"),
            (json!(-2.5), "-2.5"),
            (json!(1e-5), "1e-05"),
            (json!(0.0001), "0.0001"),
            (json!(1e16), "1e+16"),
            (json!(1.5e300), "1.5e+300"),
            (json!(123456789012345.6), "123456789012345.6"),
            (json!(1e15), "1000000000000000.0"),
            (json!(-7), "-7"),
            (json!(18446744073709551615u64), "18446744073709551615"),
        ];
        for (value, python) in cases {
            assert_eq!(canonical(&value), python, "{value}");
        }
    }

    #[test]
    fn the_hash_is_sha256_of_those_bytes() {
        // hashlib.sha256(b'{}').hexdigest()
        assert_eq!(
            schema_hash(&json!({})),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
