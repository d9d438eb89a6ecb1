use std::time::Duration;

use cjm_interface::wire;
use cjm_proxy::{ChunkStream, ProxyError};
use serde_json::Value;

use crate::loaded::ExecutionGuard;
use crate::OnTimeout;

/// The chunks of a streaming execution through the manager. The execution counts as
/// running (for the scheduler and `last_executed`) until the stream ends or is
/// dropped.
#[derive(Debug)]
pub struct PluginStream {
    chunks: ChunkStream,
    guard: Option<ExecutionGuard>,
    /// The longest wait for one chunk, from the plugin's fault policy.
    chunk_timeout: Option<Duration>,
    on_timeout: OnTimeout,
    ended: bool,
}

impl PluginStream {
    pub(crate) fn new(
        chunks: ChunkStream,
        guard: ExecutionGuard,
        chunk_timeout: Option<Duration>,
        on_timeout: OnTimeout,
    ) -> Self {
        PluginStream {
            chunks,
            guard: Some(guard),
            chunk_timeout,
            on_timeout,
            ended: false,
        }
    }

    /// The next chunk; `None` at the end. An error ends the stream; so does a wait
    /// for a chunk longer than the plugin's call timeout ([`ProxyError::Timeout`]).
    pub async fn next(&mut self) -> Option<Result<Value, ProxyError>> {
        if self.ended {
            return None;
        }
        let chunk = match self.chunk_timeout {
            Some(limit) => match tokio::time::timeout(limit, self.chunks.next()).await {
                Ok(chunk) => chunk,
                Err(_) => Some(Err(self.timed_out(limit))),
            },
            _ => self.chunks.next().await,
        };
        if !matches!(chunk, Some(Ok(_))) {
            // Finished: release the execution now, not when the caller drops the stream.
            self.guard.take();
            self.ended = true;
        }
        chunk
    }

    fn timed_out(&self, after: Duration) -> ProxyError {
        let plugin = self.guard.as_ref().map(ExecutionGuard::plugin);
        let name = plugin
            .map(|plugin| plugin.proxy.name().to_owned())
            .unwrap_or_default();
        if let (Some(plugin), OnTimeout::KillWorker) = (plugin, self.on_timeout) {
            tracing::warn!("plugin {name}: no stream chunk within {after:?}; killing its worker");
            plugin.kill(format!(
                "was killed by the host after a stream waited {after:?} for a chunk"
            ));
        }
        ProxyError::Timeout {
            plugin: name,
            endpoint: wire::PATH_EXECUTE_STREAM,
            after,
        }
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
