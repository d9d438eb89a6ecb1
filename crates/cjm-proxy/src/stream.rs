//! Reading a worker's NDJSON stream chunk by chunk.

use std::path::PathBuf;

use bytes::BytesMut;
use cjm_interface::wire::{self, StreamError};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::files::TempFiles;
use crate::log::{self, TAIL_LINES};
use crate::process::WorkerProcess;
use crate::ProxyError;

/// The chunks of one streaming execution, in order. Holds the call's temporary files
/// until the stream is done or dropped; dropping it mid-way closes the connection,
/// which stops the worker's producer.
#[derive(Debug)]
pub struct ChunkStream {
    plugin: String,
    body: Incoming,
    buffer: BytesMut,
    process: WorkerProcess,
    files: TempFiles,
    log_path: PathBuf,
    log_start: u64,
    finished: bool,
}

impl ChunkStream {
    pub(crate) fn new(
        plugin: String,
        body: Incoming,
        process: WorkerProcess,
        files: TempFiles,
        log_path: PathBuf,
        log_start: u64,
    ) -> Self {
        ChunkStream {
            plugin,
            body,
            buffer: BytesMut::new(),
            process,
            files,
            log_path,
            log_start,
            finished: false,
        }
    }

    /// The next chunk; `None` at the end. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<Value, ProxyError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(newline + 1);
                let line = &line[..newline];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(self.parse(line));
            }
            tokio::select! {
                biased;
                frame = self.body.frame() => match frame {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buffer.extend_from_slice(&data);
                        }
                    }
                    Some(Err(err)) => {
                        self.finished = true;
                        return Some(Err(self.broken(err.to_string()).await));
                    }
                    None => {
                        self.finished = true;
                        let rest = self.buffer.split();
                        if rest.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        return Some(self.parse(&rest));
                    }
                },
                status = self.process.exited() => {
                    self.finished = true;
                    return Some(Err(ProxyError::WorkerDied {
                        plugin: self.plugin.clone(),
                        endpoint: wire::PATH_EXECUTE_STREAM,
                        status,
                        log_tail: log::tail_since(&self.log_path, self.log_start, TAIL_LINES),
                    }));
                }
            }
        }
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
                Some(detail) => {
                    self.finished = true;
                    Err(ProxyError::Stream {
                        plugin: self.plugin.clone(),
                        detail: detail.to_owned(),
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

    async fn broken(&self, reason: String) -> ProxyError {
        match self
            .process
            .exit_within(crate::proxy::EXIT_NOTICE_WAIT)
            .await
        {
            Some(status) => ProxyError::WorkerDied {
                plugin: self.plugin.clone(),
                endpoint: wire::PATH_EXECUTE_STREAM,
                status,
                log_tail: log::tail_since(&self.log_path, self.log_start, TAIL_LINES),
            },
            None => ProxyError::Transport {
                plugin: self.plugin.clone(),
                endpoint: wire::PATH_EXECUTE_STREAM,
                reason,
            },
        }
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
