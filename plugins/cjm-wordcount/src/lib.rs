//! `cjm-wordcount`: counts the lines, words and bytes of a text file, as `wc` does.
//!
//! It is the example of a plugin doing real work on a file-backed input: the host
//! passes only the file's path, and the plugin reads the file a chunk at a time, so
//! memory stays bounded by `chunk_bytes` however large the file is. After every chunk
//! it reports its progress to the host (and the streaming form yields it as a chunk
//! too), and it stops there when the host has cancelled the call.

mod adapter;

pub use adapter::{TextStatistics, TEXT_STATISTICS};

use std::fs::File;
use std::io::{self, Read};

use cjm_interface::{Call, CallControl, ChunkIter, ConfigMap, Plugin, PluginError};
use cjm_metadata::ResourceRequirements;
use cjm_worker::About;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const NAME: &str = "cjm-wordcount";

pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;
/// Smaller chunks would make a progress line per few words.
pub const MIN_CHUNK_BYTES: usize = 4096;
/// The buffer is allocated whole for every call, and calls may run concurrently.
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// The manifest fields beyond name and version.
pub fn about() -> About {
    About::new()
        .description("Counts lines, words and bytes of a text file, streaming progress")
        .package_name(env!("CARGO_PKG_NAME"))
        .category("text")
        // Said explicitly: hosts schedule by this, and counting needs no GPU.
        .resources(ResourceRequirements::default())
}

/// How the file is read
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
// Keys left out take their defaults, so that `{}` resets.
#[serde(default)]
#[schemars(rename = "cjm-wordcount", title = "Word count configuration")]
pub struct WordCountConfig {
    /// Bytes read from the file at a time; the stream reports progress after each chunk
    #[schemars(title = "Chunk size", range(min = MIN_CHUNK_BYTES, max = MAX_CHUNK_BYTES))]
    pub chunk_bytes: usize,
}

impl Default for WordCountConfig {
    fn default() -> Self {
        WordCountConfig {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// Line, word and byte counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Newline bytes, as `wc -l` counts: a last line without one is not counted.
    pub lines: u64,
    /// Maximal runs of bytes that are not ASCII whitespace ([`u8::is_ascii_whitespace`],
    /// the same set as [`str::split_ascii_whitespace`]); other bytes, UTF-8 included,
    /// are part of words.
    pub words: u64,
    pub bytes: u64,
}

/// Counts a byte stream fed in pieces of any size.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    counts: Counts,
    /// Whether the last byte fed was part of a word: a word that spans two pieces must
    /// be counted once.
    in_word: bool,
}

impl Counter {
    pub fn feed(&mut self, piece: &[u8]) {
        for &byte in piece {
            if byte == b'\n' {
                self.counts.lines += 1;
            }
            if byte.is_ascii_whitespace() {
                self.in_word = false;
            } else if !self.in_word {
                self.in_word = true;
                self.counts.words += 1;
            }
        }
        self.counts.bytes += piece.len() as u64;
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }
}

/// Reads until `buf` is full or the reader is at its end, so that every chunk but the
/// last is exactly `chunk_bytes` long whatever sizes the reads return.
fn read_chunk(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// A count in progress over one open file: the lazy iterator that `execute_stream`
/// returns, and what `execute` drives to the end.
///
/// It yields a progress object after every chunk, then the final counts; a read error
/// is yielded once, after which the stream ends. The file is closed as soon as the
/// stream has ended, not when the caller drops it.
#[derive(Debug)]
pub struct WordCountStream<R = File> {
    /// `None` once the stream has ended.
    reader: Option<R>,
    buf: Vec<u8>,
    counter: Counter,
    total_bytes: u64,
    file_path: String,
    /// The call's: progress goes there, and cancellation comes from there.
    control: CallControl,
}

impl WordCountStream<File> {
    /// Open `file_path`; failing to open it is the caller's mistake, not the plugin's.
    pub fn open(file_path: &str, chunk_bytes: usize) -> Result<Self, PluginError> {
        let cannot_open = |err: io::Error| {
            PluginError::invalid_argument(format!("cannot open '{file_path}': {err}"))
        };
        let file = File::open(file_path).map_err(cannot_open)?;
        let metadata = file.metadata().map_err(cannot_open)?;
        // Opening a directory succeeds on Unix; only the first read would fail, and
        // that would look like a fault of the plugin rather than of the argument.
        if metadata.is_dir() {
            return Err(PluginError::invalid_argument(format!(
                "cannot count '{file_path}': it is a directory"
            )));
        }
        Ok(Self::from_reader(
            file,
            metadata.len(),
            file_path,
            chunk_bytes,
        ))
    }
}

impl<R: Read> WordCountStream<R> {
    /// Count what `reader` yields; `total_bytes` is only reported, never relied on,
    /// because a file may change size while it is read.
    pub fn from_reader(reader: R, total_bytes: u64, file_path: &str, chunk_bytes: usize) -> Self {
        WordCountStream {
            reader: Some(reader),
            buf: vec![0; chunk_bytes.max(1)],
            counter: Counter::default(),
            total_bytes,
            file_path: file_path.to_owned(),
            control: CallControl::default(),
        }
    }

    /// Report progress to, and stop when cancelled through, `control`.
    pub fn with_control(mut self, control: CallControl) -> Self {
        self.control = control;
        self
    }

    /// Read and count the next chunk; `Ok(false)` at end of file. Ends the stream at
    /// end of file and on error.
    fn step(&mut self) -> Result<bool, PluginError> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        match read_chunk(reader, &mut self.buf) {
            Ok(0) => {
                self.finish();
                Ok(false)
            }
            Ok(n) => {
                self.counter.feed(&self.buf[..n]);
                let read = self.counter.counts().bytes;
                let fraction = if self.total_bytes == 0 {
                    -1.0
                } else {
                    read as f64 / self.total_bytes as f64
                };
                self.control.report_progress(
                    fraction,
                    format!("counted {read} of {} bytes", self.total_bytes),
                );
                // Between chunks is where stopping is safe and cheap.
                if let Err(cancelled) = self.control.check_cancelled() {
                    self.finish();
                    return Err(cancelled);
                }
                Ok(true)
            }
            Err(err) => {
                self.finish();
                Err(PluginError::failed(format!(
                    "reading '{}' failed after {} bytes: {err}",
                    self.file_path,
                    self.counter.counts().bytes
                )))
            }
        }
    }

    fn has_ended(&self) -> bool {
        self.reader.is_none()
    }

    fn finish(&mut self) {
        self.reader = None;
        // The buffer may be large, and the caller may hold the ended stream a while.
        self.buf = Vec::new();
    }

    pub fn counts(&self) -> Counts {
        self.counter.counts()
    }

    fn progress(&self) -> Value {
        let counts = self.counts();
        json!({
            "status": "progress",
            "bytes_read": counts.bytes,
            "total_bytes": self.total_bytes,
            "lines": counts.lines,
            "words": counts.words,
        })
    }

    /// The result of `execute`.
    fn result(&self) -> Value {
        let counts = self.counts();
        json!({
            "lines": counts.lines,
            "words": counts.words,
            "bytes": counts.bytes,
            "file_path": self.file_path,
        })
    }

    /// Count the rest of the input and return the result of `execute`.
    pub fn run_to_end(mut self) -> Result<Value, PluginError> {
        while self.step()? {}
        Ok(self.result())
    }
}

impl<R: Read> Iterator for WordCountStream<R> {
    type Item = Result<Value, PluginError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.has_ended() {
            return None;
        }
        Some(match self.step() {
            Ok(true) => Ok(self.progress()),
            Ok(false) => {
                let mut done = self.result();
                if let Value::Object(fields) = &mut done {
                    fields.insert("status".into(), "done".into());
                }
                Ok(done)
            }
            Err(err) => Err(err),
        })
    }
}

#[derive(Debug, Default)]
pub struct WordCountPlugin {
    config: WordCountConfig,
}

impl WordCountPlugin {
    pub fn config(&self) -> &WordCountConfig {
        &self.config
    }

    fn open(&self, call: &Call) -> Result<WordCountStream, PluginError> {
        call.reject_unknown_kwargs(&["file_path"])?;
        let file_path: String = call.required(0, "file_path")?;
        Ok(
            WordCountStream::open(&file_path, self.config.chunk_bytes)?
                .with_control(call.control()),
        )
    }
}

impl Plugin for WordCountPlugin {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn initialize(&mut self, config: ConfigMap) -> Result<(), PluginError> {
        // Parsed completely before assigning, so a refused configuration leaves the
        // previous one in force, as the contract requires.
        self.config = cjm_worker::config::parse(&config)?;
        Ok(())
    }

    fn execute(&self, call: Call) -> Result<Value, PluginError> {
        self.open(&call)?.run_to_end()
    }

    fn execute_stream(&self, call: Call) -> Result<ChunkIter<'_>, PluginError> {
        Ok(Box::new(self.open(&call)?))
    }

    fn config_schema(&self) -> Value {
        cjm_worker::config::schema::<WordCountConfig>()
    }

    fn current_config(&self) -> Value {
        cjm_worker::config::to_value(&self.config)
    }
}

/// The plugin binary's whole `main`; a library function so that test harnesses can
/// link the very same worker into binaries of their own.
pub fn main() -> std::process::ExitCode {
    let adapters = cjm_worker::TaskAdapters::new().with(TextStatistics);
    cjm_worker::main_with_adapters(about(), adapters, |_plugin_args| {
        Ok(WordCountPlugin::default())
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use cjm_interface::ErrorKind;

    use super::*;

    #[test]
    fn the_defaults_satisfy_the_schema() {
        cjm_worker::config::check_defaults::<WordCountConfig>().unwrap();
    }

    #[test]
    fn reports_progress_per_chunk_and_stops_at_the_next_chunk_once_cancelled() {
        let text = "abc ".repeat(CHUNK); // four chunks exactly
        let control = CallControl::new("c");
        let mut stream =
            WordCountStream::from_reader(text.as_bytes(), text.len() as u64, "text", CHUNK)
                .with_control(control.clone());
        assert!(stream.next().unwrap().is_ok());
        let first = control.progress();
        assert_eq!((first.seq, first.fraction), (1, 0.25));
        assert!(first.message.contains(&format!("of {} bytes", text.len())));
        control.cancel();
        let err = stream.next().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(
            stream.next().is_none(),
            "the stream ends after the cancellation"
        );
        assert_eq!(
            stream.counts().bytes,
            2 * CHUNK as u64,
            "one more chunk, not more"
        );
    }

    const CHUNK: usize = MIN_CHUNK_BYTES;

    fn call(body: Value) -> Call {
        serde_json::from_value(body).unwrap()
    }

    fn config(value: Value) -> ConfigMap {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn plugin_with_small_chunks() -> WordCountPlugin {
        let mut plugin = WordCountPlugin::default();
        plugin
            .initialize(config(json!({"chunk_bytes": CHUNK})))
            .unwrap();
        plugin
    }

    /// The obvious whole-string count the chunked one must agree with.
    fn reference(text: &str) -> Counts {
        Counts {
            lines: text.bytes().filter(|&b| b == b'\n').count() as u64,
            words: text.split_ascii_whitespace().count() as u64,
            bytes: text.len() as u64,
        }
    }

    /// About 10 KB of varied text in which a word straddles each chunk boundary.
    fn sample_text() -> String {
        let separators = [" ", "\n", "\t", "  ", "\r\n", " \x0c", "\n\n"];
        let words = [
            "a",
            "word",
            "ünïcode",
            "counting",
            "x\x0by",
            "chunk-boundaries",
            "€",
        ];
        let mut text = String::new();
        let mut i = 0;
        for boundary in [CHUNK, 2 * CHUNK, 10_000] {
            while text.len() + 20 < boundary {
                text.push_str(words[i % words.len()]);
                text.push_str(separators[(i * 3 + 1) % separators.len()]);
                i += 1;
            }
            // The loop ended on a separator short of the boundary: this word crosses it.
            let straddler = "z".repeat(boundary + 5 - text.len());
            text.push_str(&straddler);
            text.push(' ');
        }
        let bytes = text.as_bytes();
        for boundary in [CHUNK, 2 * CHUNK] {
            assert!(!bytes[boundary - 1].is_ascii_whitespace());
            assert!(!bytes[boundary].is_ascii_whitespace());
        }
        text
    }

    fn temp_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file.flush().unwrap();
        file
    }

    fn path_of(file: &tempfile::NamedTempFile) -> &str {
        file.path().to_str().unwrap()
    }

    #[test]
    fn counter_agrees_with_whole_string_count_at_every_split() {
        let text = "  hello wörld\tfoo\r\nbar  \n\nbaz\x0bqux end";
        for split in 0..=text.len() {
            let mut counter = Counter::default();
            counter.feed(&text.as_bytes()[..split]);
            counter.feed(&text.as_bytes()[split..]);
            assert_eq!(counter.counts(), reference(text), "split at {split}");
        }
    }

    #[test]
    fn counts_a_file_read_in_small_chunks() {
        let text = sample_text();
        assert!(
            text.len() > 2 * CHUNK && text.len() < 3 * CHUNK,
            "{}",
            text.len()
        );
        let file = temp_file(&text);
        let out = plugin_with_small_chunks()
            .execute(call(json!({"args": [path_of(&file)]})))
            .unwrap();
        let expected = reference(&text);
        assert_eq!(
            out,
            json!({
                "lines": expected.lines,
                "words": expected.words,
                "bytes": expected.bytes,
                "file_path": path_of(&file),
            })
        );
    }

    #[test]
    fn stream_reports_monotonic_progress_then_execute_totals() {
        let text = sample_text();
        let file = temp_file(&text);
        let plugin = plugin_with_small_chunks();
        let chunks: Vec<Value> = plugin
            .execute_stream(call(json!({"kwargs": {"file_path": path_of(&file)}})))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let (done, progress) = chunks.split_last().unwrap();
        assert_eq!(progress.len(), text.len().div_ceil(CHUNK));
        let mut previous = (0, 0, 0);
        for chunk in progress {
            assert_eq!(chunk["status"], "progress");
            assert_eq!(chunk["total_bytes"], text.len());
            let now = (
                chunk["bytes_read"].as_u64().unwrap(),
                chunk["lines"].as_u64().unwrap(),
                chunk["words"].as_u64().unwrap(),
            );
            assert!(
                now.0 > previous.0 && now.0 as usize <= text.len(),
                "{chunk}"
            );
            assert!(now.1 >= previous.1 && now.2 >= previous.2, "{chunk}");
            previous = now;
        }
        assert_eq!(previous.0 as usize, text.len());

        let mut expected = plugin
            .execute(call(json!({"args": [path_of(&file)]})))
            .unwrap();
        expected["status"] = json!("done");
        assert_eq!(done, &expected);
    }

    #[test]
    fn empty_file_streams_only_the_result() {
        let file = temp_file("");
        let chunks: Vec<Value> = WordCountPlugin::default()
            .execute_stream(call(json!({"args": [path_of(&file)]})))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            chunks,
            [
                json!({"status": "done", "lines": 0, "words": 0, "bytes": 0, "file_path": path_of(&file)})
            ]
        );
    }

    #[test]
    fn missing_file_or_directory_is_an_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let missing = missing.to_str().unwrap();
        let plugin = WordCountPlugin::default();
        let err = plugin
            .execute(call(json!({"args": [missing]})))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains(missing), "{err}");
        assert!(err.message().contains("No such file"), "{err}");
        let Err(err) = plugin.execute_stream(call(json!({"args": [missing]}))) else {
            panic!("streaming a missing file started");
        };
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let err = plugin
            .execute(call(json!({"args": [dir.path().to_str().unwrap()]})))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("directory"), "{err}");
    }

    #[test]
    fn bad_arguments_are_refused() {
        let plugin = WordCountPlugin::default();
        let err = plugin.execute(call(json!({}))).unwrap_err();
        assert!(err.message().contains("'file_path'"), "{err}");
        let err = plugin
            .execute(call(json!({"kwargs": {"file_path": "/x", "mode": "fast"}})))
            .unwrap_err();
        assert!(err.message().contains("mode"), "{err}");
    }

    /// Gives `good` bytes, then fails.
    struct FailingReader {
        good: usize,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.good.min(buf.len());
            buf[..n].fill(b'w');
            self.good -= n;
            Ok(n)
        }
    }

    #[test]
    fn read_error_mid_stream_is_yielded_once_then_ends() {
        let reader = FailingReader { good: CHUNK + 10 };
        let mut stream = WordCountStream::from_reader(reader, 1 << 20, "f.txt", CHUNK);
        let first = stream.next().unwrap().unwrap();
        assert_eq!(first["bytes_read"], CHUNK);
        // The second chunk gets 10 bytes, then the error: nothing partial is reported.
        let err = stream.next().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Failed);
        assert!(err.message().contains("disk on fire"), "{err}");
        assert!(err.message().contains("f.txt"), "{err}");
        assert!(stream.next().is_none());
        assert!(stream.next().is_none());

        let reader = FailingReader { good: 3 };
        let err = WordCountStream::from_reader(reader, 3, "g.txt", CHUNK)
            .run_to_end()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Failed);
    }

    #[test]
    fn refused_config_keeps_the_previous_one() {
        let mut plugin = WordCountPlugin::default();
        plugin
            .initialize(config(json!({"chunk_bytes": 8192})))
            .unwrap();
        let refusals = [
            (
                json!({"chunk_bytes": MIN_CHUNK_BYTES - 1}),
                "chunk_bytes: 4095 is less than the minimum of 4096",
            ),
            (
                json!({"chunk_bytes": MAX_CHUNK_BYTES + 1}),
                "chunk_bytes: 67108865 is greater than the maximum of 67108864",
            ),
            (json!({"chunk_bytes": -5}), "chunk_bytes: -5 is less than"),
            (
                json!({"chunk_bytes": 8192.5}),
                r#"8192.5 is not of type "integer""#,
            ),
            // Integral, so the schema passes it; the type does not.
            (json!({"chunk_bytes": 8192.0}), "does not fit"),
            (
                json!({"chunk_bytes": "8192"}),
                r#""8192" is not of type "integer""#,
            ),
            (
                json!({"chunk_bytes": 8192, "speed": 2}),
                "speed: unknown key; known keys: chunk_bytes",
            ),
        ];
        for (bad, why) in refusals {
            let err = plugin.initialize(config(bad.clone())).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
            assert!(err.message().contains(why), "{bad}: {err}");
            assert_eq!(
                plugin.current_config(),
                json!({"chunk_bytes": 8192}),
                "{bad}"
            );
        }
        plugin
            .initialize(config(json!({"chunk_bytes": MAX_CHUNK_BYTES})))
            .unwrap();
        plugin.initialize(ConfigMap::new()).unwrap();
        assert_eq!(plugin.config(), &WordCountConfig::default());
        assert_eq!(
            plugin.config_schema()["properties"]["chunk_bytes"]["default"],
            plugin.current_config()["chunk_bytes"]
        );
    }

    #[test]
    fn schema_is_derived_from_the_config_type() {
        let schema = WordCountPlugin::default().config_schema();
        assert_eq!(
            schema,
            json!({
                "name": NAME,
                "title": "Word count configuration",
                "description": "How the file is read",
                "type": "object",
                "properties": {
                    "chunk_bytes": {
                        "type": "integer",
                        "title": "Chunk size",
                        "description": "Bytes read from the file at a time; the stream reports progress after each chunk",
                        "default": DEFAULT_CHUNK_BYTES,
                        "minimum": MIN_CHUNK_BYTES,
                        "maximum": MAX_CHUNK_BYTES,
                    }
                }
            })
        );
        cjm_worker::cjm_validation::check_schema(&schema).unwrap();
    }
}
