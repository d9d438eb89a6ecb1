//! Response bodies: whole JSON ones, and a channel's for the event stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

/// Every response's body.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// `value` as a JSON response.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    with_type(status, value.to_string(), "application/json")
}

/// A response of `status` with `text` of `content_type`.
pub(crate) fn with_type(
    status: StatusCode,
    text: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A body fed by a task: it ends when the task drops its sender; the task sees the
/// client go when its sends fail (hyper drops the body).
#[derive(Debug)]
pub(crate) struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub(crate) fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        ChannelBody { chunks }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
