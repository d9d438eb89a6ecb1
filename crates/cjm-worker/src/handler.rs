//! One HTTP request in, one response out: routing and the protocol's endpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use cjm_interface::wire::{self, ErrorResponse, HealthResponse, StatusResponse, StreamError};
use cjm_interface::{Call, ConfigMap, ErrorKind, PluginError};
use cjm_validation::ConfigValidator;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::body::{ChannelBody, ResponseBody};
use crate::host::{guarded, CallFailure, PluginHost};
use crate::proc_stats::CpuSampler;

/// Chunks buffered between the producing thread and the socket. Small, so a slow
/// client holds the producer back (backpressure) and a gone client stops it soon.
const STREAM_CHANNEL_DEPTH: usize = 8;
/// Above this many buffered bytes the producer waits for the socket instead of
/// batching more.
const STREAM_BATCH_BYTES: usize = 64 * 1024;

pub(crate) struct Worker {
    pub(crate) host: PluginHost,
    pub(crate) max_body_bytes: usize,
    /// The plugin's config schema, compiled once: `/initialize` checks with it before
    /// the plugin sees a configuration.
    config_validator: ConfigValidator,
    cpu: Mutex<CpuSampler>,
    cleaned_up: AtomicBool,
}

impl Worker {
    pub(crate) fn new(
        host: PluginHost,
        max_body_bytes: usize,
        config_validator: ConfigValidator,
    ) -> Self {
        Worker {
            host,
            max_body_bytes,
            config_validator,
            cpu: Mutex::new(CpuSampler::new()),
            cleaned_up: AtomicBool::new(false),
        }
    }

    /// Run the plugin's cleanup once, whoever asks first (`/cleanup` or SIGTERM).
    pub(crate) fn cleanup_once(&self) -> Result<(), CallFailure> {
        if self.cleaned_up.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut plugin = self.host.write();
        guarded(|| plugin.cleanup())
    }
}

pub(crate) async fn handle(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match path.as_str() {
        wire::PATH_HEALTH if get => json_response(
            StatusCode::OK,
            &HealthResponse {
                status: String::from("running"),
                pid: std::process::id(),
                name: worker.host.name().to_owned(),
                version: worker.host.version().to_owned(),
            },
        ),
        wire::PATH_STATS if get => stats(worker).await,
        wire::PATH_CONFIG_SCHEMA if get => {
            blocking(move || Ok(worker.host.read().config_schema())).await
        }
        wire::PATH_CONFIG if get => blocking(move || Ok(worker.host.read().current_config())).await,
        wire::PATH_INITIALIZE if post => match read_json::<ConfigMap>(&worker, request).await {
            Ok(config) => initialize(worker, config).await,
            Err(response) => response,
        },
        wire::PATH_EXECUTE if post => match read_json::<Call>(&worker, request).await {
            Ok(call) => {
                blocking(move || {
                    let plugin = worker.host.read();
                    guarded(|| plugin.execute(call))
                })
                .await
            }
            Err(response) => response,
        },
        wire::PATH_EXECUTE_STREAM if post => match read_json::<Call>(&worker, request).await {
            Ok(call) => execute_stream(worker, call).await,
            Err(response) => response,
        },
        wire::PATH_CLEANUP if post => {
            let result = tokio::task::spawn_blocking(move || worker.cleanup_once()).await;
            match result {
                Ok(Ok(())) => json_response(
                    StatusCode::OK,
                    &StatusResponse {
                        status: String::from("cleaned"),
                    },
                ),
                Ok(Err(failure)) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
                Err(join) => internal_error(format!("cleanup task failed: {join}")),
            }
        }
        wire::PATH_HEALTH | wire::PATH_STATS | wire::PATH_CONFIG_SCHEMA | wire::PATH_CONFIG => {
            method_not_allowed("GET")
        }
        wire::PATH_INITIALIZE
        | wire::PATH_EXECUTE
        | wire::PATH_EXECUTE_STREAM
        | wire::PATH_CLEANUP => method_not_allowed("POST"),
        _ => error_response(StatusCode::NOT_FOUND, format!("no endpoint {path}"), None),
    }
}

async fn stats(worker: Arc<Worker>) -> Response<ResponseBody> {
    let result = tokio::task::spawn_blocking(move || {
        let cpu_percent = match worker.cpu.lock() {
            Ok(mut sampler) => sampler.sample(),
            Err(poisoned) => poisoned.into_inner().sample(),
        };
        crate::proc_stats::worker_stats(cpu_percent)
    })
    .await;
    match result {
        Ok(stats) => json_response(StatusCode::OK, &stats),
        Err(join) => internal_error(format!("stats task failed: {join}")),
    }
}

async fn initialize(worker: Arc<Worker>, config: ConfigMap) -> Response<ResponseBody> {
    let result = tokio::task::spawn_blocking(move || {
        // Checked before taking the plugin: a refused configuration never waits for
        // running calls, and never reaches the plugin, which keeps its previous one.
        let config = worker
            .config_validator
            .validate_map(config)
            .map_err(|invalid| {
                CallFailure::Plugin(PluginError::invalid_config(invalid.to_string()))
            })?;
        let mut plugin = worker.host.write();
        guarded(|| plugin.initialize(config))
    })
    .await;
    match result {
        Ok(Ok(())) => json_response(
            StatusCode::OK,
            &StatusResponse {
                status: String::from("ok"),
            },
        ),
        Ok(Err(failure @ CallFailure::Plugin(_))) => {
            failure_response(StatusCode::BAD_REQUEST, &failure)
        }
        Ok(Err(failure)) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
        Err(join) => internal_error(format!("initialize task failed: {join}")),
    }
}

/// Run a plugin call on the blocking pool (so that `/health` and `/stats` stay
/// responsive during a long execution) and answer its JSON result. The result is
/// serialised on that thread too: a large result must not stall the event loop.
async fn blocking<T, F>(call: F) -> Response<ResponseBody>
where
    T: Serialize,
    F: FnOnce() -> Result<T, CallFailure> + Send + 'static,
{
    let result = tokio::task::spawn_blocking(move || {
        call().map(|value| serde_json::to_vec(&value).map_err(|err| err.to_string()))
    })
    .await;
    match result {
        Ok(Ok(Ok(body))) => {
            bytes_response(StatusCode::OK, wire::CONTENT_TYPE_JSON, Bytes::from(body))
        }
        Ok(Ok(Err(reason))) => internal_error(format!("plugin result is not valid JSON: {reason}")),
        Ok(Err(failure)) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
        Err(join) => internal_error(format!("plugin task failed: {join}")),
    }
}

/// Start a stream: the plugin's iterator runs on a blocking thread, writing NDJSON
/// lines into batches that a channel carries to the socket. A failure before the first
/// chunk is an ordinary error response; after it, a final `{"error": ..}` line.
async fn execute_stream(worker: Arc<Worker>, call: Call) -> Response<ResponseBody> {
    let (chunk_sender, chunk_receiver) = mpsc::channel::<Bytes>(STREAM_CHANNEL_DEPTH);
    let (started_sender, started_receiver) = oneshot::channel::<Result<(), CallFailure>>();
    tokio::task::spawn_blocking(move || {
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
        let mut pending = BytesMut::with_capacity(4096);
        loop {
            let next = guarded(|| Ok(chunks.next()));
            let finished = match next {
                Ok(Some(Ok(chunk))) => {
                    match serde_json::to_writer(BytesMutWriter(&mut pending), &chunk) {
                        Ok(()) => {
                            pending.extend_from_slice(b"\n");
                            false
                        }
                        Err(err) => {
                            push_error_line(
                                &mut pending,
                                &format!("chunk is not valid JSON: {err}"),
                            );
                            true
                        }
                    }
                }
                Ok(Some(Err(err))) => {
                    push_error_line(&mut pending, err.message());
                    true
                }
                Ok(None) => true,
                Err(failure) => {
                    push_error_line(&mut pending, &failure.to_string());
                    true
                }
            };
            if finished {
                break;
            }
            // Send at once while the socket keeps up (low latency for slow producers);
            // batch while it does not (throughput for fast ones).
            let keep_batching = chunk_sender.capacity() == 0 && pending.len() < STREAM_BATCH_BYTES;
            if !keep_batching
                && chunk_sender
                    .blocking_send(pending.split().freeze())
                    .is_err()
            {
                tracing::debug!("stream consumer went away; stopping the plugin's stream");
                return;
            }
        }
        if !pending.is_empty() {
            let _ = chunk_sender.blocking_send(pending.split().freeze());
        }
    });
    match started_receiver.await {
        Ok(Ok(())) => {
            let mut response = Response::new(Either::Right(ChannelBody::new(chunk_receiver)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(wire::CONTENT_TYPE_NDJSON),
            );
            response
        }
        Ok(Err(failure)) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
        Err(_) => internal_error(String::from("stream task ended before starting")),
    }
}

fn push_error_line(pending: &mut BytesMut, message: &str) {
    let line = StreamError {
        error: message.to_owned(),
    };
    if serde_json::to_writer(BytesMutWriter(pending), &line).is_ok() {
        pending.extend_from_slice(b"\n");
    }
}

struct BytesMutWriter<'a>(&'a mut BytesMut);

impl std::io::Write for BytesMutWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Read a whole request body as JSON of type `T`, refusing bodies over the limit
/// (413) and bodies that are not valid JSON for `T` (400).
async fn read_json<T: serde::de::DeserializeOwned>(
    worker: &Worker,
    request: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let limit = worker.max_body_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    let bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large(limit)),
        Err(err) => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {err}"),
                None,
            ))
        }
    };
    // An empty body means "nothing given", as for FastAPI's optional bodies.
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(text).map_err(|err| {
        error_response(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid: {err}"),
            Some(ErrorKind::InvalidArgument.as_str()),
        )
    })
}

fn too_large(limit: usize) -> Response<ResponseBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds the worker's limit of {limit} bytes"),
        None,
    )
}

fn method_not_allowed(allowed: &'static str) -> Response<ResponseBody> {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allowed}"),
        None,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

fn failure_response(status: StatusCode, failure: &CallFailure) -> Response<ResponseBody> {
    let kind = match failure {
        CallFailure::Plugin(err) => err.kind().as_str(),
        CallFailure::Panic(_) => "panic",
    };
    error_response(status, failure.to_string(), Some(kind))
}

fn internal_error(detail: String) -> Response<ResponseBody> {
    tracing::error!("{detail}");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, detail, Some("internal"))
}

fn error_response(
    status: StatusCode,
    detail: String,
    kind: Option<&str>,
) -> Response<ResponseBody> {
    json_response(
        status,
        &ErrorResponse {
            detail,
            kind: kind.map(str::to_owned),
        },
    )
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(status, wire::CONTENT_TYPE_JSON, Bytes::from(body)),
        Err(err) => bytes_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            Bytes::from(format!("cannot serialise response: {err}")),
        ),
    }
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Left(Full::new(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
