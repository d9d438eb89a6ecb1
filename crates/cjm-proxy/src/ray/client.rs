//! The HTTP client of Ray's Jobs API.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::body;
use cjm_interface::remote::{Handshake, HandshakeError};
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::job::{JobDetails, JobStatus, JobSubmission};
use super::package::Package;

/// How long one request to Ray may take unless [`RayClient::request_timeout`] says
/// otherwise. A package upload of a large binary is one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read from Ray (a job's whole log is one answer).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How often a job is looked at while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often [`RayClient::stop_until_gone`] asks again while the job stays as it was.
const STOP_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// A client of one Ray cluster's Jobs API (its dashboard's HTTP address).
#[derive(Clone)]
pub struct RayClient {
    address: String,
    authorization: Option<HeaderValue>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

// By hand, so that the token never reaches a log.
impl std::fmt::Debug for RayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayClient")
            .field("address", &self.address)
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What went wrong talking to Ray. Each names the cluster's address and what was
/// asked of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RayError {
    /// Not an address this client can use.
    #[error("{address:?} is not a Ray dashboard address: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The variable that should hold the cluster's token is not set.
    #[error("{token_env} is not set (or not UTF-8): it must hold the Ray cluster's token")]
    NoToken {
        /// The variable's name.
        token_env: String,
    },
    /// The token cannot go into a header.
    #[error("the Ray token is not usable in an HTTP header")]
    BadToken,
    /// The request could not be sent or answered (connection refused, timeout).
    #[error("cannot reach Ray at {address} for {what}: {reason}")]
    Unreachable {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// Why, with its causes.
        reason: String,
    },
    /// 400: Ray found the request invalid.
    #[error("Ray at {address} refused {what} as invalid (400): {summary}")]
    BadRequest {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// The last line of Ray's answer (the exception, usually).
        summary: String,
        /// Ray's whole answer (often a Python traceback).
        body: String,
    },
    /// 401: the cluster wants a token and none was sent.
    #[error("Ray at {address} refused {what}: it needs a token and none was given (401)")]
    Unauthorized {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// Ray's answer.
        body: String,
    },
    /// 403: the token sent is not the cluster's.
    #[error("Ray at {address} refused {what}: the token is wrong (403)")]
    Forbidden {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// Ray's answer.
        body: String,
    },
    /// 404: no such job (or package).
    #[error("Ray at {address} has no such thing for {what} (404): {summary}")]
    NotFound {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// Ray's words.
        summary: String,
    },
    /// Any other failure status (500: Ray failed on its side).
    #[error("Ray at {address} failed on {what} ({status}): {summary}")]
    Server {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// The status.
        status: u16,
        /// The last line of Ray's answer.
        summary: String,
        /// Ray's whole answer.
        body: String,
    },
    /// A 200 whose body is not what the API documents.
    #[error("Ray at {address} answered {what} with an unexpected body: {reason}")]
    Unexpected {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// What did not parse.
        reason: String,
    },
    /// The job ended before its worker printed a handshake.
    #[error("Ray job {id} ended ({status}) before its worker printed a handshake: {message}")]
    EndedBeforeHandshake {
        /// The submission id.
        id: String,
        /// Its final state.
        status: JobStatus,
        /// Ray's message (a failed entrypoint's log tail among it).
        message: String,
    },
    /// No handshake in time.
    #[error("Ray job {id} printed no handshake within {waited:?} (it is {status})")]
    HandshakeTimeout {
        /// The submission id.
        id: String,
        /// How long was waited.
        waited: Duration,
        /// Its state when given up on.
        status: JobStatus,
    },
    /// The job's handshake line cannot be used.
    #[error("Ray job {id}'s handshake cannot be used")]
    Handshake {
        /// The submission id.
        id: String,
        /// What is wrong with it.
        #[source]
        source: HandshakeError,
    },
    /// Running, with a handshake, but Ray does not say on which node.
    #[error("Ray job {id} runs, but Ray names no node address for it")]
    NoNodeAddress {
        /// The submission id.
        id: String,
    },
    /// The job would not reach a terminal state.
    #[error("Ray job {id} is still {status} after {waited:?} of stopping it")]
    NotStopped {
        /// The submission id.
        id: String,
        /// Its state when given up on.
        status: JobStatus,
        /// How long it was stopped for.
        waited: Duration,
    },
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Submitted {
    /// The job's submission id.
    pub submission_id: String,
    /// Whether Ray had the job already (a retried submission).
    pub existed: bool,
}

/// A worker placed by Ray and ready: where to reach it and what to pin.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Placed {
    /// The worker's handshake (port and certificate fingerprint).
    pub handshake: Handshake,
    /// The address of the node it runs on.
    pub node_address: String,
    /// The job, as Ray saw it when the handshake was found.
    pub job: JobDetails,
}

#[derive(Deserialize)]
struct SubmitAnswer {
    submission_id: String,
}

#[derive(Deserialize)]
struct StopAnswer {
    stopped: bool,
}

#[derive(Deserialize)]
struct LogsAnswer {
    logs: String,
}

impl RayClient {
    /// A client of the Ray dashboard at `address` (`http://host:port`), sending
    /// `token` (Ray's `RAY_AUTH_MODE=token`) as `Authorization: Bearer` if given.
    pub fn new(address: &str, token: Option<&str>) -> Result<Self, RayError> {
        let bad = |reason| RayError::BadAddress {
            address: address.to_owned(),
            reason,
        };
        let trimmed = address.trim().trim_end_matches('/');
        let uri: hyper::Uri = trimmed
            .parse()
            .map_err(|_| bad("it is not a URL (http://host:port)"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        if uri.host().is_none() {
            return Err(bad("it names no host"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("it must not have a path"));
        }
        let authorization = match token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| RayError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(RayClient {
            address: trimmed.to_owned(),
            authorization,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// A client of the Ray dashboard at `address`, with the token read from the
    /// environment variable `token_env` when one is named (the variable must then be
    /// set). The token itself never appears in configuration.
    pub fn with_token_env(address: &str, token_env: Option<&str>) -> Result<Self, RayError> {
        let token = match token_env {
            Some(name) => Some(std::env::var(name).map_err(|_| RayError::NoToken {
                token_env: name.to_owned(),
            })?),
            None => None,
        };
        RayClient::new(address, token.as_deref())
    }

    /// Give up on any one request after `timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The dashboard address, as used.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `GET /api/version`: Ray's version; a check of the address and the token.
    pub async fn version(&self) -> Result<serde_json::Value, RayError> {
        let what = "its version";
        let body = self.call(Method::GET, "/api/version", None, what).await?;
        self.parse(&body, what)
    }

    /// Submit `job`. A job whose submission id Ray has already is not submitted
    /// again: it is looked up and returned with [`Submitted::existed`].
    pub async fn submit(&self, job: &JobSubmission) -> Result<Submitted, RayError> {
        let what = match job.id() {
            Some(id) => format!("submitting job {id}"),
            None => String::from("submitting a job"),
        };
        let body = serde_json::to_vec(job).map_err(|err| RayError::Unexpected {
            address: self.address.clone(),
            what: what.clone(),
            reason: err.to_string(),
        })?;
        match self
            .call(Method::POST, "/api/jobs/", Some(Bytes::from(body)), &what)
            .await
        {
            Ok(answer) => {
                let answer: SubmitAnswer = self.parse(&answer, &what)?;
                Ok(Submitted {
                    submission_id: answer.submission_id,
                    existed: false,
                })
            }
            Err(err) => match (job.id(), already_exists(&err)) {
                (Some(id), true) => {
                    let existing = self.job(id).await?;
                    tracing::info!(
                        "Ray job {id} exists already ({}); not submitted again",
                        existing.status
                    );
                    Ok(Submitted {
                        submission_id: id.to_owned(),
                        existed: true,
                    })
                }
                _ => Err(err),
            },
        }
    }

    /// `GET /api/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobDetails, RayError> {
        let what = format!("job {id}");
        let body = self
            .call(
                Method::GET,
                &format!("/api/jobs/{}", segment(id)),
                None,
                &what,
            )
            .await?;
        self.parse(&body, &what)
    }

    /// `GET /api/jobs/{id}/logs`: the job's whole output so far (stdout and stderr
    /// together); empty before it runs.
    pub async fn logs(&self, id: &str) -> Result<String, RayError> {
        let what = format!("the logs of job {id}");
        let body = self
            .call(
                Method::GET,
                &format!("/api/jobs/{}/logs", segment(id)),
                None,
                &what,
            )
            .await?;
        let answer: LogsAnswer = self.parse(&body, &what)?;
        Ok(answer.logs)
    }

    /// `POST /api/jobs/{id}/stop`: whether Ray passed the stop on (`false`: the job
    /// had ended). A `PENDING` job is not stopped by this alone: see
    /// [`RayClient::stop_until_gone`].
    pub async fn stop(&self, id: &str) -> Result<bool, RayError> {
        let what = format!("stopping job {id}");
        let body = self
            .call(
                Method::POST,
                &format!("/api/jobs/{}/stop", segment(id)),
                None,
                &what,
            )
            .await?;
        let answer: StopAnswer = self.parse(&body, &what)?;
        Ok(answer.stopped)
    }

    /// Stop job `id` and watch it until it is in a terminal state, stopping it again
    /// whenever its state changes (a `PENDING` job that starts later) or stays put
    /// for a while; give up after `limit`. The job as last seen.
    pub async fn stop_until_gone(&self, id: &str, limit: Duration) -> Result<JobDetails, RayError> {
        let started = Instant::now();
        let mut last_stop: Option<(Instant, JobStatus)> = None;
        loop {
            let job = self.job(id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            if started.elapsed() >= limit {
                return Err(RayError::NotStopped {
                    id: id.to_owned(),
                    status: job.status,
                    waited: limit,
                });
            }
            let stop_now = match last_stop {
                None => true,
                Some((at, status)) => status != job.status || at.elapsed() >= STOP_AGAIN_AFTER,
            };
            if stop_now {
                let passed_on = self.stop(id).await?;
                tracing::debug!(
                    "stop of Ray job {id} ({}) passed on: {passed_on}",
                    job.status
                );
                last_stop = Some((Instant::now(), job.status));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether Ray's package store has `package` (asking also keeps it from being
    /// collected for a while, until a job refers to it).
    pub async fn package_exists(&self, package: &Package) -> Result<bool, RayError> {
        let what = format!("package {}", package.uri());
        match self
            .call(
                Method::GET,
                &format!("/api/packages/gcs/{}", package.name()),
                None,
                &what,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(RayError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Upload `package` unless Ray has it already; whether it was uploaded.
    pub async fn upload(&self, package: &Package) -> Result<bool, RayError> {
        if self.package_exists(package).await? {
            return Ok(false);
        }
        let what = format!(
            "uploading package {} ({} bytes)",
            package.uri(),
            package.bytes().len()
        );
        self.call(
            Method::PUT,
            &format!("/api/packages/gcs/{}", package.name()),
            Some(package.bytes().clone()),
            &what,
        )
        .await?;
        Ok(true)
    }

    /// Wait until job `id` runs and its logs hold the worker's handshake; give up
    /// after `limit`, or at once when the job ends.
    pub async fn wait_for_handshake(&self, id: &str, limit: Duration) -> Result<Placed, RayError> {
        let started = Instant::now();
        loop {
            let job = self.job(id).await?;
            if job.status.is_terminal() {
                return Err(RayError::EndedBeforeHandshake {
                    id: id.to_owned(),
                    status: job.status,
                    message: job.message.unwrap_or_default(),
                });
            }
            if job.status == JobStatus::Running {
                let logs = self.logs(id).await?;
                if let Some(found) = Handshake::find_in(&logs) {
                    let handshake = found.map_err(|source| RayError::Handshake {
                        id: id.to_owned(),
                        source,
                    })?;
                    let node_address = job
                        .node_address()
                        .ok_or_else(|| RayError::NoNodeAddress { id: id.to_owned() })?;
                    return Ok(Placed {
                        handshake,
                        node_address,
                        job,
                    });
                }
            }
            if started.elapsed() >= limit {
                return Err(RayError::HandshakeTimeout {
                    id: id.to_owned(),
                    waited: limit,
                    status: job.status,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Send one request; the body of a 2xx answer, or the error its status means.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        what: &str,
    ) -> Result<Bytes, RayError> {
        let unreachable = |reason: String| RayError::Unreachable {
            address: self.address.clone(),
            what: what.to_owned(),
            reason,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.address));
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|err| unreachable(format!("cannot build the request: {err}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| unreachable(describe(&err)))?;
            let status = response.status();
            let body = body::read_to_bytes(response.into_body(), MAX_ANSWER_BYTES)
                .await
                .map_err(|err| unreachable(err.to_string()))?;
            Ok::<_, RayError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))??;
        if status.is_success() {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let address = self.address.clone();
        let what = what.to_owned();
        Err(match status {
            StatusCode::BAD_REQUEST => RayError::BadRequest {
                address,
                what,
                summary: summary(&text),
                body: text,
            },
            StatusCode::UNAUTHORIZED => RayError::Unauthorized {
                address,
                what,
                body: text,
            },
            StatusCode::FORBIDDEN => RayError::Forbidden {
                address,
                what,
                body: text,
            },
            StatusCode::NOT_FOUND => RayError::NotFound {
                address,
                what,
                summary: summary(&text),
            },
            other => RayError::Server {
                address,
                what,
                status: other.as_u16(),
                summary: summary(&text),
                body: text,
            },
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        body: &[u8],
        what: &str,
    ) -> Result<T, RayError> {
        serde_json::from_slice(body).map_err(|err| RayError::Unexpected {
            address: self.address.clone(),
            what: what.to_owned(),
            reason: err.to_string(),
        })
    }
}

/// Whether Ray refused a submission because its id exists. Ray 2.60 answers 500 (its
/// agent's 400 wrapped by the dashboard), older ones 400; both say "already exists".
fn already_exists(err: &RayError) -> bool {
    match err {
        RayError::BadRequest { body, .. } | RayError::Server { body, .. } => {
            body.contains("already exists")
        }
        _ => false,
    }
}

/// The line of a Ray error answer that says what happened: its last line of more than
/// punctuation (a Python traceback ends with the exception), cut to 300 characters.
fn summary(body: &str) -> String {
    let line = body
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.chars().any(char::is_alphanumeric))
        .unwrap_or("(no details)");
    let mut cut: String = line.chars().take(300).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

/// `id` as one path segment: anything beyond the characters ids are made of is
/// percent-encoded, so an id cannot reach another endpoint.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_plain_http_without_a_path() {
        assert!(RayClient::new("http://127.0.0.1:8265/", None).is_ok());
        for (address, reason) in [
            ("127.0.0.1:8265", "only http:// is supported"),
            ("https://ray:8265", "only http:// is supported"),
            ("http://ray:8265/api", "it must not have a path"),
            ("http:// bad", "it is not a URL (http://host:port)"),
        ] {
            match RayClient::new(address, None) {
                Err(RayError::BadAddress { reason: given, .. }) => {
                    assert_eq!(given, reason, "{address}")
                }
                other => panic!("{address}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_token_comes_from_the_named_variable_and_is_never_shown() {
        let missing =
            RayClient::with_token_env("http://127.0.0.1:1", Some("CJM_TEST_NO_SUCH_TOKEN_VAR"))
                .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "CJM_TEST_NO_SUCH_TOKEN_VAR is not set (or not UTF-8): it must hold the Ray cluster's token"
        );
        let client = RayClient::new("http://127.0.0.1:1", Some("s3cret")).unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn a_tracebacks_summary_is_its_exception() {
        let body = "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: Job with submission_id a already exists. Please use a different submission_id.\n.\n\n";
        assert_eq!(
            summary(body),
            "ValueError: Job with submission_id a already exists. Please use a different submission_id."
        );
        assert_eq!(summary(""), "(no details)");
        assert_eq!(segment("cjm-echo_1.2"), "cjm-echo_1.2");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}
