//! `cjm-echo`: the test plugin of the original system, ported. It exercises every
//! part of the worker protocol (configuration, plain and file-path arguments,
//! streaming) while doing nothing heavier than string handling, and it reports the
//! process id it ran in so that tests can tell that calls crossed a process boundary.

use cjm_interface::{Call, ChunkIter, ConfigMap, Plugin, PluginError};
use cjm_metadata::ResourceRequirements;
use cjm_worker::About;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const NAME: &str = "cjm-echo";

/// What `file_content_read` says when a file was named but could not be read; the
/// original's callers compare against this exact string.
pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";

/// Bounds that keep a single call from exhausting the worker's memory or time: the
/// result of `execute` is built whole, and a stream is only bounded by its count.
pub const MAX_PREFIX_CHARS: usize = 100;
pub const MAX_REPEAT: u64 = 1_000_000;
pub const MAX_STREAM_COUNT: u64 = 10_000_000;

/// The manifest fields beyond name and version.
pub fn about() -> About {
    About::new()
        .description("Echo test plugin: repeats text, reads or writes a file, streams chunks")
        .package_name(env!("CARGO_PKG_NAME"))
        .category("test")
        // Said explicitly: hosts schedule by this, and echo must run anywhere.
        .resources(ResourceRequirements::default())
}

/// Configuration of the echo test plugin
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
// Keys left out take their defaults, so that `{}` resets.
#[serde(default)]
#[schemars(rename = "cjm-echo", title = "Echo configuration")]
pub struct EchoConfig {
    /// Prepended to every result
    // Characters, not bytes: JSON Schema's maxLength counts characters.
    #[schemars(title = "Prefix", length(max = MAX_PREFIX_CHARS))]
    pub prefix: String,
}

#[derive(Debug, Default)]
pub struct EchoPlugin {
    config: EchoConfig,
}

impl EchoPlugin {
    pub fn config(&self) -> &EchoConfig {
        &self.config
    }
}

/// The original reports any failure to read the file the same way, so a missing file,
/// a permission problem and a directory all read as [`FILE_NOT_FOUND`].
fn read_file_lossy(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => FILE_NOT_FOUND.to_owned(),
    }
}

impl Plugin for EchoPlugin {
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

    fn execute(&self, mut call: Call) -> Result<Value, PluginError> {
        call.reject_unknown_kwargs(&["text", "repeat", "file_path", "write_to"])?;
        // Taken, not copied: the text may be megabytes, and it becomes the result.
        let text: String = call.take_required(0, "text")?;
        let repeat: u64 = call.or(1, "repeat", 1u64)?;
        let file_path: Option<String> = call.optional(2, "file_path")?;
        let write_to: Option<String> = call.optional(3, "write_to")?;
        if !(1..=MAX_REPEAT).contains(&repeat) {
            return Err(PluginError::invalid_argument(format!(
                "'repeat' must be between 1 and {MAX_REPEAT}, got {repeat}"
            )));
        }
        // `repeat` is bounded, but a long text times it may still not fit; refuse
        // rather than let `String::repeat` panic on capacity overflow.
        let count = usize::try_from(repeat).unwrap_or(usize::MAX);
        let result_len = text
            .len()
            .checked_mul(count)
            .and_then(|len| len.checked_add(self.config.prefix.len()))
            .filter(|&len| len <= isize::MAX as usize)
            .ok_or_else(|| {
                PluginError::invalid_argument(format!(
                    "'text' repeated {repeat} times is too large"
                ))
            })?;
        // The text itself when it is said once, else one allocation for the copies.
        let mut result = if count == 1 { text } else { text.repeat(count) };
        if !self.config.prefix.is_empty() {
            result.insert_str(0, &self.config.prefix);
        }
        debug_assert_eq!(result.len(), result_len);
        let file_content_read = file_path.as_deref().map(read_file_lossy);
        // A file for the next step of a pipeline to read (`cjm-ctl run`'s example).
        if let Some(path) = &write_to {
            std::fs::write(path, &result).map_err(|err| {
                PluginError::invalid_argument(format!("cannot write to '{path}': {err}"))
            })?;
        }
        let mut answer = json!({
            "result": result,
            "processed_by_pid": std::process::id(),
            "file_content_read": file_content_read,
            "config_used": self.current_config(),
        });
        // Only when asked: the original's callers compare the answer's keys.
        if let (Some(path), Value::Object(map)) = (write_to, &mut answer) {
            map.insert(String::from("written_to"), Value::String(path));
        }
        Ok(answer)
    }

    fn execute_stream(&self, call: Call) -> Result<ChunkIter<'_>, PluginError> {
        call.reject_unknown_kwargs(&["count"])?;
        let count: u64 = call.or(0, "count", 3u64)?;
        if count > MAX_STREAM_COUNT {
            return Err(PluginError::invalid_argument(format!(
                "'count' must be at most {MAX_STREAM_COUNT}, got {count}"
            )));
        }
        // Lazy, so that memory stays flat however many chunks the caller asks for and
        // a caller that disconnects stops the work.
        Ok(Box::new((0..count).map(|chunk| {
            Ok(json!({ "chunk": chunk, "status": "streaming" }))
        })))
    }

    fn config_schema(&self) -> Value {
        cjm_worker::config::schema::<EchoConfig>()
    }

    fn current_config(&self) -> Value {
        cjm_worker::config::to_value(&self.config)
    }
}

/// The plugin binary's whole `main`; a library function so that test harnesses can
/// link the very same worker into binaries of their own.
pub fn main() -> std::process::ExitCode {
    cjm_worker::main(about(), |_plugin_args| Ok(EchoPlugin::default()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use cjm_interface::ErrorKind;

    use super::*;

    #[test]
    fn the_defaults_satisfy_the_schema() {
        cjm_worker::config::check_defaults::<EchoConfig>().unwrap();
    }

    fn call(body: Value) -> Call {
        serde_json::from_value(body).unwrap()
    }

    fn config_map(value: Value) -> ConfigMap {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn repeats_text_and_reports_pid_and_config() {
        let plugin = EchoPlugin::default();
        let out = plugin
            .execute(call(json!({"args": ["ab"], "kwargs": {"repeat": 3}})))
            .unwrap();
        assert_eq!(out["result"], "ababab");
        assert_eq!(out["processed_by_pid"], std::process::id());
        assert_eq!(out["file_content_read"], Value::Null);
        assert_eq!(out["config_used"], json!({"prefix": ""}));
    }

    #[test]
    fn repeat_defaults_to_one_and_prefix_applies() {
        let mut plugin = EchoPlugin::default();
        plugin
            .initialize(config_map(json!({"prefix": ">> "})))
            .unwrap();
        let out = plugin.execute(call(json!({"args": ["hi"]}))).unwrap();
        assert_eq!(out["result"], ">> hi");
        assert_eq!(out["config_used"], json!({"prefix": ">> "}));
        assert_eq!(plugin.current_config(), json!({"prefix": ">> "}));
    }

    #[test]
    fn repeat_out_of_range_is_refused() {
        let plugin = EchoPlugin::default();
        for repeat in [json!(0), json!(MAX_REPEAT + 1)] {
            let err = plugin
                .execute(call(json!({"args": ["x", repeat]})))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.message().contains("'repeat'"), "{err}");
        }
        let negative = plugin
            .execute(call(json!({"args": ["x"], "kwargs": {"repeat": -1}})))
            .unwrap_err();
        assert_eq!(negative.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn unknown_kwargs_and_missing_text_are_refused() {
        let plugin = EchoPlugin::default();
        let err = plugin
            .execute(call(json!({"kwargs": {"text": "a", "colour": 1}})))
            .unwrap_err();
        assert!(err.message().contains("colour"), "{err}");
        let err = plugin.execute(call(json!({}))).unwrap_err();
        assert!(err.message().contains("'text'"), "{err}");
    }

    #[test]
    fn reads_the_named_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"file contents \xff end").unwrap();
        let path = file.path().to_str().unwrap();
        let out = EchoPlugin::default()
            .execute(call(json!({"args": ["t"], "kwargs": {"file_path": path}})))
            .unwrap();
        assert_eq!(out["file_content_read"], "file contents \u{FFFD} end");
    }

    #[test]
    fn unreadable_file_reads_as_file_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.txt");
        let plugin = EchoPlugin::default();
        let out = plugin
            .execute(call(json!({"args": ["t", 1, missing.to_str().unwrap()]})))
            .unwrap();
        assert_eq!(out["file_content_read"], FILE_NOT_FOUND);
        let out = plugin
            .execute(call(
                json!({"args": ["t"], "kwargs": {"file_path": dir.path().to_str().unwrap()}}),
            ))
            .unwrap();
        assert_eq!(out["file_content_read"], FILE_NOT_FOUND);
    }

    #[test]
    fn streams_numbered_chunks() {
        let plugin = EchoPlugin::default();
        let chunks: Vec<Value> = plugin
            .execute_stream(call(json!({"kwargs": {"count": 4}})))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<Value> = (0..4)
            .map(|i| json!({"chunk": i, "status": "streaming"}))
            .collect();
        assert_eq!(chunks, expected);
        let default = plugin.execute_stream(call(json!({}))).unwrap().count();
        assert_eq!(default, 3);
    }

    #[test]
    fn stream_is_lazy_and_bounded() {
        let plugin = EchoPlugin::default();
        // Taking two chunks of the largest stream must not build the rest.
        let mut stream = plugin
            .execute_stream(call(json!({"args": [MAX_STREAM_COUNT]})))
            .unwrap();
        assert_eq!(stream.size_hint().0 as u64, MAX_STREAM_COUNT);
        assert_eq!(stream.next().unwrap().unwrap()["chunk"], 0);
        assert_eq!(stream.next().unwrap().unwrap()["chunk"], 1);
        let Err(err) = plugin.execute_stream(call(json!({"args": [MAX_STREAM_COUNT + 1]}))) else {
            panic!("an over-long stream was accepted");
        };
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn refused_config_keeps_the_previous_one() {
        let mut plugin = EchoPlugin::default();
        plugin
            .initialize(config_map(json!({"prefix": "old"})))
            .unwrap();
        let refusals = [
            (json!({"prefix": 5}), r#"prefix: 5 is not of type "string""#),
            (
                json!({"prefix": null}),
                r#"prefix: null is not of type "string""#,
            ),
            (
                json!({"prefix": "x".repeat(101)}),
                "(101 characters) is longer than 100 characters",
            ),
            (
                json!({"prefix": "ok", "colour": "red"}),
                "colour: unknown key; known keys: prefix",
            ),
            (
                json!({"prefx": "ok"}),
                r#"prefx: unknown key, did you mean "prefix"?"#,
            ),
        ];
        for (bad, why) in refusals {
            let err = plugin.initialize(config_map(bad.clone())).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{bad}");
            assert!(err.message().contains(why), "{bad}: {err}");
            assert_eq!(plugin.current_config(), json!({"prefix": "old"}), "{bad}");
        }
        // Exactly the limit, counted in characters rather than bytes.
        plugin
            .initialize(config_map(json!({"prefix": "é".repeat(100)})))
            .unwrap();
        plugin.initialize(ConfigMap::new()).unwrap();
        assert_eq!(plugin.config(), &EchoConfig::default());
    }

    #[test]
    fn schema_is_derived_from_the_config_type() {
        let schema = EchoPlugin::default().config_schema();
        assert_eq!(
            schema,
            json!({
                "name": NAME,
                "title": "Echo configuration",
                "description": "Configuration of the echo test plugin",
                "type": "object",
                "properties": {
                    "prefix": {
                        "type": "string",
                        "title": "Prefix",
                        "description": "Prepended to every result",
                        "default": "",
                        "maxLength": 100,
                    }
                }
            })
        );
        cjm_worker::cjm_validation::check_schema(&schema).unwrap();
    }

    #[test]
    fn every_violation_is_named_at_once() {
        let err = EchoPlugin::default()
            .initialize(config_map(json!({"prefix": 5, "colour": "red"})))
            .unwrap_err();
        assert!(err.message().contains("prefix: 5 is not of type"), "{err}");
        assert!(err.message().contains("colour: unknown key"), "{err}");
    }
}
