//! One HTTP request in, one response out: routing and the protocol's endpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cjm_interface::body::{self, BodyError};
use cjm_interface::wire::{self, HealthResponse, StatusResponse};
use cjm_interface::{json, ErrorKind};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;

use crate::auth::AccessToken;
use crate::body::ResponseBody;
use crate::calls::Calls;
use crate::config_check::ConfigCheck;
use crate::host::{guarded, CallFailure, PluginHost};
use crate::proc_stats::CpuSampler;
use crate::respond::{
    bytes_response, error_response, failure_response, json_response, method_not_allowed, too_large,
    unauthorized,
};

pub(crate) struct Worker {
    pub(crate) host: PluginHost,
    pub(crate) max_body_bytes: usize,
    /// The plugin's config schema: `/initialize` checks with it before the plugin
    /// sees a configuration.
    pub(crate) config_check: ConfigCheck,
    /// `None`: started without a secret, every request is served.
    pub(crate) access: Option<AccessToken>,
    cpu: Mutex<CpuSampler>,
    cleaned_up: AtomicBool,
    /// The calls in flight, for `/cancel` and `/progress`.
    pub(crate) calls: Arc<Calls>,
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
            calls: Arc::default(),
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
        wire::PATH_CONFIG_SCHEMA if get => plugin_value(&worker, |plugin| plugin.config_schema()),
        wire::PATH_CONFIG if get => plugin_value(&worker, |plugin| plugin.current_config()),
        wire::PATH_INITIALIZE if post => crate::configure::initialize(worker, request).await,
        wire::PATH_RECONFIGURE if post => crate::configure::reconfigure(worker, request).await,
        wire::PATH_ON_ENABLE if post => crate::lifecycle::on_enable(&worker),
        wire::PATH_ON_DISABLE if post => crate::lifecycle::on_disable(&worker),
        wire::PATH_PREFETCH if post => crate::lifecycle::prefetch(worker, request).await,
        wire::PATH_CONFIG_OPTIONS if get => plugin_value(&worker, |plugin| plugin.config_options()),
        wire::PATH_STRUCTURAL_SURFACE if get => {
            json_response(StatusCode::OK, &crate::lifecycle::structural_surface())
        }
        wire::PATH_GET_SYSTEM_STATUS if post => {
            crate::lifecycle::monitor(&worker, |plugin| plugin.system_status())
        }
        wire::PATH_LIST_PROCESSES if post => {
            crate::lifecycle::monitor(&worker, |plugin| plugin.list_processes())
        }
        wire::PATH_EXECUTE if post => crate::task::execute(worker, request).await,
        wire::PATH_EXECUTE_STREAM if post => crate::task::execute_stream(worker, request).await,
        wire::PATH_CANCEL if post => crate::task::cancel(worker, request).await,
        wire::PATH_PROGRESS if get => crate::task::progress(worker, request).await,
        wire::PATH_CLEANUP if post => match worker.cleanup_once() {
            Ok(()) => json_response(
                StatusCode::OK,
                &StatusResponse {
                    status: String::from("cleaned"),
                },
            ),
            Err(failure) => failure_response(worker.host.name(), &failure),
        },
        wire::PATH_HEALTH
        | wire::PATH_STATS
        | wire::PATH_CONFIG_SCHEMA
        | wire::PATH_CONFIG
        | wire::PATH_PROGRESS
        | wire::PATH_CONFIG_OPTIONS
        | wire::PATH_STRUCTURAL_SURFACE => method_not_allowed("GET"),
        wire::PATH_INITIALIZE
        | wire::PATH_RECONFIGURE
        | wire::PATH_EXECUTE
        | wire::PATH_EXECUTE_STREAM
        | wire::PATH_CANCEL
        | wire::PATH_CLEANUP
        | wire::PATH_ON_ENABLE
        | wire::PATH_ON_DISABLE
        | wire::PATH_PREFETCH
        | wire::PATH_GET_SYSTEM_STATUS
        | wire::PATH_LIST_PROCESSES => method_not_allowed("POST"),
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

/// A value the plugin reports (its schema, its configuration), as JSON.
pub(crate) fn plugin_value(
    worker: &Worker,
    report: impl FnOnce(&dyn cjm_interface::Plugin) -> Value,
) -> Response<ResponseBody> {
    match guarded(|| Ok(report(worker.host.read().as_ref()))) {
        Ok(value) => bytes_response(
            StatusCode::OK,
            wire::CONTENT_TYPE_JSON,
            Bytes::from(json::to_vec(&value)),
        ),
        Err(failure) => failure_response(worker.host.name(), &failure),
    }
}

/// Read a whole request body as JSON of type `T`, refusing bodies over the limit
/// (413) and bodies that are not valid JSON for `T` (400).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
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
