//! `/api/plugins/{name}/...`: reload, enable, disable, the configuration (read, and
//! a partial update checked against the schema first), the schema, stats.
//!
//! Every change runs on a task of its own: a client that goes away mid-change does
//! not drop it half way (the manager's lifecycle lock is held by that task).

use std::future::Future;
use std::sync::Arc;

use cjm_manager::{ConfigMap, ManagerError};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::plugins_api::{plugin, task_failed};
use crate::problem::ApiError;
use crate::request::{parse_json, read_body};
use crate::state::Shared;

/// `change` on a task of its own; its outcome, or why the task failed.
async fn on_task<T: Send + 'static>(
    what: &str,
    change: impl Future<Output = Result<T, ManagerError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(change).await {
        Ok(outcome) => outcome.map_err(ApiError::from),
        Err(err) => Err(task_failed(what, err)),
    }
}

/// A body of `{"config": {...}}`, `{}` or none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    #[serde(default)]
    config: Option<ConfigMap>,
}

async fn config_body(
    shared: &Shared,
    request: Request<Incoming>,
    what: &str,
) -> Result<Option<ConfigMap>, ApiError> {
    let bytes = read_body(request, shared.max_body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(parse_json::<ConfigBody>(&bytes, what)?.config)
}

fn not_draining(shared: &Shared) -> Result<(), ApiError> {
    match shared.is_draining() {
        true => Err(ApiError::stopping()),
        false => Ok(()),
    }
}

/// `POST /api/plugins/{name}/reload`, with `{"config": {...}}` or no body: a new
/// worker, with the configuration given (checked first) or the one it had.
pub(crate) async fn reload(
    shared: Arc<Shared>,
    name: String,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let config = config_body(&shared, request, "the reload request").await?;
    not_draining(&shared)?;
    let manager = shared.manager.clone();
    let plugin_name = name.clone();
    on_task("the reload", async move {
        manager.reload_plugin(&plugin_name, config).await
    })
    .await?;
    Ok(body::json(StatusCode::OK, &plugin(&shared, &name, None)))
}

/// `POST /api/plugins/{name}/enable` and `/disable`.
pub(crate) async fn set_enabled(
    shared: Arc<Shared>,
    name: String,
    enabled: bool,
) -> Result<Response<Body>, ApiError> {
    not_draining(&shared)?;
    let manager = shared.manager.clone();
    let plugin_name = name.clone();
    let known = on_task("the change", async move {
        Ok(match enabled {
            true => manager.enable_plugin(&plugin_name).await,
            false => manager.disable_plugin(&plugin_name).await,
        })
    })
    .await?;
    if !known {
        return Err(ApiError::not_found(
            "unknown_plugin",
            format!("no plugin {name} is installed or loaded here"),
        ));
    }
    Ok(body::json(
        StatusCode::OK,
        &json!({"name": name, "enabled": enabled}),
    ))
}

/// `GET /api/plugins/{name}/config`: the configuration in force, and whether it is
/// the running worker's word or the one kept for its next start.
pub(crate) async fn get_config(
    shared: Arc<Shared>,
    name: String,
) -> Result<Response<Body>, ApiError> {
    let detail = shared
        .manager
        .plugin_config_detail(&name)
        .await
        .map_err(ApiError::from)?;
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "name": name,
            "config": detail.config,
            "worker_stopped": detail.worker_stopped,
        }),
    ))
}

/// `PUT` (or `POST`) `/api/plugins/{name}/config` `{"config": {...}}`: a partial
/// update, checked against the schema before the worker sees it.
pub(crate) async fn put_config(
    shared: Arc<Shared>,
    name: String,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(update) = config_body(&shared, request, "the configuration").await? else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the configuration: expected {\"config\": {...}}",
        ));
    };
    not_draining(&shared)?;
    let manager = shared.manager.clone();
    let plugin_name = name.clone();
    on_task("the configuration", async move {
        manager.update_plugin_config(&plugin_name, update).await
    })
    .await?;
    get_config(shared, name).await
}

/// `GET /api/plugins/{name}/schema`: the config schema its worker reports, and the
/// live domains of its fields (`options`: models present, devices).
pub(crate) async fn schema(shared: Arc<Shared>, name: String) -> Result<Response<Body>, ApiError> {
    let schema = shared.manager.plugin_config_schema(&name).await?;
    let options = shared
        .manager
        .plugin_config_options(&name)
        .await
        .unwrap_or_else(|_| json!({}));
    Ok(body::json(
        StatusCode::OK,
        &json!({"name": name, "schema": schema, "options": options}),
    ))
}

/// `GET /api/plugins/{name}/stats`: its worker's memory and CPU (the process tree),
/// GPU memory where the driver tells it, and its restarts.
pub(crate) async fn stats(shared: Arc<Shared>, name: String) -> Result<Response<Body>, ApiError> {
    let stats = shared.manager.plugin_stats(&name).await?;
    let mut value = serde_json::to_value(&stats).unwrap_or_else(|_| json!({}));
    let gpu = shared
        .manager
        .plugin_gpu_memory_mb(&name)
        .ok()
        .flatten()
        .map(crate::json::mb_to_bytes);
    if let Value::Object(map) = &mut value {
        map.insert(String::from("name"), Value::from(name));
        map.insert(String::from("gpu_memory_bytes"), json!(gpu));
    }
    Ok(body::json(StatusCode::OK, &value))
}
