//! A client of a daemon on its Unix socket: HTTP/1.1 over hyper's client connection,
//! one connection per request (a local socket costs next to nothing to open, and a
//! request never waits behind another's long poll or event stream).
//!
//! `cjm-ctl` goes through it when a daemon serves its home; errors keep the API's
//! JSON error (`{error, category, detail}`), so that the caller exits as an
//! in-process host would for the same failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cjm_manager::ErrorCategory;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::json_lines::JsonLines;
use crate::sse::EventStream;

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers on the socket (no daemon, or a dead one's file).
    #[error("cannot connect to the daemon at {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke, or the answer was not HTTP.
    #[error("{method} {path}: the daemon's answer could not be read")]
    Http {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The daemon did not answer within the time given.
    #[error("{method} {path}: no answer from the daemon within {:.1} s", limit.as_secs_f64())]
    Timeout {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// The limit.
        limit: Duration,
    },
    /// The daemon refused or failed the request: its JSON error.
    #[error("{detail}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The API's short name of the error (`unknown_plugin`, ...).
        error: String,
        /// Its category, as the jobs use them; `None` when the daemon named none.
        category: Option<ErrorCategory>,
        /// What was wrong, in the daemon's words.
        detail: String,
    },
    /// The answer was not the JSON expected.
    #[error("{method} {path}: the daemon's answer is not JSON: {detail}")]
    Decode {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

impl ClientError {
    /// The error's category, for an exit status: the daemon's for a refusal, a
    /// transient one for a connection that broke.
    pub fn category(&self) -> Option<ErrorCategory> {
        match self {
            ClientError::Api { category, .. } => *category,
            ClientError::Connect { .. } | ClientError::Http { .. } => {
                Some(ErrorCategory::Transient)
            }
            ClientError::Timeout { .. } => Some(ErrorCategory::Transient),
            ClientError::Decode { .. } => None,
        }
    }

    /// The API's short error name, for a refusal.
    pub fn api_error(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A daemon reached through its Unix socket.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    /// A client of the daemon listening on `socket`; nothing is connected yet.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        DaemonClient {
            socket: socket.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /api/health` within `limit`: whether a daemon answers and serves (a
    /// stopping one answers 503, and takes no new work).
    pub async fn health(&self, limit: Duration) -> Result<Value, ClientError> {
        let path = "/api/health";
        match tokio::time::timeout(limit, self.get(path)).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Timeout {
                method: Method::GET,
                path: path.to_owned(),
                limit,
            }),
        }
    }

    /// `GET path`, its JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with `body` (none: an empty body), its JSON answer.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.call(Method::POST, path, body).await
    }

    /// A request whose answer is JSON; a status other than 2xx is the API's error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let response = self.send(method.clone(), path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?
            .to_bytes();
        let value: Result<Value, _> = serde_json::from_slice(&bytes);
        if !status.is_success() {
            return Err(api_error(status, value.ok(), &bytes));
        }
        value.map_err(|err| ClientError::Decode {
            method,
            path: path.to_owned(),
            detail: err.to_string(),
        })
    }

    /// `POST path` with `body`, its answer read as JSON lines as they come; a status
    /// other than 2xx is the API's error.
    pub async fn post_lines(&self, path: &str, body: &Value) -> Result<JsonLines, ClientError> {
        let response = self.send(Method::POST, path, Some(body)).await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(JsonLines::new(response.into_body()))
    }

    /// `GET path` as Server-Sent Events.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, "daemon")
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = self
            .exchange(Method::GET, path, request, Bytes::new())
            .await?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(EventStream::new(response.into_body()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, "daemon");
        let bytes = match body {
            Some(value) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        self.exchange(method, path, request, bytes).await
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let http = |source| ClientError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        // The connection's own task: it ends with the response's body (or when the
        // daemon closes it), so dropping the response leaves nothing behind.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("daemon connection ended: {err}");
            }
        });
        let request = request
            .body(Full::new(body))
            .map_err(|err| ClientError::Decode {
                method: method.clone(),
                path: path.to_owned(),
                detail: format!("the request could not be made: {err}"),
            })?;
        sender.send_request(request).await.map_err(http)
    }
}

/// A response of the daemon that is not 2xx, as its error (its JSON body read).
async fn refusal(response: hyper::Response<hyper::body::Incoming>) -> ClientError {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes).ok();
    api_error(status, value, &bytes)
}

fn api_error(status: StatusCode, value: Option<Value>, bytes: &[u8]) -> ClientError {
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ClientError::Api {
        status,
        error: field("error").unwrap_or_else(|| String::from("http_error")),
        category: field("category")
            .as_deref()
            .and_then(ErrorCategory::from_name),
        detail: field("detail").unwrap_or_else(|| {
            format!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(bytes).trim()
            )
        }),
    }
}
