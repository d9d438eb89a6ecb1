//! HTTP/1.1 to one worker over loopback, on pooled keep-alive connections.

use std::future::Future;
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use cjm_interface::{body, wire, ErrorChain};

use crate::endpoint::Endpoint;
use cjm_tls::PinnedConnector;

/// One request to the worker: the endpoint it is about (named in errors), with an
/// optional query, body and extra headers.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) endpoint: &'static str,
    pub(crate) query: Option<String>,
    pub(crate) body: Option<Bytes>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

impl Outgoing {
    pub(crate) fn get(endpoint: &'static str) -> Self {
        Outgoing {
            method: Method::GET,
            endpoint,
            query: None,
            body: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn post(endpoint: &'static str, body: Bytes) -> Self {
        Outgoing {
            method: Method::POST,
            body: Some(body),
            ..Outgoing::get(endpoint)
        }
    }

    pub(crate) fn query(mut self, query: String) -> Self {
        self.query = Some(query);
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: WorkerClient,
    /// `Bearer <secret>` for a worker that requires it, sent on every request.
    authorization: Option<HeaderValue>,
}

/// hyper-util's pooled client, over the worker's kind of socket.
#[derive(Debug, Clone)]
enum WorkerClient {
    Tcp {
        client: Client<HttpConnector, Full<Bytes>>,
        authority: String,
    },
    Unix(Client<UnixConnector, Full<Bytes>>),
    /// A worker elsewhere: the connector pins both certificates.
    Tls {
        client: Client<PinnedConnector, Full<Bytes>>,
        authority: String,
    },
}

impl Transport {
    pub(crate) fn new(endpoint: &Endpoint, authorization: Option<HeaderValue>) -> Self {
        let builder = Client::builder(TokioExecutor::new());
        let client = match endpoint {
            Endpoint::Tcp { port } => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.enforce_http(true);
                WorkerClient::Tcp {
                    client: builder.build(connector),
                    authority: format!("127.0.0.1:{port}"),
                }
            }
            Endpoint::Unix { path } => WorkerClient::Unix(builder.build(UnixConnector {
                path: Arc::from(path.as_path()),
            })),
            Endpoint::Tls { host, port } => {
                // Never reached: a TLS endpoint is made only with its connector.
                tracing::error!("a TLS endpoint {host}:{port} without its connector");
                let mut connector = HttpConnector::new();
                connector.enforce_http(true);
                WorkerClient::Tcp {
                    client: builder.build(connector),
                    authority: String::from("0.0.0.0:0"),
                }
            }
        };
        Transport {
            client,
            authorization,
        }
    }

    /// To a worker elsewhere through `connector` (which pins its certificate and
    /// presents the host's).
    pub(crate) fn tls(
        connector: PinnedConnector,
        endpoint: &Endpoint,
        authorization: Option<HeaderValue>,
    ) -> Self {
        let authority = match endpoint {
            Endpoint::Tls { host, port } => format!("{host}:{port}"),
            other => other.to_string(),
        };
        Transport {
            client: WorkerClient::Tls {
                client: connector.client(),
                authority,
            },
            authorization,
        }
    }

    pub(crate) async fn send(&self, outgoing: Outgoing) -> Result<Response<Incoming>, String> {
        let Outgoing {
            method,
            endpoint: path,
            query,
            body,
            headers,
        } = outgoing;
        // Over a Unix socket the authority only fills the Host header.
        let authority = match &self.client {
            WorkerClient::Tcp { authority, .. } | WorkerClient::Tls { authority, .. } => {
                authority.as_str()
            }
            WorkerClient::Unix(_) => "localhost",
        };
        let uri: Uri = match query {
            Some(query) => format!("http://{authority}{path}?{query}"),
            None => format!("http://{authority}{path}"),
        }
        .parse()
        .map_err(|err| format!("bad URI: {err}"))?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(authorization) = &self.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        for (name, value) in headers {
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
        match &self.client {
            WorkerClient::Tcp { client, .. } => client.request(request).await,
            WorkerClient::Unix(client) => client.request(request).await,
            WorkerClient::Tls { client, .. } => client.request(request).await,
        }
        .map_err(|err| ErrorChain(&err).to_string())
    }
}

/// Connects to the worker's Unix socket, whatever the URI says.
#[derive(Debug, Clone)]
struct UnixConnector {
    path: Arc<Path>,
}

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&*path).await?;
            wire::widen_send_buffer(stream.as_fd());
            Ok(TokioIo::new(stream))
        })
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
