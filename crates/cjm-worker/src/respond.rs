//! Building answers: JSON documents, and error bodies in the shape every host
//! understands (`detail`, our `kind`, the original's `_job_error`).

use bytes::Bytes;
use cjm_interface::wire::{self, ErrorResponse, JobError};
use cjm_interface::{ErrorCategory, ErrorKind, PluginError};
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::body::ResponseBody;
use crate::calls::Refused;
use crate::host::CallFailure;
use crate::state::Worker;

pub(crate) fn too_large(limit: usize) -> Response<ResponseBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds the worker's limit of {limit} bytes"),
        None,
    )
}

pub(crate) fn unauthorized() -> Response<ResponseBody> {
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

pub(crate) fn method_not_allowed(allowed: &'static str) -> Response<ResponseBody> {
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

/// The answer to a failed plugin call. Its status follows what the failure means to
/// the caller: 409 for a call that was cancelled, 400 for the caller's mistake
/// (`user_input`), 500 for the rest.
pub(crate) fn failure_response(worker: &Worker, failure: &CallFailure) -> Response<ResponseBody> {
    let status = match failure {
        CallFailure::Plugin(err) if err.kind() == ErrorKind::Cancelled => StatusCode::CONFLICT,
        CallFailure::Plugin(err) if err.category() == ErrorCategory::UserInput => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    failure_response_with(status, worker, failure)
}

/// The answer to a call that was not started: 409 with a cancelled `_job_error`
/// (the answer of a call cancelled while running) for a call cancelled before it
/// arrived, 400 for an id already in use.
pub(crate) fn refused_response(worker: &Worker, refused: &Refused) -> Response<ResponseBody> {
    let err = match refused {
        Refused::Cancelled(id) => PluginError::cancelled(format!(
            "call {id} was cancelled before it reached the worker"
        )),
        Refused::InUse(id) => PluginError::invalid_argument(format!(
            "call id {id} is already in use by a call in flight on this worker"
        )),
    };
    failure_response(worker, &CallFailure::Plugin(err))
}

/// [`failure_response`] with the status given (`/initialize` answers the original's
/// 400 for whatever the plugin refuses).
pub(crate) fn failure_response_with(
    status: StatusCode,
    worker: &Worker,
    failure: &CallFailure,
) -> Response<ResponseBody> {
    let (err, kind) = failure.as_plugin_error();
    json_response(
        status,
        &ErrorResponse {
            detail: err.message().to_owned(),
            kind: Some(kind.to_owned()),
            job_error: Some(JobError::from_plugin_error_named(
                &err,
                worker.host.name(),
                worker.error_names(),
            )),
        },
    )
}

/// An error of the worker's own (no plugin call involved).
pub(crate) fn error_response(
    status: StatusCode,
    detail: String,
    kind: Option<&str>,
) -> Response<ResponseBody> {
    json_response(
        status,
        &ErrorResponse {
            detail,
            kind: kind.map(str::to_owned),
            job_error: None,
        },
    )
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(status, wire::CONTENT_TYPE_JSON, Bytes::from(body)),
        Err(err) => bytes_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            Bytes::from(format!("cannot serialise response: {err}")),
        ),
    }
}

pub(crate) fn bytes_response(
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
