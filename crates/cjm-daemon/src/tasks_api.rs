//! `POST /api/tasks`: a job that calls a method of a task adapter on a plugin
//! (`Jobs::submit_task`): queued, journalled, cancellable and followed on the event
//! stream like any other job.

use std::sync::Arc;

use cjm_manager::jobs::TaskCall;
use cjm_manager::{CallArgs, ErrorCategory};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::body::{self, Body};
use crate::problem::ApiError;
use crate::request::{parse_json, read_body};
use crate::state::Shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    plugin: String,
    task: String,
    method: String,
    #[serde(default)]
    kwargs: Map<String, Value>,
    #[serde(default)]
    priority: i32,
}

/// `POST /api/tasks` `{plugin, task, method, kwargs, priority}` -> `{id, journal_id}`.
/// Checked before anything is queued: every field present and not empty, the plugin
/// loaded, and the task one it serves where the plugin's manifest says which.
pub(crate) async fn submit(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let bytes = read_body(request, shared.max_body).await?;
    let body: TaskBody = parse_json(&bytes, "the task")?;
    for (field, value) in [
        ("plugin", &body.plugin),
        ("task", &body.task),
        ("method", &body.method),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("the task: `{field}` is empty"),
            ));
        }
    }
    if shared.is_draining() {
        return Err(ApiError::stopping());
    }
    let manager = &shared.manager;
    let discovered = manager.discovered_plugin(&body.plugin).is_some();
    if !manager.is_loaded(&body.plugin) {
        return Err(match discovered {
            true => ApiError::new(
                StatusCode::CONFLICT,
                "plugin_not_loaded",
                ErrorCategory::UserInput,
                format!(
                    "plugin {} is not loaded: POST /api/plugins/{}/load first",
                    body.plugin, body.plugin
                ),
            ),
            false => ApiError::not_found(
                "unknown_plugin",
                format!("no plugin {} is installed here", body.plugin),
            ),
        });
    }
    // An instance is not in the discovery under its own name: its worker says.
    if discovered {
        let served = manager
            .capabilities_for_task(&body.task)
            .iter()
            .any(|server| server.plugin == body.plugin);
        if !served {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "task_not_served",
                ErrorCategory::UserInput,
                format!(
                    "plugin {} serves no task {:?} (no adapter that fits it, none built in)",
                    body.plugin, body.task
                ),
            ));
        }
    }
    let asked = json!({
        "args": [],
        "kwargs": body.kwargs,
        "task": {"task": body.task, "method": body.method},
    });
    let id = shared.jobs.submit_task(
        &body.plugin,
        TaskCall::new(body.task, body.method),
        CallArgs::from_json(Vec::new(), body.kwargs),
        body.priority,
    )?;
    shared.arguments.keep(id.0, asked);
    Ok(body::json(
        StatusCode::ACCEPTED,
        &json!({"id": id.0, "journal_id": shared.jobs.journal_id(id)}),
    ))
}
