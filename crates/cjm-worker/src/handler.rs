//! One HTTP request in, one response out: routing and the protocol's endpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cjm_interface::body::{self, BodyError};
use cjm_interface::wire::{self, ErrorResponse, HealthResponse, StatusResponse};
use cjm_interface::{json, Call, ConfigMap, ErrorKind, PluginError};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::auth::AccessToken;
use crate::body::ResponseBody;
use crate::config_check::ConfigCheck;
use crate::host::{guarded, CallFailure, PluginHost};
use crate::proc_stats::CpuSampler;

pub(crate) struct Worker {
    pub(crate) host: PluginHost,
    pub(crate) max_body_bytes: usize,
    /// The plugin's config schema: `/initialize` checks with it before the plugin
    /// sees a configuration.
    config_check: ConfigCheck,
    /// `None`: started without a secret, every request is served.
    access: Option<AccessToken>,
    cpu: Mutex<CpuSampler>,
    cleaned_up: AtomicBool,
}

impl Worker {
    pub(crate) fn new(
        host: PluginHost,
        max_body_bytes: usize,
        config_check: ConfigCheck,
        access: Option<AccessToken>,
    ) -> Self {
        Worker {
            host,
            max_body_bytes,
            config_check,
            access,
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
    crate::allocator::note_activity();
    if let Some(access) = &worker.access {
        if !access.admits(request.headers().get(AUTHORIZATION)) {
            return unauthorized();
        }
    }
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
        wire::PATH_STATS if get => stats(&worker),
        wire::PATH_CONFIG_SCHEMA if get => {
            answer(|| guarded(|| Ok(worker.host.read().config_schema())))
        }
        wire::PATH_CONFIG if get => answer(|| guarded(|| Ok(worker.host.read().current_config()))),
        wire::PATH_INITIALIZE if post => {
            let claim = request.headers().get(wire::CONFIG_CHECKED_HEADER).cloned();
            match read_json::<ConfigMap>(&worker, request).await {
                Ok(config) => initialize(&worker, config, claim.as_ref()),
                Err(response) => response,
            }
        }
        wire::PATH_EXECUTE if post => match read_json::<Call>(&worker, request).await {
            Ok(call) => answer(|| {
                let plugin = worker.host.read();
                guarded(|| plugin.execute(call))
            }),
            Err(response) => response,
        },
        wire::PATH_EXECUTE_STREAM if post => match read_json::<Call>(&worker, request).await {
            Ok(call) => execute_stream(worker, call).await,
            Err(response) => response,
        },
        wire::PATH_CLEANUP if post => match worker.cleanup_once() {
            Ok(()) => json_response(
                StatusCode::OK,
                &StatusResponse {
                    status: String::from("cleaned"),
                },
            ),
            Err(failure) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
        },
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

fn stats(worker: &Worker) -> Response<ResponseBody> {
    let cpu_percent = worker.cpu.lock().sample();
    json_response(
        StatusCode::OK,
        &crate::proc_stats::worker_stats(cpu_percent),
    )
}

fn initialize(
    worker: &Worker,
    config: ConfigMap,
    claim: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let config = match checked_config(worker, config, claim) {
        Ok(config) => config,
        Err(refusal) => return refusal.into_response(worker.host.name()),
    };
    let result = {
        let mut plugin = worker.host.write();
        let checked_against = worker.config_check.fingerprint();
        crate::config::with_config_checked_against(checked_against, || {
            guarded(|| plugin.initialize(config))
        })
    };
    match result {
        Ok(()) => json_response(
            StatusCode::OK,
            &StatusResponse {
                status: String::from("ok"),
            },
        ),
        Err(failure @ CallFailure::Plugin(_)) => {
            failure_response(StatusCode::BAD_REQUEST, &failure)
        }
        Err(failure) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
    }
}

/// `config`, once it is known to fit the plugin's schema. Checked before taking the
/// plugin: a refused configuration never waits for running calls, and never reaches
/// the plugin, which keeps its previous one.
fn checked_config(
    worker: &Worker,
    config: ConfigMap,
    claim: Option<&HeaderValue>,
) -> Result<ConfigMap, ConfigRefusal> {
    // Only the host holding this worker's secret is believed when it says it has
    // checked the configuration against this very schema.
    if worker.access.is_some() && worker.config_check.is_checked_by(claim) {
        return Ok(config);
    }
    let validator = worker
        .config_check
        .validator()
        .map_err(|schema_error| ConfigRefusal::BrokenSchema(schema_error.to_string()))?;
    validator
        .validate_map(config)
        .map_err(|invalid| ConfigRefusal::Invalid(invalid.to_string()))
}

enum ConfigRefusal {
    /// The plugin's own schema cannot check anything: its fault (500).
    BrokenSchema(String),
    /// The configuration breaks the schema: the caller's fault (400).
    Invalid(String),
}

impl ConfigRefusal {
    fn into_response(self, plugin: &str) -> Response<ResponseBody> {
        match self {
            ConfigRefusal::BrokenSchema(reason) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "plugin {plugin} cannot check configurations: its config schema is {reason}"
                ),
                Some(ErrorKind::Failed.as_str()),
            ),
            ConfigRefusal::Invalid(violations) => failure_response(
                StatusCode::BAD_REQUEST,
                &CallFailure::Plugin(PluginError::invalid_config(violations)),
            ),
        }
    }
}

/// Answer a plugin call's JSON result. The call runs right here: every connection
/// has a thread of its own (see `server.rs`), so a long execution holds up only its
/// own connection, never `/health` or `/stats` on another.
fn answer(call: impl FnOnce() -> Result<Value, CallFailure>) -> Response<ResponseBody> {
    match call() {
        Ok(value) => bytes_response(
            StatusCode::OK,
            wire::CONTENT_TYPE_JSON,
            Bytes::from(json::to_vec(&value)),
        ),
        Err(failure) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
    }
}

async fn execute_stream(worker: Arc<Worker>, call: Call) -> Response<ResponseBody> {
    match crate::stream::start(worker, call).await {
        Ok(body) => {
            let mut response = Response::new(Either::Right(body));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(wire::CONTENT_TYPE_NDJSON),
            );
            response
        }
        Err(failure) => failure_response(StatusCode::INTERNAL_SERVER_ERROR, &failure),
    }
}

/// Read a whole request body as JSON of type `T`, refusing bodies over the limit
/// (413) and bodies that are not valid JSON for `T` (400).
async fn read_json<T: serde::de::DeserializeOwned>(
    worker: &Worker,
    request: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let limit = worker.max_body_bytes;
    let bytes = match body::read_to_bytes(request.into_body(), limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge { .. }) => return Err(too_large(limit)),
        Err(BodyError::Read(err)) => {
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

fn unauthorized() -> Response<ResponseBody> {
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        String::from(
            "missing or wrong access token: this worker serves only the host that started it",
        ),
        Some("unauthorized"),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(wire::AUTHORIZATION_SCHEME),
    );
    response
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
