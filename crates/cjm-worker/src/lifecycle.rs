//! The original 0.0.46's lifecycle endpoints: enable and disable, prefetch, the
//! structural surface, and a monitor plugin's accessors. Each runs an optional
//! [`Plugin`](cjm_interface::Plugin) hook, whose default does nothing.

use std::sync::Arc;

use cjm_interface::wire::{self, StatusResponse};
use cjm_interface::{Plugin, PluginError};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::ResponseBody;
use crate::host::guarded;
use crate::offload::off_io;
use crate::respond::{bytes_response, error_response, failure_response, json_response};
use crate::state::Worker;

/// `POST /on_enable`. Like the original, a hook that fails answers 200 with
/// `{"status": "error", "detail"}`: the plugin stays enabled either way.
pub(crate) fn on_enable(worker: &Worker) -> Response<ResponseBody> {
    hook(worker, "enabled", |plugin| plugin.on_enable())
}

/// `POST /on_disable` (after the calls in flight: the hook has the plugin alone).
pub(crate) fn on_disable(worker: &Worker) -> Response<ResponseBody> {
    hook(worker, "disabled", |plugin| plugin.on_disable())
}

fn hook(
    worker: &Worker,
    done: &str,
    run: impl FnOnce(&mut dyn Plugin) -> Result<(), PluginError>,
) -> Response<ResponseBody> {
    let result = {
        let mut plugin = worker.host.write();
        guarded(|| run(&mut *plugin))
    };
    let answer = match result {
        Ok(()) => json!({"status": done}),
        Err(failure) => {
            tracing::warn!("{done} hook failed: {failure}");
            json!({"status": "error", "detail": failure.to_string()})
        }
    };
    json_response(StatusCode::OK, &answer)
}

/// `POST /prefetch`: the plugin's `prefetch` runs as a call of its own, so that its
/// progress shows on `/progress` (the host's stall rule reads it) and `/cancel`
/// reaches it.
pub(crate) async fn prefetch(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let id = request
        .headers()
        .get(wire::CALL_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let running = match worker.calls.start(id) {
        Ok(running) => running,
        Err(refused) => return crate::respond::refused_response(&worker, &refused),
    };
    off_io(move || {
        let control = running.control();
        let result = {
            let plugin = worker.host.read();
            guarded(|| plugin.prefetch(&control))
        };
        drop(running);
        match result {
            Ok(()) => json_response(
                StatusCode::OK,
                &StatusResponse {
                    status: String::from("prefetched"),
                },
            ),
            Err(failure) => failure_response(&worker, &failure),
        }
    })
    .await
}

/// `POST /get_system_status`, `/list_processes`: 404 when the plugin is no monitor.
pub(crate) fn monitor(
    worker: &Worker,
    ask: impl FnOnce(&dyn Plugin) -> Option<Result<Value, PluginError>>,
) -> Response<ResponseBody> {
    let answer = {
        let plugin = worker.host.read();
        guarded(|| ask(&*plugin).transpose())
    };
    match answer {
        Ok(Some(value)) => bytes_response(
            StatusCode::OK,
            wire::CONTENT_TYPE_JSON,
            bytes::Bytes::from(cjm_interface::json::to_vec(&value)),
        ),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            format!("plugin {} is not a system monitor", worker.host.name()),
            None,
        ),
        Err(failure) => failure_response(worker, &failure),
    }
}

/// What a host may call on this worker, in the shape of the original's
/// `derive_structural_surface` (which introspects a Python class): our plugins all
/// have the same surface, the protocol's, and their task adapters' methods beside it
/// (what the original's host matches an adapter manifest's protocol against), with
/// each adapter under `task_adapters`.
pub(crate) fn structural_surface(adapters: &crate::TaskAdapters) -> Value {
    let method = |name: &str, params: &[&str]| {
        json!({
            "name": name,
            "signature": format!("(self, {})", params.join(", ")),
            "params": params,
        })
    };
    let mut surface = json!({
        "methods": [
            method("cancel", &[]),
            method("cleanup", &[]),
            method("execute", &["args", "kwargs"]),
            method("execute_stream", &["args", "kwargs"]),
            method("get_config_options", &[]),
            method("get_config_schema", &[]),
            method("get_current_config", &[]),
            method("initialize", &["config"]),
            method("on_disable", &[]),
            method("on_enable", &[]),
            method("prefetch", &[]),
            method("reconfigure", &["old_config", "new_config"]),
        ],
        "properties": ["name", "version"],
        "attributes": [],
    });
    if let Some(Value::Array(methods)) = surface.get_mut("methods") {
        methods.extend(adapters.surface_methods());
    }
    surface["task_adapters"] = Value::Array(adapters.surface());
    surface
}
