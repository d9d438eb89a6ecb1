//! [`JobChunks`]: a streaming job's chunks, as its reader takes them.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

/// The chunks of a job submitted with [`Jobs::submit_stream`](super::Jobs::submit_stream),
/// in order, as the plugin produces them. Ends when the job ends, however it ends
/// ([`Jobs::wait`](super::Jobs::wait) says how). Dropping it cancels the job.
#[derive(Debug)]
pub struct JobChunks {
    chunks: mpsc::Receiver<Value>,
}

impl JobChunks {
    pub(crate) fn new(chunks: mpsc::Receiver<Value>) -> Self {
        JobChunks { chunks }
    }

    /// The next chunk; `None` once the job has ended.
    pub async fn next(&mut self) -> Option<Value> {
        self.chunks.recv().await
    }
}

impl Stream for JobChunks {
    type Item = Value;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        self.get_mut().chunks.poll_recv(cx)
    }
}
