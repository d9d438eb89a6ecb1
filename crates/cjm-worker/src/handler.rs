//! One HTTP request in, one response out: routing and the protocol's endpoints.

use std::sync::Arc;

use bytes::Bytes;
use cjm_interface::envelope::PATH_TASK;
use cjm_interface::json;
use cjm_interface::wire::{self, HealthResponse, StatusResponse};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::body::ResponseBody;
use crate::host::guarded;
use crate::offload::off_io;
use crate::respond::{
    bytes_response, error_response, failure_response, json_response, method_not_allowed,
    unauthorized,
};
use crate::state::Worker;

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
                substrate_version: worker
                    .substrate
                    .as_ref()
                    .map(|(version, _)| version.as_str().to_owned()),
                python_executable: worker
                    .substrate
                    .as_ref()
                    .map(|(_, program)| program.clone()),
            },
        ),
        wire::PATH_STATS if get => stats(&worker),
        wire::PATH_CONFIG_SCHEMA if get => {
            plugin_value(worker, |plugin| plugin.config_schema()).await
        }
        wire::PATH_CONFIG if get => plugin_value(worker, |plugin| plugin.current_config()).await,
        wire::PATH_INITIALIZE if post => crate::configure::initialize(worker, request).await,
        wire::PATH_RECONFIGURE if post => crate::configure::reconfigure(worker, request).await,
        wire::PATH_ON_ENABLE if post => off_io(move || crate::lifecycle::on_enable(&worker)).await,
        wire::PATH_ON_DISABLE if post => {
            off_io(move || crate::lifecycle::on_disable(&worker)).await
        }
        wire::PATH_PREFETCH if post => crate::lifecycle::prefetch(worker, request).await,
        wire::PATH_CONFIG_OPTIONS if get => {
            plugin_value(worker, |plugin| plugin.config_options()).await
        }
        wire::PATH_STRUCTURAL_SURFACE if get => json_response(
            StatusCode::OK,
            &crate::lifecycle::structural_surface(&worker.adapters),
        ),
        wire::PATH_GET_SYSTEM_STATUS if post => {
            off_io(move || crate::lifecycle::monitor(&worker, |plugin| plugin.system_status()))
                .await
        }
        wire::PATH_LIST_PROCESSES if post => {
            off_io(move || crate::lifecycle::monitor(&worker, |plugin| plugin.list_processes()))
                .await
        }
        wire::PATH_EXECUTE if post => crate::task::execute(worker, request).await,
        PATH_TASK if post => crate::adapters::task(worker, request).await,
        wire::PATH_EXECUTE_STREAM if post => crate::task::execute_stream(worker, request).await,
        wire::PATH_CANCEL if post => crate::task::cancel(worker, request).await,
        wire::PATH_PROGRESS if get => crate::task::progress(worker, request).await,
        wire::PATH_CLEANUP if post => off_io(move || cleanup(&worker)).await,
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
        | PATH_TASK
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

fn cleanup(worker: &Worker) -> Response<ResponseBody> {
    match worker.cleanup_once() {
        Ok(()) => json_response(
            StatusCode::OK,
            &StatusResponse {
                status: String::from("cleaned"),
            },
        ),
        Err(failure) => failure_response(worker, &failure),
    }
}

/// A value the plugin reports (its schema, its configuration), as JSON.
async fn plugin_value(
    worker: Arc<Worker>,
    report: impl FnOnce(&dyn cjm_interface::Plugin) -> Value + Send + 'static,
) -> Response<ResponseBody> {
    off_io(move || match guarded(|| Ok(report(&*worker.host.read()))) {
        Ok(value) => bytes_response(
            StatusCode::OK,
            wire::CONTENT_TYPE_JSON,
            Bytes::from(json::to_vec(&value)),
        ),
        Err(failure) => failure_response(&worker, &failure),
    })
    .await
}
