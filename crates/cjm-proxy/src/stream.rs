//! Reading a worker's NDJSON stream chunk by chunk.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use cjm_interface::wire::{self, StreamError};
use futures_core::Stream;
use hyper::body::{Body, Incoming};
use serde_json::Value;

use crate::files::TempFiles;
use crate::log::{self, TAIL_LINES};
use crate::worker::Worker;
use crate::ProxyError;

/// The chunks of one streaming execution, in order: a [`Stream`] of JSON values.
/// Holds the call's temporary files until the stream is done or dropped; dropping it
/// mid-way closes the connection, which stops the worker's producer.
pub struct ChunkStream {
    plugin: String,
    body: Incoming,
    lines: LineBuffer,
    /// Resolves when the worker process ends: a dead worker ends the stream at once.
    worker_exit: BoxFuture<Option<std::process::ExitStatus>>,
    /// The error being settled after the connection broke (was it the worker dying?).
    breaking: Option<BoxFuture<ProxyError>>,
    process: Worker,
    files: TempFiles,
    log_path: PathBuf,
    log_start: u64,
    finished: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("plugin", &self.plugin)
            .field("pid", &self.process.local_pid())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ChunkStream {
    pub(crate) fn new(
        plugin: String,
        body: Incoming,
        process: Worker,
        files: TempFiles,
        log_path: PathBuf,
        log_start: u64,
    ) -> Self {
        let watched = process.clone();
        ChunkStream {
            plugin,
            body,
            lines: LineBuffer::default(),
            worker_exit: Box::pin(async move { watched.exited().await }),
            breaking: None,
            process,
            files,
            log_path,
            log_start,
            finished: false,
        }
    }

    /// The next chunk; `None` at the end. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<Value, ProxyError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Read the whole stream into a vector, stopping at the first error.
    pub async fn collect(mut self) -> Result<Vec<Value>, ProxyError> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next().await {
            chunks.push(chunk?);
        }
        Ok(chunks)
    }

    /// Keep the call's temporary files after the stream ends.
    pub fn keep_files(&mut self) {
        self.files.keep();
    }

    /// This stream as a blocking iterator, for callers outside any async runtime;
    /// `runtime` must be a multi-threaded runtime that is still running.
    pub fn into_blocking(self, runtime: tokio::runtime::Handle) -> BlockingChunks {
        BlockingChunks {
            stream: self,
            runtime,
        }
    }

    fn parse(&mut self, line: &[u8]) -> Result<Value, ProxyError> {
        match serde_json::from_slice::<Value>(line) {
            Ok(chunk) => match StreamError::from_chunk(&chunk) {
                Some(failure) => {
                    self.finished = true;
                    let cancelled = failure
                        .job_error
                        .as_ref()
                        .is_some_and(|job_error| job_error.is_cancellation());
                    Err(if cancelled {
                        ProxyError::Cancelled {
                            plugin: self.plugin.clone(),
                            endpoint: wire::PATH_EXECUTE_STREAM,
                            detail: failure.error,
                        }
                    } else {
                        ProxyError::Stream {
                            plugin: self.plugin.clone(),
                            detail: failure.error,
                            job_error: failure.job_error.map(Box::new),
                        }
                    })
                }
                None => Ok(chunk),
            },
            Err(err) => {
                self.finished = true;
                Err(ProxyError::InvalidResponse {
                    plugin: self.plugin.clone(),
                    endpoint: wire::PATH_EXECUTE_STREAM,
                    reason: format!("stream line is not JSON: {err}"),
                })
            }
        }
    }

    /// The connection broke: the worker dying is the likely cause, and the notice of
    /// its exit may trail the socket error by a moment.
    fn broken(&self, reason: String) -> BoxFuture<ProxyError> {
        let process = self.process.clone();
        let plugin = self.plugin.clone();
        let (log_path, log_start) = (self.log_path.clone(), self.log_start);
        Box::pin(async move {
            match process.exit_within(crate::worker::EXIT_NOTICE_WAIT).await {
                Some(status) => ProxyError::WorkerDied {
                    plugin,
                    endpoint: wire::PATH_EXECUTE_STREAM,
                    status,
                    log_tail: log::tail_since(&log_path, log_start, TAIL_LINES),
                },
                None => ProxyError::Transport {
                    plugin,
                    endpoint: wire::PATH_EXECUTE_STREAM,
                    reason,
                },
            }
        })
    }

    fn worker_died(&self, status: Option<std::process::ExitStatus>) -> ProxyError {
        ProxyError::WorkerDied {
            plugin: self.plugin.clone(),
            endpoint: wire::PATH_EXECUTE_STREAM,
            status,
            log_tail: log::tail_since(&self.log_path, self.log_start, TAIL_LINES),
        }
    }
}

impl Stream for ChunkStream {
    type Item = Result<Value, ProxyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(breaking) = &mut this.breaking {
                let error = ready!(breaking.as_mut().poll(cx));
                this.breaking = None;
                return Poll::Ready(Some(Err(error)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if let Some(line) = this.lines.next_line() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Poll::Ready(Some(this.parse(&line)));
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.lines.push(&data);
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    this.finished = true;
                    this.breaking = Some(this.broken(err.to_string()));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    let rest = this.lines.rest();
                    if rest.iter().all(u8::is_ascii_whitespace) {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(this.parse(&rest)));
                }
                Poll::Pending => {
                    let status = ready!(this.worker_exit.as_mut().poll(cx));
                    this.finished = true;
                    return Poll::Ready(Some(Err(this.worker_died(status))));
                }
            }
        }
    }
}

/// Bytes received and not yet split into lines.
#[derive(Debug, Default)]
struct LineBuffer {
    pending: BytesMut,
    /// Bytes at the start of `pending` known to hold no newline: a line larger than
    /// one frame is scanned once, not again with every frame that adds to it.
    scanned: usize,
}

impl LineBuffer {
    fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// The next whole line, without its newline.
    fn next_line(&mut self) -> Option<BytesMut> {
        let Some(offset) = self.pending[self.scanned..]
            .iter()
            .position(|&byte| byte == b'\n')
        else {
            self.scanned = self.pending.len();
            return None;
        };
        let mut line = self.pending.split_to(self.scanned + offset + 1);
        self.scanned = 0;
        line.truncate(line.len() - 1);
        Some(line)
    }

    /// Whatever is left at the end of the stream.
    fn rest(&mut self) -> BytesMut {
        self.scanned = 0;
        self.pending.split()
    }
}

/// A [`ChunkStream`] as an [`Iterator`], for code without an async runtime.
#[derive(Debug)]
pub struct BlockingChunks {
    stream: ChunkStream,
    runtime: tokio::runtime::Handle,
}

impl Iterator for BlockingChunks {
    type Item = Result<Value, ProxyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if tokio::runtime::Handle::try_current().is_ok() {
            if self.stream.finished {
                return None;
            }
            self.stream.finished = true;
            return Some(Err(ProxyError::BlockingInAsync {
                plugin: self.stream.plugin.clone(),
            }));
        }
        self.runtime.block_on(self.stream.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_whatever_the_frames() {
        let mut lines = LineBuffer::default();
        lines.push(b"{\"a\"");
        assert!(lines.next_line().is_none());
        lines.push(b":1}\n[2]\n\n3");
        assert_eq!(&lines.next_line().unwrap()[..], b"{\"a\":1}");
        assert_eq!(&lines.next_line().unwrap()[..], b"[2]");
        assert_eq!(&lines.next_line().unwrap()[..], b"");
        assert!(lines.next_line().is_none());
        lines.push(b"4\n");
        assert_eq!(&lines.next_line().unwrap()[..], b"34");
        lines.push(b"tail");
        assert!(lines.next_line().is_none());
        assert_eq!(&lines.rest()[..], b"tail");
    }

    #[test]
    fn a_line_over_many_frames_is_scanned_once() {
        let mut lines = LineBuffer::default();
        let frame = [b'x'; 1024];
        for _ in 0..1000 {
            lines.push(&frame);
            assert!(lines.next_line().is_none());
            // Everything received so far is known to hold no newline.
            assert_eq!(lines.scanned, lines.pending.len());
        }
        lines.push(b"\n");
        assert_eq!(lines.next_line().unwrap().len(), 1024 * 1000);
        assert_eq!(lines.scanned, 0);
    }
}
