//! A JSON writer for [`Value`]s that produces exactly serde_json's compact output, but
//! scans strings sixteen bytes at a time (SSE2 on x86_64, eight bytes of integer
//! arithmetic elsewhere) for characters that need escaping instead of one byte at a
//! time. Large string payloads (transcripts, base64 audio) cross the process boundary
//! twice per call; this keeps them near memory-copy speed.

use serde_json::{Map, Value};

/// `value` as compact JSON, byte for byte what `serde_json::to_vec` writes.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(estimated_len(value));
    write_value(&mut out, value);
    out
}

/// Append the body of an `/execute` or `/execute_stream` request to `out`, reserving
/// room for it once: growing it by doubling would copy a large payload several times.
pub fn write_call_body(out: &mut Vec<u8>, args: &[Value], kwargs: &Map<String, Value>) {
    let args_len = args.iter().map(estimated_len).sum::<usize>() + args.len() + 2;
    let kwargs_len = estimated_len_of_object(kwargs);
    out.reserve(args_len + kwargs_len + 20);
    out.extend_from_slice(b"{\"args\":");
    write_array(out, args);
    out.extend_from_slice(b",\"kwargs\":");
    write_object(out, kwargs);
    out.push(b'}');
}

/// Append `value` as compact JSON.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            // Writing into a Vec cannot fail, and a Number is always representable.
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_str(out, text),
        Value::Array(items) => write_array(out, items),
        Value::Object(map) => write_object(out, map),
    }
}

/// Append a JSON array.
pub fn write_array(out: &mut Vec<u8>, items: &[Value]) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_value(out, item);
    }
    out.push(b']');
}

/// Append a JSON object.
pub fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    out.push(b'{');
    for (index, (key, item)) in map.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, item);
    }
    out.push(b'}');
}

/// Clean runs are found and copied a block at a time: the copy then reads what the
/// scan has just brought into the cache, instead of reading a large string from
/// memory twice.
const SCAN_BLOCK: usize = 4096;

/// A destination up to this many bytes ahead of its source, modulo 4 KiB, makes a
/// block-sized copy slow: each load of the source looks, by its address's low 12
/// bits, like it depends on a store just made to the destination ("4K aliasing"),
/// and waits. glibc 2.36's memcpy copies 4 KiB blocks 4 to 6 times slower so (AMD
/// EPYC, AVX2: at 1 to 31 bytes; wider vectors widen the window); one copy of a
/// large run takes another path and is not slowed. It is common: every large
/// allocation starts 16 bytes into a page, so a string copied after a short prefix
/// (`{"args":["`) is a few bytes ahead.
const ALIASING_WINDOW: usize = 128;

/// Append a JSON string: clean runs are found sixteen (elsewhere eight) bytes at a
/// time and copied a block at a time, or whole where block copies would alias.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // bytes[copied..index] are clean, found and not yet copied.
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        let block_end = (index + SCAN_BLOCK).min(bytes.len());
        index += clean_prefix_len(&bytes[index..block_end]);
        let escape = index < block_end;
        if escape || !copy_would_alias(out, &bytes[copied..]) {
            out.extend_from_slice(&bytes[copied..index]);
            copied = index;
        }
        if escape {
            write_escape(out, bytes[index]);
            index += 1;
            copied = index;
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

/// Whether appending `from` to `out` would put the copy a little ahead of its source
/// in the sense of [`ALIASING_WINDOW`].
fn copy_would_alias(out: &[u8], from: &[u8]) -> bool {
    let destination = out.as_ptr() as usize + out.len();
    let ahead = destination.wrapping_sub(from.as_ptr() as usize) % 4096;
    (1..ALIASING_WINDOW).contains(&ahead)
}

/// How many leading bytes need no escaping.
fn clean_prefix_len(bytes: &[u8]) -> usize {
    let scanned = clean_prefix_len_wide(bytes);
    scanned
        + bytes[scanned..]
            .iter()
            .take_while(|&&b| !needs_escape(b))
            .count()
}

/// How many leading bytes need no escaping, in whole 16-byte steps (x86_64: SSE2,
/// which every x86_64 processor has). The bytewise tail is the caller's.
#[cfg(target_arch = "x86_64")]
fn clean_prefix_len_wide(bytes: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut offset = 0;
    // SAFETY: SSE2 is part of the x86_64 baseline; every load reads 16 bytes that
    // `chunks_exact` guarantees are inside `bytes`, and loadu needs no alignment.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        for chunk in bytes.chunks_exact(16) {
            let x = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            // max(x, 0x1f) == 0x1f exactly when x <= 0x1f, unsigned.
            let control = _mm_cmpeq_epi8(_mm_max_epu8(x, below_space), below_space);
            let special = _mm_or_si128(
                control,
                _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
            );
            let mask = _mm_movemask_epi8(special);
            if mask != 0 {
                return offset + mask.trailing_zeros() as usize;
            }
            offset += 16;
        }
    }
    offset
}

#[cfg(not(target_arch = "x86_64"))]
fn clean_prefix_len_wide(bytes: &[u8]) -> usize {
    clean_prefix_len_swar(bytes)
}

/// How many leading bytes need no escaping, in whole 8-byte steps of plain integer
/// arithmetic: for processors without the x86_64 path.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn clean_prefix_len_swar(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGHS: u64 = ONES * 0x80;
    let mut offset = 0;
    for word in bytes.chunks_exact(8) {
        let mut array = [0u8; 8];
        array.copy_from_slice(word);
        let x = u64::from_le_bytes(array);
        // Mycroft's trick: a high bit marks a byte below 0x20, equal to '"' or to '\'.
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let quote =
            (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'"')));
        let backslash =
            (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'\\')));
        if (below_space | quote | backslash) & HIGHS != 0 {
            break;
        }
        offset += 8;
    }
    offset
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

/// A size hint for the output buffer, so that large documents are not regrown.
fn estimated_len(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len() + 2,
        Value::Array(items) => items.iter().map(estimated_len).sum::<usize>() + items.len() + 2,
        Value::Object(map) => estimated_len_of_object(map),
        _ => 8,
    }
}

fn estimated_len_of_object(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(key, item)| key.len() + 4 + estimated_len(item))
        .sum::<usize>()
        + 2
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_call_body_is_the_wire_form_in_one_allocation() {
        let args = vec![json!("x".repeat(10_000)), json!({"n": [1, 2.5, null]})];
        let kwargs = json!({"repeat": 2, "file_path": "/tmp/a \"b\""});
        let kwargs = kwargs.as_object().unwrap();
        let mut body = Vec::new();
        write_call_body(&mut body, &args, kwargs);
        let expected = json!({"args": args, "kwargs": kwargs});
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), expected);
        assert!(body.capacity() >= body.len() && body.capacity() < body.len() + 64);
        let mut empty = Vec::new();
        write_call_body(&mut empty, &[], &Map::new());
        assert_eq!(empty, br#"{"args":[],"kwargs":{}}"#);
    }

    fn same_as_serde(value: &Value) {
        assert_eq!(
            String::from_utf8(to_vec(value)).unwrap(),
            serde_json::to_string(value).unwrap(),
            "{value:?}"
        );
    }

    #[test]
    fn output_equals_serde_json_for_every_kind_of_value() {
        same_as_serde(&json!(null));
        same_as_serde(&json!([
            true,
            false,
            0,
            -17,
            18446744073709551615u64,
            1.5,
            -0.0,
            1e300
        ]));
        same_as_serde(&json!({"a": {"b": [1, {"c": "d"}]}, "": "", "k\"ey": "v\\al"}));
        same_as_serde(&json!("plain ascii text that is longer than eight bytes"));
        same_as_serde(&json!("ünïcödé 漢字 🎉 mixed with ascii"));
    }

    #[test]
    fn escapes_at_and_around_block_edges_are_written_once() {
        for edge in [SCAN_BLOCK - 1, SCAN_BLOCK, SCAN_BLOCK + 1, 2 * SCAN_BLOCK] {
            for escaped in ['"', '\\', '\n', '\u{1}'] {
                let mut text: Vec<char> = "é".repeat(3 * SCAN_BLOCK).chars().collect();
                text.truncate(3 * SCAN_BLOCK / 2);
                let mut text: String = text.into_iter().collect();
                text.extend(std::iter::repeat_n('a', 2 * SCAN_BLOCK));
                let at = (0..=edge)
                    .rev()
                    .find(|&at| text.is_char_boundary(at))
                    .unwrap();
                text.insert(at, escaped);
                same_as_serde(&Value::String(text));
            }
        }
        same_as_serde(&Value::String("\"".repeat(3 * SCAN_BLOCK)));
        // One-byte text puts the escape on every byte around each edge, the last
        // byte of a block included.
        for edge in [SCAN_BLOCK, 2 * SCAN_BLOCK] {
            for at in edge - 3..=edge + 2 {
                for escaped in ['"', '\\', '\n', '\u{1f}'] {
                    let mut text = "a".repeat(3 * SCAN_BLOCK);
                    text.insert(at, escaped);
                    same_as_serde(&Value::String(text));
                }
            }
        }
    }

    #[test]
    fn strings_are_written_whole_whatever_the_buffers_alignment() {
        // Escapes a few blocks apart, so that runs are copied both ways.
        let mut text = "x".repeat(5 * SCAN_BLOCK);
        for at in [SCAN_BLOCK - 1, 2 * SCAN_BLOCK + 7, 4 * SCAN_BLOCK] {
            text.insert(at, '\n');
        }
        let expected = serde_json::to_vec(&text).unwrap();
        let source = text.as_ptr() as usize;
        for ahead in [
            0,
            1,
            2,
            31,
            32,
            63,
            64,
            ALIASING_WINDOW - 1,
            ALIASING_WINDOW,
            2048,
            4095,
        ] {
            // A prefix that puts the string's first byte `ahead` bytes past its source
            // (modulo 4 KiB) in a buffer that is not moved while it is written.
            let mut out: Vec<u8> = Vec::with_capacity(8 * SCAN_BLOCK);
            let start = out.as_ptr() as usize;
            let prefix = (source + ahead).wrapping_sub(start + 1) % 4096;
            out.resize(prefix, b'p');
            out.push(b'"');
            let aliased = copy_would_alias(&out, text.as_bytes());
            assert_eq!(aliased, (1..ALIASING_WINDOW).contains(&ahead), "{ahead}");
            out.pop();
            write_str(&mut out, &text);
            assert_eq!(out.as_ptr() as usize, start, "the buffer moved");
            assert!(out[..prefix].iter().all(|&b| b == b'p'));
            assert!(out[prefix..] == expected[..], "{ahead} bytes ahead");
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_at_every_position() {
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '\u{7f}', 'é'])
            .collect();
        for special in specials {
            for position in 0..20 {
                let mut text: String = "abcdefghijklmnopqrst".chars().take(position).collect();
                text.push(special);
                text.push_str("tail-after-the-special");
                same_as_serde(&Value::String(text));
            }
        }
    }

    #[test]
    fn the_wide_scan_stops_exactly_at_the_first_special_byte() {
        // Every byte value at every place of a 16-byte step, amid bytes that need no
        // escaping, high (UTF-8) ones among them.
        for special in 0u8..=255 {
            for position in 0..48 {
                let mut bytes: Vec<u8> = (0..64).map(|i| [b'a', 0x80, 0xff, 0x7f][i % 4]).collect();
                bytes[position] = special;
                let expected = if needs_escape(special) { position } else { 64 };
                assert_eq!(
                    clean_prefix_len(&bytes),
                    expected,
                    "byte {special:#x} at {position}"
                );
                // The portable scan stops on a special byte or before it, never after.
                let swar = clean_prefix_len_swar(&bytes);
                assert!(
                    swar <= expected && swar % 8 == 0,
                    "{special:#x} at {position}: {swar}"
                );
            }
        }
    }

    #[test]
    fn large_strings_round_trip() {
        let text = "x".repeat(1 << 20) + "\n\"end\"";
        let written = to_vec(&json!({"args": [text.clone()]}));
        let back: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(back["args"][0], text);
    }
}
