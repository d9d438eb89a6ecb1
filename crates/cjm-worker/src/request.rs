//! Request bodies: read off the connection (on the I/O thread), parsed where the
//! work is done (off it, for the calls that carry large bodies).

use std::sync::Arc;

use bytes::Bytes;
use cjm_interface::body::{self, BodyError};
use cjm_interface::ErrorKind;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::offload::off_io;
use crate::respond::{error_response, too_large};
use crate::state::Worker;

/// Read a whole request body as JSON of type `T`, refusing bodies over the limit
/// (413) and bodies that are not valid JSON for `T` (400).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    worker: &Worker,
    request: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    parse_json(&read_body(worker, request).await?)
}

/// Read a whole request body, refusing bodies over the limit (413).
pub(crate) async fn read_body(
    worker: &Worker,
    request: Request<Incoming>,
) -> Result<Bytes, Response<ResponseBody>> {
    let limit = worker.max_body_bytes;
    match body::read_to_bytes(request.into_body(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(BodyError::TooLarge { .. }) => Err(too_large(limit)),
        Err(BodyError::Read(err)) => Err(error_response(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {err}"),
            None,
        )),
    }
}

/// A body as JSON of type `T`; 400 if it is not valid JSON for `T`.
// The error is the answer to send, made once for a refused request: boxing it would
// cost every caller an unwrapping for nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, Response<ResponseBody>> {
    // An empty body means "nothing given", as for FastAPI's optional bodies.
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|err| {
        error_response(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid: {err}"),
            Some(ErrorKind::InvalidArgument.as_str()),
        )
    })
}

/// Read the body here, on the I/O thread, then parse it as `T` and answer with `work`
/// on the plugin pool: the shape of every request that carries the plugin's input.
pub(crate) async fn answer_off_io<T, F>(
    worker: Arc<Worker>,
    request: Request<Incoming>,
    work: F,
) -> Response<ResponseBody>
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(&Worker, T) -> Response<ResponseBody> + Send + 'static,
{
    let body = match read_body(&worker, request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    off_io(move || match parse_json::<T>(&body) {
        Ok(input) => {
            drop(body);
            work(&worker, input)
        }
        Err(response) => response,
    })
    .await
}
