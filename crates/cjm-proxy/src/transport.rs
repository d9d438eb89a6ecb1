//! HTTP/1.1 to one worker over loopback, on pooled keep-alive connections.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use cjm_interface::{body, wire};

#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: String,
    /// `Bearer <secret>` for a worker that requires it, sent on every request.
    authorization: Option<HeaderValue>,
}

impl Transport {
    pub(crate) fn new(port: u16, authorization: Option<HeaderValue>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Transport {
            client,
            authority: format!("127.0.0.1:{port}"),
            authorization,
        }
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &'static str,
        body: Option<Bytes>,
        extra_header: Option<(HeaderName, HeaderValue)>,
    ) -> Result<Response<Incoming>, String> {
        let uri: Uri = format!("http://{}{path}", self.authority)
            .parse()
            .map_err(|err| format!("bad URI: {err}"))?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(authorization) = &self.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        if let Some((name, value)) = extra_header {
            builder = builder.header(name, value);
        }
        if body.is_some() {
            builder = builder.header(
                CONTENT_TYPE,
                HeaderValue::from_static(wire::CONTENT_TYPE_JSON),
            );
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|err| err.to_string())?;
        self.client
            .request(request)
            .await
            .map_err(|err| describe(&err))
    }
}

/// The whole body of a response. A worker's answer is as large as its plugin made it:
/// the host sets no limit of its own.
pub(crate) async fn read_body(response: Response<Incoming>) -> Result<Bytes, String> {
    body::read_to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|err| err.to_string())
}

/// The whole body of a response, into `buffer` (see [`body::read_into`]).
pub(crate) async fn read_body_into(
    response: Response<Incoming>,
    buffer: &mut Vec<u8>,
) -> Result<(), String> {
    body::read_into(response.into_body(), buffer, usize::MAX)
        .await
        .map_err(|err| err.to_string())
}

/// hyper-util's errors say little at the top level; the cause chain says what happened.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
