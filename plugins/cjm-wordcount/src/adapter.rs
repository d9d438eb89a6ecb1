//! The `text-statistics` task, served by this plugin through a task adapter: the
//! typed face of what `execute` does, for hosts that address tasks rather than
//! plugins (the original 0.0.46's `/task`).

use cjm_interface::{Call, PluginError};
use cjm_worker::{TaskAdapter, TaskMethod};
use serde_json::{json, Value};

use crate::{Counter, WordCountPlugin, WordCountStream};

/// The task's name.
pub const TEXT_STATISTICS: &str = "text-statistics";

/// `text-statistics` on [`WordCountPlugin`]: `count_text(text)` counts a string,
/// `count_file(file_path)` a file (with progress, and stopping when cancelled).
#[derive(Debug, Default)]
pub struct TextStatistics;

impl TaskAdapter<WordCountPlugin> for TextStatistics {
    fn task_name(&self) -> &str {
        TEXT_STATISTICS
    }

    fn methods(&self) -> Vec<TaskMethod> {
        vec![
            TaskMethod::new("count_text", &["text"]),
            TaskMethod::new("count_file", &["file_path"]),
        ]
    }

    fn call(
        &self,
        plugin: &WordCountPlugin,
        method: &str,
        call: Call,
    ) -> Result<Value, PluginError> {
        match method {
            "count_text" => {
                call.reject_unknown_kwargs(&["text"])?;
                let text: String = call.kwarg("text")?;
                let mut counter = Counter::default();
                counter.feed(text.as_bytes());
                let counts = counter.counts();
                // The worker's span gives this record the job's id.
                tracing::info!(words = counts.words, "counted a text");
                Ok(json!({"lines": counts.lines, "words": counts.words, "bytes": counts.bytes}))
            }
            "count_file" => {
                call.reject_unknown_kwargs(&["file_path"])?;
                let file_path: String = call.kwarg("file_path")?;
                WordCountStream::open(&file_path, plugin.config().chunk_bytes)?
                    .with_control(call.control())
                    .run_to_end()
            }
            other => Err(PluginError::invalid_argument(format!(
                "{TEXT_STATISTICS} has no method {other:?}"
            ))),
        }
    }
}
