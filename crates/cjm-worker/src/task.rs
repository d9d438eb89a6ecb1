//! The task channel: `/execute`, `/execute_stream`, and `/cancel` and `/progress`
//! for the calls in flight.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cjm_interface::wire::{self, CancelRequest, CancelResponse, ProgressResponse};
use cjm_interface::{json, Call, ErrorKind, Progress};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::calls::{Cancelled, EARLY_CANCEL_TTL};
use crate::host::guarded;
use crate::log_lines::call_span;
use crate::offload::off_io;
use crate::output;
use crate::request::{answer_off_io, read_json};
use crate::respond::{
    bytes_response, error_response, failure_response, json_response, refused_response,
};
use crate::state::Worker;

/// The longest a `/progress` request waits for a new report.
const MAX_PROGRESS_WAIT: Duration = Duration::from_secs(30);

/// The id the host gave the call, if any.
pub(crate) fn call_id(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(wire::CALL_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// `POST /execute`: the body is read here, on the I/O thread; parsing it, the plugin's
/// `execute` and writing its answer run on the blocking pool (see `offload.rs`). The
/// call is registered (for `/cancel` and `/progress`) only once its arguments parse.
pub(crate) async fn execute(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let id = call_id(&request);
    answer_off_io(worker, request, move |worker, call: Call| {
        run_execute(worker, id, call)
    })
    .await
}

fn run_execute(worker: &Worker, id: Option<String>, mut call: Call) -> Response<ResponseBody> {
    let running = match worker.calls.start_with(id, call.take_envelope()) {
        Ok(running) => running,
        Err(refused) => return refused_response(worker, &refused),
    };
    let control = running.control();
    let call = call.with_control(running.control());
    let result = {
        let plugin = worker.host.read();
        // The plugin's records carry the call and its job, and so does what it
        // prints while it runs alone (see `log_lines.rs`, `output.rs`).
        let _span = call_span(&control).entered();
        let _attributed = output::attribute(control.id());
        guarded(|| plugin.execute(call))
    };
    drop(running);
    let mut response = match result {
        Ok(value) => bytes_response(
            StatusCode::OK,
            wire::CONTENT_TYPE_JSON,
            Bytes::from(json::to_vec(&value)),
        ),
        Err(failure) => failure_response(worker, &failure),
    };
    crate::envelope::attach_accounts(&mut response, &control);
    // The last report rides on the answer: a watcher need not ask for it.
    let last = control.progress();
    if last.seq > 0 {
        let header = wire::ascii_json(&answer(control.id(), last))
            .and_then(|text| HeaderValue::from_str(&text).ok());
        if let Some(header) = header {
            response
                .headers_mut()
                .insert(HeaderName::from_static(wire::PROGRESS_HEADER), header);
        }
    }
    response
}

pub(crate) async fn execute_stream(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let id = call_id(&request);
    let mut call = match read_json::<Call>(&worker, request).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let running = match worker.calls.start_with(id, call.take_envelope()) {
        Ok(running) => running,
        Err(refused) => return refused_response(&worker, &refused),
    };
    match crate::stream::start(Arc::clone(&worker), call, running).await {
        Ok(body) => {
            let mut response = Response::new(Either::Right(body));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(wire::CONTENT_TYPE_NDJSON),
            );
            response
        }
        Err(failure) => failure_response(&worker, &failure),
    }
}

/// `POST /cancel`: the call named in the body, or every call in flight. An id the
/// worker has not seen is answered 404 (`kind` [`wire::KIND_UNKNOWN_CALL`]) and
/// remembered: the call is refused as cancelled if it arrives after its cancel.
pub(crate) async fn cancel(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let asked = match read_json::<CancelRequest>(&worker, request).await {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    if asked.call_id.as_deref() == Some("") {
        return error_response(
            StatusCode::BAD_REQUEST,
            String::from("call_id is empty: name a call, or send no call_id to stop every call"),
            Some(ErrorKind::InvalidArgument.as_str()),
        );
    }
    // Off the I/O thread: cancelling runs the plugin's cancel callbacks.
    off_io(move || cancel_calls(&worker, asked.call_id.as_deref())).await
}

fn cancel_calls(worker: &Worker, id: Option<&str>) -> Response<ResponseBody> {
    let (status, detail) = match worker.calls.cancel(id) {
        Cancelled::Calls(count) => {
            tracing::info!("asked {count} call(s) to stop");
            (wire::CANCEL_STATUS_CANCELLED, None)
        }
        Cancelled::Ended(id) => (
            wire::CANCEL_STATUS_ERROR,
            Some(format!("call {id} has already ended")),
        ),
        Cancelled::Remembered(id) => {
            tracing::info!("call {id} was cancelled before it arrived; it will be refused");
            return error_response(
                StatusCode::NOT_FOUND,
                format!(
                    "no call {id} is known to this worker; its cancel is remembered for {} s, \
                     so that the call is refused if it arrives",
                    EARLY_CANCEL_TTL.as_secs()
                ),
                Some(wire::KIND_UNKNOWN_CALL),
            );
        }
    };
    json_response(
        StatusCode::OK,
        &CancelResponse {
            status: status.to_owned(),
            detail,
        },
    )
}

/// `GET /progress[?call=ID][&after=SEQ][&wait_ms=MS]`.
pub(crate) async fn progress(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let query = ProgressQuery::parse(request.uri().query().unwrap_or(""));
    let Some(control) = worker.calls.find(query.call.as_deref()) else {
        // Nothing ran yet, or that call has ended and gone: as the original
        // answers before any call.
        return json_response(
            StatusCode::OK,
            &ProgressResponse {
                progress: 0.0,
                message: String::new(),
                finished: query.call.is_some().then_some(true),
                call_id: query.call,
                seq: None,
            },
        );
    };
    let progress = match (query.after, query.wait) {
        (Some(after), Some(wait)) if !wait.is_zero() => {
            let watched = control.clone();
            // Waits on a blocking thread, so this connection's runtime stays free.
            tokio::task::spawn_blocking(move || watched.progress_after(after, wait))
                .await
                .unwrap_or_else(|_| control.progress())
        }
        _ => control.progress(),
    };
    json_response(StatusCode::OK, &answer(control.id(), progress))
}

fn answer(id: &str, progress: Progress) -> ProgressResponse {
    ProgressResponse {
        progress: progress.fraction,
        message: progress.message,
        call_id: Some(id.to_owned()),
        seq: Some(progress.seq),
        finished: Some(progress.finished),
    }
}

#[derive(Debug, Default, PartialEq)]
struct ProgressQuery {
    call: Option<String>,
    after: Option<u64>,
    wait: Option<Duration>,
}

impl ProgressQuery {
    /// Unknown or malformed parameters are ignored: the plain original request (no
    /// query) must keep working whatever else is sent.
    fn parse(query: &str) -> Self {
        let mut parsed = ProgressQuery::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "call" => parsed.call = Some(percent_decode(value)),
                "after" => parsed.after = value.parse().ok(),
                "wait_ms" => {
                    parsed.wait = value
                        .parse()
                        .ok()
                        .map(|ms| Duration::from_millis(ms).min(MAX_PROGRESS_WAIT));
                }
                _ => {}
            }
        }
        parsed
    }
}

/// `%XX` escapes decoded (call ids are the host's choice); invalid escapes kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let decoded = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                at += 3;
            }
            None => {
                out.push(if bytes[at] == b'+' { b' ' } else { bytes[at] });
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_queries_are_read_leniently() {
        assert_eq!(ProgressQuery::parse(""), ProgressQuery::default());
        let query = ProgressQuery::parse("call=job%2F7&after=3&wait_ms=250&x=1");
        assert_eq!(query.call.as_deref(), Some("job/7"));
        assert_eq!(query.after, Some(3));
        assert_eq!(query.wait, Some(Duration::from_millis(250)));
        let capped = ProgressQuery::parse("after=x&wait_ms=99999999");
        assert_eq!(capped.after, None);
        assert_eq!(capped.wait, Some(MAX_PROGRESS_WAIT));
        assert_eq!(percent_decode("a%zz+b"), "a%zz b");
    }
}
