//! `/api/plugins`: what is discovered and loaded, load and unload.

use std::collections::BTreeMap;
use std::sync::Arc;

use cjm_manager::{ConfigMap, PluginState};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::json::{rss_bytes, time};
use crate::problem::ApiError;
use crate::request::{parse_json, read_body};
use crate::state::Shared;

fn state_name(state: PluginState) -> &'static str {
    match state {
        PluginState::Running => "running",
        PluginState::Restarting => "restarting",
        PluginState::Stopped => "stopped",
        PluginState::Dead => "dead",
        _ => "unknown",
    }
}

/// One plugin as the API shows it: from its manifest, and its worker when loaded.
pub(crate) fn plugin(
    shared: &Shared,
    name: &str,
    discovered: Option<&cjm_manager::PluginMeta>,
) -> Value {
    let manager = &shared.manager;
    let meta = manager.plugin_meta(name);
    let meta = meta.as_ref().or(discovered);
    let status = manager.plugin_status(name);
    let worker = manager.worker_info(name);
    json!({
        "name": name,
        "version": meta.map(|meta| meta.version.clone()),
        "category": meta.map(|meta| meta.category.clone()),
        "description": meta.map(|meta| meta.description.clone()),
        "config_schema": meta.map(|meta| meta.config_schema.clone()),
        "resources": meta.map(|meta| meta.resources.clone()),
        "discovered": discovered.is_some(),
        "loaded": status.is_some(),
        "state": status.as_ref().map(|status| state_name(status.state)),
        "pid": status.as_ref().and_then(|status| status.pid),
        "location": worker.as_ref().map(|worker| worker.location.clone()),
        "rss_bytes": worker.as_ref().filter(|worker| worker.local).and_then(|worker| rss_bytes(worker.pid)),
        "enabled": meta.map(|meta| meta.enabled),
        "gpu_memory_bytes": manager.plugin_gpu_memory_mb(name).ok().flatten().map(crate::json::mb_to_bytes),
        "restarts": status.as_ref().map(|status| status.restarts),
        "last_failure": status.as_ref().and_then(|status| status.last_failure.clone()),
        "keep_alive_s": status.as_ref().and_then(|status| status.keep_alive).map(|keep| keep.as_secs_f64()),
        "idle_stop_at": status.as_ref().and_then(|status| status.idle_stop_at).map(time),
        "running_jobs": manager.active_executions(name),
    })
}

/// `GET /api/plugins`: discovered ones and loaded ones (instances included), by name.
pub(crate) fn list(shared: &Shared) -> Response<Body> {
    let discovery = shared.manager.discovery();
    let mut names: BTreeMap<String, Option<cjm_manager::PluginMeta>> = discovery
        .plugins
        .iter()
        .map(|found| (found.meta.name.clone(), Some(found.meta.clone())))
        .collect();
    for meta in shared.manager.list_plugins() {
        names.entry(meta.name).or_insert(None);
    }
    let plugins: Vec<Value> = names
        .iter()
        .map(|(name, meta)| plugin(shared, name, meta.as_ref()))
        .collect();
    let problems: Vec<Value> = discovery
        .problems
        .iter()
        .map(|problem| json!({"path": problem.path, "reason": problem.reason.to_string()}))
        .collect();
    body::json(
        StatusCode::OK,
        &json!({"plugins": plugins, "problems": problems}),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadBody {
    #[serde(default)]
    config: Option<ConfigMap>,
    /// Load the plugin once more under this name (`load_instance`).
    #[serde(default)]
    instance: Option<String>,
}

/// `POST /api/plugins/{name}/load`, with `{"config": {...}, "instance": "..."}` (both
/// optional) or no body.
pub(crate) async fn load(
    shared: Arc<Shared>,
    name: String,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let bytes = read_body(request, shared.max_body).await?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        LoadBody {
            config: None,
            instance: None,
        }
    } else {
        parse_json::<LoadBody>(&bytes, "the load request")?
    };
    let config = body.config;
    let instance = body.instance.unwrap_or_else(|| name.clone());
    if shared.is_draining() {
        return Err(ApiError::stopping());
    }
    // On a task of its own: a client that goes away mid-load must not drop the load
    // half way (a worker started and never recorded).
    let loading = {
        let shared = Arc::clone(&shared);
        let name = name.clone();
        let instance = instance.clone();
        tokio::spawn(async move { shared.manager.load_instance(&name, &instance, config).await })
    };
    match loading.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err.into()),
        Err(err) => return Err(task_failed("the load", err)),
    }
    Ok(body::json(
        StatusCode::OK,
        &plugin(&shared, &instance, None),
    ))
}

/// `POST /api/plugins/{name}/unload`.
pub(crate) async fn unload(shared: Arc<Shared>, name: String) -> Result<Response<Body>, ApiError> {
    if shared.is_draining() {
        return Err(ApiError::stopping());
    }
    let unloading = {
        let shared = Arc::clone(&shared);
        let name = name.clone();
        tokio::spawn(async move { shared.manager.unload_plugin(&name).await })
    };
    match unloading.await {
        Ok(Ok(())) => Ok(body::json(
            StatusCode::OK,
            &json!({"name": name, "loaded": false}),
        )),
        Ok(Err(err)) => Err(err.into()),
        Err(err) => Err(task_failed("the unload", err)),
    }
}

pub(crate) fn task_failed(what: &str, err: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "failed",
        cjm_manager::ErrorCategory::Fatal,
        format!("{what} failed inside the daemon: {err}"),
    )
}
