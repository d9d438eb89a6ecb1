//! `POST /api/jobs/stream`: a streaming job (`execute_stream`), its chunks in the
//! answer as they come, one JSON line each (`application/x-ndjson`):
//!
//! ```text
//! {"id": 7, "journal_id": "…"}
//! {"chunk": …}            (as many as the plugin yields)
//! {"ended": true, "job": {…}, "result": {"chunks": N}}
//! ```
//!
//! The job is read at the client's pace: the worker waits while the client does not
//! read. A client that goes away drops the job's chunks, which cancels the job (as
//! `Jobs::submit_stream` says), so no stream runs on for nobody.

use std::sync::Arc;

use bytes::Bytes;
use cjm_manager::CallArgs;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::body::{Body, ChannelBody};
use crate::jobs_api::read_submission;
use crate::json::job_status;
use crate::problem::ApiError;
use crate::state::Shared;

/// Lines the answer may hold before the job waits for the client to read.
const LINES_AHEAD: usize = 16;

/// `POST /api/jobs/stream` with `{plugin, args, kwargs, priority}`.
pub(crate) async fn submit(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = read_submission(&shared, request).await?;
    if body.task.is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the job: a task adapter's method is not streamed (POST /api/jobs)",
        ));
    }
    let asked = json!({"args": body.args, "kwargs": body.kwargs, "stream": true});
    let call = CallArgs::from_json(body.args, body.kwargs);
    let (id, mut chunks) = shared
        .jobs
        .submit_stream(&body.plugin, call, body.priority)?;
    shared.arguments.keep(id.0, asked);
    let (send, lines) = mpsc::channel::<Bytes>(LINES_AHEAD);
    let first = line(&json!({"id": id.0, "journal_id": shared.jobs.journal_id(id)}));
    tokio::spawn(async move {
        if send.send(first).await.is_err() {
            return;
        }
        while let Some(chunk) = chunks.next().await {
            if send.send(line(&json!({ "chunk": chunk }))).await.is_err() {
                // The client is gone: dropping the chunks cancels the job.
                return;
            }
        }
        drop(chunks);
        let end = match shared.jobs.wait(id).await {
            Ok(outcome) => json!({
                "ended": true,
                "job": job_status(&outcome.status, shared.jobs.journal_id(id)),
                "result": outcome.result,
            }),
            Err(err) => {
                let err = ApiError::from(err);
                json!({"ended": false, "error": err.error, "detail": err.detail})
            }
        };
        let _ = send.send(line(&end)).await;
    });
    let mut response = Response::new(ChannelBody::new(lines).boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}
