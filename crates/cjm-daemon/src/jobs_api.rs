//! `/api/jobs`: submit (a call, or a task adapter's method), get, wait (a long
//! poll), cancel (the listing: `jobs_query.rs`).

use std::sync::Arc;
use std::time::Duration;

use cjm_manager::jobs::{JobId, TaskCall};
use cjm_manager::CallArgs;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::body::{self, Body};
use crate::json::job_status;
use crate::problem::ApiError;
use crate::request::{job_id, parse_json, query, query_flag, read_body};
use crate::state::Shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    pub(crate) plugin: String,
    #[serde(default)]
    pub(crate) args: Vec<Value>,
    #[serde(default)]
    pub(crate) kwargs: Map<String, Value>,
    #[serde(default)]
    pub(crate) priority: i32,
    /// A task adapter's method (`/task`) instead of `execute`: `cjm-ctl task`.
    #[serde(default)]
    pub(crate) task: Option<TaskBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskBody {
    task: String,
    method: String,
}

/// `POST /api/jobs`: `{plugin, args, kwargs, priority}` -> `{id, journal_id}`.
pub(crate) async fn submit(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = read_submission(&shared, request).await?;
    let asked = json!({
        "args": body.args,
        "kwargs": body.kwargs,
        "task": body.task.as_ref().map(|task| json!({"task": task.task, "method": task.method})),
    });
    let call = CallArgs::from_json(body.args, body.kwargs);
    let id = match body.task {
        Some(TaskBody { task, method }) => {
            let task = TaskCall::new(task, method);
            shared
                .jobs
                .submit_task(&body.plugin, task, call, body.priority)?
        }
        None => shared.jobs.submit(&body.plugin, call, body.priority)?,
    };
    shared.arguments.keep(id.0, asked);
    Ok(body::json(
        StatusCode::ACCEPTED,
        &json!({"id": id.0, "journal_id": shared.jobs.journal_id(id)}),
    ))
}

/// A job's body, read, parsed and checked to be one that may be queued now.
pub(crate) async fn read_submission(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<SubmitBody, ApiError> {
    let bytes = read_body(request, shared.max_body).await?;
    let body: SubmitBody = parse_json(&bytes, "the job")?;
    submittable(shared, &body.plugin)?;
    Ok(body)
}

/// Whether a job of `plugin` may be queued now: named, the daemon not stopping,
/// the plugin loaded (else why not, in the API's words).
pub(crate) fn submittable(shared: &Shared, plugin: &str) -> Result<(), ApiError> {
    if plugin.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the job: `plugin` is empty",
        ));
    }
    if shared.is_draining() {
        return Err(ApiError::stopping());
    }
    if !shared.manager.is_loaded(plugin) {
        let known = shared
            .manager
            .discovery()
            .plugins
            .iter()
            .any(|found| found.meta.name == plugin);
        return Err(if known {
            ApiError::new(
                StatusCode::CONFLICT,
                "plugin_not_loaded",
                cjm_manager::ErrorCategory::UserInput,
                format!(
                    "plugin {} is not loaded: POST /api/plugins/{}/load first",
                    plugin, plugin
                ),
            )
        } else {
            ApiError::not_found(
                "unknown_plugin",
                format!("no plugin {} is installed here", plugin),
            )
        });
    }
    Ok(())
}

pub(crate) fn status_of(shared: &Shared, id: JobId) -> Result<Value, ApiError> {
    let status = shared.jobs.status(id).ok_or_else(|| {
        ApiError::not_found(
            "unknown_job",
            format!("no {id} here (or it ended long ago)"),
        )
    })?;
    let mut value = job_status(&status, shared.jobs.journal_id(id));
    if let (Value::Object(fields), Some(asked)) = (&mut value, shared.arguments.of(id.0)) {
        fields.insert(String::from("arguments"), asked);
    }
    Ok(value)
}

/// `GET /api/jobs/{id}`.
pub(crate) fn get(shared: &Shared, id: &str) -> Result<Response<Body>, ApiError> {
    let id = job_id(id)?;
    Ok(body::json(StatusCode::OK, &status_of(shared, id)?))
}

const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// `GET /api/jobs/{id}/wait?timeout_ms=`: answers when the job ends (with its result)
/// or when the time is up (`"ended": false`), whichever comes first.
pub(crate) async fn wait(
    shared: Arc<Shared>,
    id: &str,
    request_query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let id = job_id(id)?;
    let timeout = match query(request_query, "timeout_ms") {
        None => DEFAULT_WAIT,
        Some(text) => text
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("?timeout_ms={text}: expected a number of milliseconds"),
                )
            })?
            .min(MAX_WAIT),
    };
    // Known first, so that an unknown job is a 404 at once, not after the timeout.
    status_of(&shared, id)?;
    // Dropping the wait (timeout, or the client gone) only drops a subscription.
    match tokio::time::timeout(timeout, shared.jobs.wait(id)).await {
        Ok(Ok(outcome)) => Ok(body::json(
            StatusCode::OK,
            &json!({
                "ended": true,
                "job": job_status(&outcome.status, shared.jobs.journal_id(id)),
                "result": outcome.result,
            }),
        )),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Ok(body::json(
            StatusCode::OK,
            &json!({"ended": false, "job": status_of(&shared, id)?}),
        )),
    }
}

/// `POST /api/jobs/{id}/cancel[?force=true]`: cooperative, or the worker killed at
/// once. `cancelled`: whether the job had not ended yet.
pub(crate) fn cancel(
    shared: &Shared,
    id: &str,
    request_query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let id = job_id(id)?;
    let force = query_flag(request_query, "force")?;
    let cancelled = match force {
        true => shared.jobs.cancel_now(id)?,
        false => shared.jobs.cancel(id)?,
    };
    Ok(body::json(
        StatusCode::OK,
        &json!({"id": id.0, "cancelled": cancelled, "forced": force}),
    ))
}
