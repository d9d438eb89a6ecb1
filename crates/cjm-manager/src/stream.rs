use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use cjm_interface::wire;
use cjm_proxy::{ChunkStream, ProxyError, RemotePluginProxy};
use futures_core::Stream;
use serde_json::Value;
use tokio::time::{Instant, Sleep};

use crate::loaded::{ExecutionGuard, LoadedPlugin};
use crate::OnTimeout;

/// The chunks of a streaming execution through the manager: a [`Stream`] of JSON
/// values. The execution counts as running (for the scheduler and `last_executed`)
/// until the stream ends or is dropped.
#[derive(Debug)]
pub struct PluginStream {
    chunks: ChunkStream,
    /// The admission, released when the stream ends; `None` for a job's stream, whose
    /// job holds it.
    guard: Option<ExecutionGuard>,
    /// The plugin, whose worker a chunk timeout may kill.
    plugin: Arc<LoadedPlugin>,
    /// The longest wait for one chunk, from the plugin's fault policy, and the timer
    /// of the current wait.
    chunk_timeout: Option<(Duration, Pin<Box<Sleep>>)>,
    on_timeout: OnTimeout,
    ended: bool,
    /// The worker and the call's id there, for `cancel`.
    proxy: Arc<RemotePluginProxy>,
    call_id: String,
}

impl PluginStream {
    pub(crate) fn new(
        chunks: ChunkStream,
        guard: ExecutionGuard,
        chunk_timeout: Option<Duration>,
        on_timeout: OnTimeout,
        proxy: Arc<RemotePluginProxy>,
        call_id: String,
    ) -> Self {
        let plugin = Arc::clone(guard.plugin());
        let mut stream = Self::for_job(chunks, plugin, chunk_timeout, on_timeout, proxy, call_id);
        stream.guard = Some(guard);
        stream
    }

    /// A job's stream: its admission is the job's to hold.
    pub(crate) fn for_job(
        chunks: ChunkStream,
        plugin: Arc<LoadedPlugin>,
        chunk_timeout: Option<Duration>,
        on_timeout: OnTimeout,
        proxy: Arc<RemotePluginProxy>,
        call_id: String,
    ) -> Self {
        PluginStream {
            chunks,
            guard: None,
            plugin,
            chunk_timeout: chunk_timeout.map(|limit| (limit, Box::pin(tokio::time::sleep(limit)))),
            on_timeout,
            ended: false,
            proxy,
            call_id,
        }
    }

    /// Ask the plugin to stop producing: a plugin that checks ends the stream with a
    /// [`ProxyError::Cancelled`] (dropping the stream also stops it, without waiting
    /// for it to say so). Whether the worker could be asked.
    pub async fn cancel(&self) -> Result<bool, ProxyError> {
        let answer = self.proxy.cancel(Some(&self.call_id)).await?;
        Ok(answer.status == "cancelled")
    }

    /// The id of the stream's call on its worker.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The next chunk; `None` at the end. An error ends the stream; so does a wait
    /// for a chunk longer than the plugin's call timeout ([`ProxyError::Timeout`]).
    pub async fn next(&mut self) -> Option<Result<Value, ProxyError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn timed_out(&self, after: Duration) -> ProxyError {
        let name = self.plugin.name().to_owned();
        if self.on_timeout == OnTimeout::KillWorker {
            tracing::warn!("plugin {name}: no stream chunk within {after:?}; killing its worker");
            self.plugin.kill(format!(
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

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Value, ProxyError>>> {
        if let Poll::Ready(chunk) = Pin::new(&mut self.chunks).poll_next(cx) {
            if let Some((limit, timer)) = &mut self.chunk_timeout {
                timer.as_mut().reset(Instant::now() + *limit);
            }
            return Poll::Ready(chunk);
        }
        let Some((limit, timer)) = &mut self.chunk_timeout else {
            return Poll::Pending;
        };
        let limit = *limit;
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(self.timed_out(limit))))
    }
}

impl Stream for PluginStream {
    type Item = Result<Value, ProxyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let chunk = ready!(this.poll_chunk(cx));
        if !matches!(chunk, Some(Ok(_))) {
            // Finished: release the execution now, not when the caller drops the stream.
            if let (None, Some(guard)) = (&chunk, &this.guard) {
                guard.succeeded();
            }
            this.guard.take();
            this.ended = true;
        }
        Poll::Ready(chunk)
    }
}
