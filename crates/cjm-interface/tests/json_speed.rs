//! How fast the JSON writer is beside serde_json's, on what crosses the process
//! boundary: a 10 MiB string (a transcript, base64 audio) and a typical small result.
//! The writer earns its place only by being faster; this says by how much.
//!
//! Run in release mode (a debug build measures the debug build):
//!
//! ```sh
//! cargo test --release -p cjm-interface --test json_speed -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use cjm_interface::json;
use serde::Serialize;
use serde_json::{json, Map, Value};

const MIB: usize = 1024 * 1024;

/// `wire::ExecuteRequest`, borrowing: serialising it copies nothing beforehand.
#[derive(Serialize)]
struct CallBody<'a> {
    args: &'a [Value],
    kwargs: &'a Map<String, Value>,
}

/// Time `batch` runs of `work`, per run.
fn time_per_run(batch: usize, work: &mut impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..batch {
        work();
    }
    start.elapsed() / batch as u32
}

/// One comparison: ours, then serde_json's, then how many times faster ours is.
/// The two take turns, round by round, so that a machine busy with something else
/// slows both alike; each figure is the median of `rounds`.
fn compare(
    what: &str,
    rounds: usize,
    batch: usize,
    mut ours: impl FnMut(),
    mut theirs: impl FnMut(),
) -> f64 {
    let (mut ours_samples, mut theirs_samples) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours_samples.push(time_per_run(batch, &mut ours));
        theirs_samples.push(time_per_run(batch, &mut theirs));
    }
    ours_samples.sort();
    theirs_samples.sort();
    let (ours, theirs) = (ours_samples[rounds / 2], theirs_samples[rounds / 2]);
    let ratio = theirs.as_secs_f64() / ours.as_secs_f64();
    eprintln!("{what:<56} ours {ours:>10.2?}  serde_json {theirs:>10.2?}  x{ratio:.2}");
    ratio
}

/// Text like a transcript: words, a line break every 80 bytes or so, a quoted word
/// now and then. Every line break and quote needs escaping.
fn transcript(len: usize) -> String {
    let line = "and then he said \"well\" and we all went home along the river, slowly.\n";
    line.repeat(len / line.len() + 1)[..len].to_owned()
}

#[test]
#[ignore = "a measurement: run it in release mode, see the module's documentation"]
fn the_writer_beside_serde_json() {
    if cfg!(debug_assertions) {
        eprintln!("skipped: a debug build; run with --release");
        return;
    }
    let plain = Value::String("x".repeat(10 * MIB));
    let text = Value::String(transcript(10 * MIB));
    let small = json!({
        "text": "hello world, this is a short transcript",
        "language": "en",
        "duration": 12.345,
        "segments": [
            {"start": 0.0, "end": 1.5, "text": "hello world,"},
            {"start": 1.5, "end": 4.25, "text": "this is a short transcript"},
        ],
        "ok": true,
        "model": null,
    });

    eprintln!();
    let mut buffer = Vec::with_capacity(11 * MIB);
    let mut theirs_buffer = Vec::with_capacity(11 * MIB);
    let mut large = Vec::new();
    for (name, value) in [
        ("10 MiB string, no escapes", &plain),
        ("10 MiB transcript", &text),
    ] {
        // As the worker answers: a fresh buffer each time.
        large.push(compare(
            &format!("{name}: to_vec"),
            15,
            1,
            || drop(black_box(json::to_vec(black_box(value)))),
            || drop(black_box(serde_json::to_vec(black_box(value)).unwrap())),
        ));
        // As the proxy sends: into a buffer kept from call to call, the string's
        // copy a little ahead of its source modulo 4 KiB (as it is when both are
        // large allocations and a short prefix comes first), or far from it.
        let source = value.as_str().unwrap().as_ptr() as usize;
        for ahead in [8, 512] {
            let prefix =
                |out: &Vec<u8>| (source + ahead).wrapping_sub(out.as_ptr() as usize + 1) % 4096;
            let (ours_prefix, theirs_prefix) = (prefix(&buffer), prefix(&theirs_buffer));
            large.push(compare(
                &format!("{name}: kept buffer, copy {ahead} B ahead"),
                15,
                1,
                || {
                    buffer.resize(ours_prefix, b' ');
                    json::write_value(&mut buffer, black_box(value));
                },
                || {
                    theirs_buffer.resize(theirs_prefix, b' ');
                    serde_json::to_writer(&mut theirs_buffer, black_box(value)).unwrap();
                },
            ));
        }
    }
    let args = vec![text.clone()];
    let kwargs = Map::new();
    large.push(compare(
        "10 MiB transcript: call body into a kept buffer",
        15,
        1,
        || {
            buffer.clear();
            json::write_call_body(&mut buffer, black_box(&args), black_box(&kwargs));
        },
        || {
            theirs_buffer.clear();
            let request = CallBody {
                args: &args,
                kwargs: &kwargs,
            };
            serde_json::to_writer(&mut theirs_buffer, black_box(&request)).unwrap();
        },
    ));
    let small_ratio = compare(
        "small result object: to_vec",
        31,
        20_000,
        || drop(black_box(json::to_vec(black_box(&small)))),
        || drop(black_box(serde_json::to_vec(black_box(&small)).unwrap())),
    );
    eprintln!();
    for ratio in large {
        assert!(
            ratio > 1.0,
            "the writer is no faster than serde_json: x{ratio:.2}"
        );
    }
    assert!(
        small_ratio > 0.8,
        "the writer is much slower than serde_json on small values: x{small_ratio:.2}"
    );
}
