//! The line our workers write to their log for every record they attribute: one JSON
//! object per line, so that a message holding newlines, quotes or something that
//! looks like another record still takes exactly one line, and the host reads back
//! which call wrote it without guessing.
//!
//! ```text
//! {"cjm_log":"INFO","call":"3f2a-1","job":"5f0c2a9e41d7-3","target":"wordcount","msg":"counted 12 lines","ts_ms":1767225600123}
//! {"cjm_log":"OUTPUT","msg":"a line printed while two calls ran","ts_ms":1767225600124}
//! ```
//!
//! `cjm_log` is the level (`ERROR` .. `TRACE` for a `tracing` record, [`OUTPUT`] for
//! a line the plugin wrote to stdout or stderr); `call` is the call id the worker was
//! given, absent where the line cannot be told to belong to one call; `job` the job id
//! the call's envelope named, on a record emitted in the call's span. A worker that
//! writes these lines wraps every line its plugin prints, so a plugin cannot forge
//! one; any other line in a log (the host's start header, the original's Python
//! worker, an older worker) reads as `None` from [`LogLine::parse`].

use serde::{Deserialize, Serialize};

/// The level of a line the plugin printed rather than logged.
pub const OUTPUT: &str = "OUTPUT";

/// The environment variable our host sets for a local worker whose log it reads
/// back: a worker that sees it (`1`) routes its stdout and stderr through itself and
/// writes [`LogLine`]s. Without it a worker writes its log as plain text.
pub const LOG_LINES_ENV: &str = "CJM_LOG_LINES";

/// One attributed record of a worker's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`, or [`OUTPUT`].
    #[serde(rename = "cjm_log")]
    pub level: String,
    /// The call in flight that wrote it, where the worker could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The job the call belongs to, from the call's envelope (a `tracing` record in
    /// the call's span; absent for printed output and calls outside any job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The `tracing` target (module path) of a record; empty for printed output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The message, with a record's fields after it (`key=value`).
    pub msg: String,
    /// When it was written, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

impl LogLine {
    /// The line as written to the log, without its newline.
    pub fn to_line(&self) -> String {
        // Serialising a struct of strings and a number cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `line` read back, or `None` for a line that is not one of ours.
    pub fn parse(line: &str) -> Option<LogLine> {
        let line = line.trim_end_matches(['\r', '\n']);
        if !line.starts_with("{\"cjm_log\":") {
            return None;
        }
        serde_json::from_str(line).ok()
    }

    /// Milliseconds since the Unix epoch, now.
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written_whatever_its_message_holds() {
        let line = LogLine {
            level: String::from("INFO"),
            call: Some(String::from("abc-1.2")),
            job: Some(String::from("5f0c2a9e41d7-1")),
            target: String::from("fixture"),
            msg: String::from("two\nlines and {\"cjm_log\":\"ERROR\"} \u{1b}[31m"),
            ts_ms: 1_767_225_600_123,
        };
        let text = line.to_line();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("{\"cjm_log\":\"INFO\",\"call\":\"abc-1.2\""));
        assert_eq!(LogLine::parse(&text), Some(line));
    }

    #[test]
    fn other_lines_are_not_ours() {
        for line in [
            "==== 2026-01-01T00:00:00Z start ====",
            "plain text",
            "{\"msg\":\"x\",\"cjm_log\":\"INFO\",\"ts_ms\":1}",
            "{\"cjm_log\":\"INFO\"}",
            "",
        ] {
            assert_eq!(LogLine::parse(line), None, "{line}");
        }
        let worker_level = "{\"cjm_log\":\"OUTPUT\",\"msg\":\"hi\",\"ts_ms\":5}";
        let parsed = LogLine::parse(worker_level).unwrap();
        assert_eq!((parsed.call, parsed.msg.as_str()), (None, "hi"));
    }
}
