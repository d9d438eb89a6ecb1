//! Streaming executions: the plugin's iterator runs on a blocking thread and appends
//! NDJSON lines to a buffer shared with the response body. Each time the socket is
//! ready, the body takes everything buffered so far as one frame: a slow producer's
//! chunks go out one by one at once, a fast producer's in large batches, with no
//! timer either way. Past a bound the producer waits (backpressure); once the client is
//! gone it stops.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use cjm_interface::wire::{JobError, StreamError};
use cjm_interface::{json, Call, CallControl};
use hyper::body::{Body, Frame};
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::calls::Running;
use crate::host::{guarded, CallFailure};
use crate::state::Worker;

/// Bytes buffered before the producer waits for the socket.
const BUFFER_LIMIT: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Pipe {
    buffer: BytesMut,
    /// The producer has finished (normally or not).
    closed: bool,
    /// The body was dropped: the client is gone.
    abandoned: bool,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Shared {
    pipe: Mutex<Pipe>,
    /// The call's control: cancelled when the client goes away.
    control: CallControl,
    /// The body took what was buffered: a producer over the limit may go on.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock()
    }
}

/// The producing end, used from the blocking thread.
struct LineWriter {
    shared: Arc<Shared>,
    scratch: Vec<u8>,
}

impl LineWriter {
    /// Append one NDJSON line; `false` once the client is gone.
    fn push(&mut self, value: &Value) -> bool {
        self.scratch.clear();
        json::write_value(&mut self.scratch, value);
        self.scratch.push(b'\n');
        let mut pipe = self.shared.lock();
        while pipe.buffer.len() >= BUFFER_LIMIT && !pipe.abandoned {
            self.shared.drained.wait(&mut pipe);
        }
        if pipe.abandoned {
            return false;
        }
        let was_empty = pipe.buffer.is_empty();
        pipe.buffer.extend_from_slice(&self.scratch);
        // The body only sleeps when it found the buffer empty.
        if was_empty {
            if let Some(waker) = pipe.waker.take() {
                waker.wake();
            }
        }
        true
    }

    /// The stream's last line when it fails: both the original 0.0.20's `error` and
    /// 0.0.46's `_job_error`, so that hosts of either version see a failure.
    fn push_failure(&mut self, worker: &Worker, failure: &CallFailure) {
        let (err, _) = failure.as_plugin_error();
        let line = StreamError {
            error: failure.to_string(),
            job_error: Some(JobError::from_plugin_error_named(
                &err,
                worker.host.name(),
                worker.error_names(),
            )),
        };
        match serde_json::to_value(&line) {
            Ok(line) => {
                self.push(&line);
            }
            Err(err) => tracing::error!("cannot write a stream's error line: {err}"),
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let mut pipe = self.shared.lock();
        pipe.closed = true;
        if let Some(waker) = pipe.waker.take() {
            waker.wake();
        }
    }
}

/// The response body: whatever the producer buffered, one frame per poll.
#[derive(Debug)]
pub(crate) struct NdjsonBody {
    shared: Arc<Shared>,
}

impl Body for NdjsonBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut pipe = self.shared.lock();
        if !pipe.buffer.is_empty() {
            let frame = pipe.buffer.split().freeze();
            drop(pipe);
            self.shared.drained.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if pipe.closed {
            return Poll::Ready(None);
        }
        pipe.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for NdjsonBody {
    fn drop(&mut self) {
        self.shared.lock().abandoned = true;
        self.shared.drained.notify_one();
        // A plugin between chunks (or one that checks) stops at once, not at its
        // next chunk.
        self.shared.control.cancel();
    }
}

/// Start the plugin's stream on a blocking thread. Resolves once the plugin has
/// started it (`Ok(body)`) or refused it before any chunk (`Err`). The call counts as
/// running until the plugin's iterator is done; a client that goes away cancels it.
pub(crate) async fn start(
    worker: Arc<Worker>,
    call: Call,
    running: Running,
) -> Result<NdjsonBody, CallFailure> {
    let shared = Arc::new(Shared {
        control: running.control(),
        ..Shared::default()
    });
    let call = call.with_control(running.control());
    let mut writer = LineWriter {
        shared: Arc::clone(&shared),
        scratch: Vec::with_capacity(256),
    };
    let (started_sender, started) = oneshot::channel::<Result<(), CallFailure>>();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        // Declared after `_running`, so dropped before it: the call's output is out
        // before the call is marked finished.
        let control = _running.control();
        let _span = crate::log_lines::call_span(&control).entered();
        let _attributed = crate::output::attribute(control.id());
        let plugin = worker.host.read();
        let mut chunks = match guarded(|| plugin.execute_stream(call)) {
            Ok(chunks) => chunks,
            Err(failure) => {
                let _ = started_sender.send(Err(failure));
                return;
            }
        };
        if started_sender.send(Ok(())).is_err() {
            return;
        }
        loop {
            match guarded(|| Ok(chunks.next())) {
                Ok(Some(Ok(chunk))) => {
                    if !writer.push(&chunk) {
                        tracing::debug!("stream consumer went away; stopping the plugin's stream");
                        return;
                    }
                }
                Ok(Some(Err(err))) => {
                    return writer.push_failure(&worker, &CallFailure::Plugin(err));
                }
                Ok(None) => return,
                Err(failure) => return writer.push_failure(&worker, &failure),
            }
        }
    });
    match started.await {
        Ok(Ok(())) => Ok(NdjsonBody { shared }),
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(CallFailure::Panic(String::from(
            "stream task ended before starting",
        ))),
    }
}
