use cjm_proxy::{ChunkStream, ProxyError};
use serde_json::Value;

use crate::loaded::ExecutionGuard;

/// The chunks of a streaming execution through the manager. The execution counts as
/// running (for the scheduler and `last_executed`) until the stream ends or is
/// dropped.
#[derive(Debug)]
pub struct PluginStream {
    chunks: ChunkStream,
    guard: Option<ExecutionGuard>,
}

impl PluginStream {
    pub(crate) fn new(chunks: ChunkStream, guard: ExecutionGuard) -> Self {
        PluginStream {
            chunks,
            guard: Some(guard),
        }
    }

    /// The next chunk; `None` at the end. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<Value, ProxyError>> {
        let chunk = self.chunks.next().await;
        if !matches!(chunk, Some(Ok(_))) {
            // Finished: release the execution now, not when the caller drops the stream.
            self.guard.take();
        }
        chunk
    }

    /// Read the whole stream, stopping at the first error.
    pub async fn collect(mut self) -> Result<Vec<Value>, ProxyError> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next().await {
            chunks.push(chunk?);
        }
        Ok(chunks)
    }
}
