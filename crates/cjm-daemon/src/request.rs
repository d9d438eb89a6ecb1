//! Reading requests: bodies read whole up to a bound, JSON parsed into a typed
//! shape (unknown fields refused), query parameters, job ids.

use bytes::Bytes;
use cjm_manager::jobs::JobId;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// The body, whole, refused past `limit` bytes (413) before more is read.
pub(crate) async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            cjm_manager::ErrorCategory::UserInput,
            format!("the request body is over {limit} bytes"),
        )
    };
    // Said up front: refused without reading a byte of it.
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(ApiError::bad_request(
            "unreadable_body",
            format!("the request body could not be read: {err}"),
        )),
    }
}

/// `bytes` as JSON of shape `T`; `what` names the body in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let error = if err.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(error, format!("{what}: {err}"))
    })
}

/// Query parameter `name`'s value (no percent-decoding: the API's parameters are
/// numbers and booleans).
pub(crate) fn query<'a>(request_query: Option<&'a str>, name: &str) -> Option<&'a str> {
    request_query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A boolean query parameter: absent, `false` or `0` are false; `true`, `1` or the
/// bare name are true; anything else is refused.
pub(crate) fn query_flag(request_query: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match query(request_query, name) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!("?{name}={other}: expected true or false"),
        )),
    }
}

/// A job id from a path: `7` or `job-7`.
pub(crate) fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.strip_prefix("job-")
        .unwrap_or(text)
        .parse::<u64>()
        .map(JobId)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_job_id",
                format!("{text:?} is not a job id (a number, or job-NUMBER)"),
            )
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn query_parameters_and_job_ids() {
        assert_eq!(query(Some("a=1&timeout_ms=50"), "timeout_ms"), Some("50"));
        assert_eq!(query(Some("force"), "force"), Some(""));
        assert_eq!(query(None, "force"), None);
        assert!(query_flag(Some("force=true"), "force").unwrap());
        assert!(!query_flag(Some("x=1"), "force").unwrap());
        assert_eq!(
            query_flag(Some("force=maybe"), "force").unwrap_err().status,
            400
        );
        assert_eq!(job_id("job-7").unwrap(), JobId(7));
        assert_eq!(job_id("7").unwrap(), JobId(7));
        assert!(job_id("seven").is_err());
    }
}
