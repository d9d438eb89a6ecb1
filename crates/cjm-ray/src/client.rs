//! The HTTP client of Ray's Jobs API.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::remote::{Handshake, HandshakeError};
use cjm_interface::{body, ErrorChain};
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::connect::{
    client_config, is_loopback_host, ConnectError, DashboardConnector, DashboardTrust, TrustError,
};
use crate::job::{JobDetails, JobStatus, JobSubmission};
use crate::package::Package;
use crate::resources::{self, NodeResources};

/// How long one request to Ray may take unless [`RayClient::request_timeout`] says
/// otherwise. A package upload of a large binary is one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest answer read from Ray (a job's whole log is one answer).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The most of a job's log read while waiting for its worker's handshake, which a
/// worker prints first thing. Ray's REST API sends a job's whole log at each asking,
/// so this bounds what crosses the network at each poll; a worker that prints more
/// before its handshake is not taken for one of ours.
const MAX_LOG_BEFORE_HANDSHAKE: usize = 1024 * 1024;

/// How often a job is looked at while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Ray's REST API has no offset into a job's log: each look at it downloads all of it.
/// A log this long is looked at every `POLL_INTERVAL`; a longer one proportionally
/// less often, up to `MAX_LOG_POLL_INTERVAL`, so that a chatty worker costs at most
/// this much a look-interval of the network.
const LOG_BYTES_PER_POLL: usize = 64 * 1024;
const MAX_LOG_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often [`RayClient::stop_until_gone`] asks again while the job stays as it was.
const STOP_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// A client of one Ray cluster's Jobs API (its dashboard's address): `https://`
/// trusting a CA file or a pinned certificate, or plain `http://` to loopback (or
/// elsewhere only when the operator said so; see [`RayClientBuilder::insecure_http`]).
#[derive(Clone)]
pub struct RayClient {
    address: String,
    authorization: Option<HeaderValue>,
    client: Client<DashboardConnector, Full<Bytes>>,
    timeout: Duration,
    trust: Option<DashboardTrust>,
}

// By hand, so that the token never reaches a log.
impl std::fmt::Debug for RayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayClient")
            .field("address", &self.address)
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .field("trust", &self.trust)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Makes a [`RayClient`]: [`RayClient::builder`], the settings, then
/// [`build`](Self::build), which checks them all before anything is sent.
#[derive(Clone)]
pub struct RayClientBuilder {
    address: String,
    token: Option<String>,
    /// The variable named for the token, when it is not set.
    token_env_unset: Option<String>,
    trust: Option<DashboardTrust>,
    insecure_http: bool,
    timeout: Duration,
}

// By hand, so that the token never reaches a log.
impl std::fmt::Debug for RayClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayClientBuilder")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("trust", &self.trust)
            .field("insecure_http", &self.insecure_http)
            .field("timeout", &self.timeout)
            .finish()
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
    /// Plain `http://` to a dashboard that is not on this machine's loopback, without
    /// the operator's explicit consent.
    #[error(
        "refusing plain http:// to the Ray dashboard at {address}: off loopback (127.0.0.0/8, \
         ::1, localhost) anyone on the path could read the token and the uploaded binary, and \
         answer with a worker fingerprint of their own to receive every call. Use https:// \
         with a CA file or the dashboard's pinned certificate, or accept exactly that risk \
         with insecure_http"
    )]
    PlainHttpRefused {
        /// The address as given.
        address: String,
    },
    /// An `https://` address, and nothing to trust its certificate by.
    #[error(
        "the Ray dashboard at {address} is https://, but nothing says which certificate to \
         trust: give a CA file or the SHA-256 of its certificate"
    )]
    NoTrust {
        /// The address as given.
        address: String,
    },
    /// A CA file or pinned certificate for a plain `http://` address, where it would
    /// protect nothing.
    #[error(
        "the Ray dashboard at {address} is plain http://, yet {trust} was given to trust \
         it by: use https://"
    )]
    TrustWithoutTls {
        /// The address as given.
        address: String,
        /// What was given.
        trust: DashboardTrust,
    },
    /// The dashboard's TLS could not be set up.
    #[error("cannot set up TLS for the Ray dashboard at {address}")]
    Trust {
        /// The address as given.
        address: String,
        /// Why.
        #[source]
        source: TrustError,
    },
    /// The dashboard's certificate is not the one trusted: nothing was sent to it.
    #[error(
        "the Ray dashboard at {address} is not trusted for {what}: {reason} (nothing was sent \
         to it; trusted: {trust})"
    )]
    Untrusted {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// What was wrong with its certificate.
        reason: String,
        /// What it was to be trusted by.
        trust: DashboardTrust,
    },
    /// An answer over the size this client reads for it.
    #[error("Ray at {address} answered {what} with over {limit} bytes")]
    TooLarge {
        /// The cluster.
        address: String,
        /// What was asked.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// The job's worker printed more than any worker prints before its handshake.
    #[error("Ray job {id} printed over {limit} bytes without a worker handshake")]
    NoHandshakeInOutput {
        /// The submission id.
        id: String,
        /// How much was read.
        limit: usize,
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

impl RayClientBuilder {
    /// Send `token` (Ray's `RAY_AUTH_MODE=token`) as `Authorization: Bearer`.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self.token_env_unset = None;
        self
    }

    /// Send the token held by the environment variable `token_env` (which must then be
    /// set): the token itself never appears in configuration.
    pub fn token_env(mut self, token_env: &str) -> Self {
        match std::env::var(token_env) {
            Ok(token) => self.token(&token),
            Err(_) => {
                self.token = None;
                self.token_env_unset = Some(token_env.to_owned());
                self
            }
        }
    }

    /// How to trust an `https://` dashboard's certificate (required for one; refused
    /// for `http://`, where it would protect nothing).
    pub fn trust(mut self, trust: DashboardTrust) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Accept plain `http://` to a dashboard off loopback. Whoever is on the path then
    /// reads the token and the uploaded binary, and can answer with a worker address
    /// and fingerprint of their own, receiving every call and configuration: only for
    /// a network where that cannot happen.
    pub fn insecure_http(mut self, insecure: bool) -> Self {
        self.insecure_http = insecure;
        self
    }

    /// Give up on any one request after `timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client; every check is made here, before any connection.
    pub fn build(self) -> Result<RayClient, RayError> {
        let address = self.address;
        let bad = |reason| RayError::BadAddress {
            address: address.clone(),
            reason,
        };
        let trimmed = address.trim().trim_end_matches('/');
        let uri: hyper::Uri = trimmed
            .parse()
            .map_err(|_| bad("it is not a URL (https://host:port)"))?;
        let Some(host) = uri.host() else {
            return Err(bad("it names no host"));
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("it must not have a path"));
        }
        let connector = match (uri.scheme_str(), self.trust.clone()) {
            (Some("https"), Some(trust)) => {
                DashboardConnector::tls(client_config(&trust).map_err(|source| {
                    RayError::Trust {
                        address: trimmed.to_owned(),
                        source,
                    }
                })?)
            }
            (Some("https"), None) => {
                return Err(RayError::NoTrust {
                    address: trimmed.to_owned(),
                })
            }
            (Some("http"), Some(trust)) => {
                return Err(RayError::TrustWithoutTls {
                    address: trimmed.to_owned(),
                    trust,
                })
            }
            (Some("http"), None) => {
                let loopback = is_loopback_host(host);
                if !loopback && !self.insecure_http {
                    return Err(RayError::PlainHttpRefused {
                        address: trimmed.to_owned(),
                    });
                }
                if !loopback {
                    tracing::warn!(
                        "Ray dashboard {trimmed}: plain http:// off loopback, as insecure_http \
                         allows: anyone on the path can read the token and replace the worker"
                    );
                }
                DashboardConnector::plain(!self.insecure_http)
            }
            _ => return Err(bad("only https:// and http:// are supported")),
        };
        if let Some(token_env) = self.token_env_unset {
            return Err(RayError::NoToken { token_env });
        }
        let authorization = match self.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| RayError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(RayClient {
            address: trimmed.to_owned(),
            authorization,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: self.timeout,
            trust: self.trust,
        })
    }
}

impl RayClient {
    /// A client of the Ray dashboard at `address`, set up with the builder's settings.
    pub fn builder(address: &str) -> RayClientBuilder {
        RayClientBuilder {
            address: address.to_owned(),
            token: None,
            token_env_unset: None,
            trust: None,
            insecure_http: false,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// A client of the plain `http://` dashboard at `address` on this machine's
    /// loopback, sending `token` (Ray's `RAY_AUTH_MODE=token`) as `Authorization:
    /// Bearer` if given. Anything else goes through [`RayClient::builder`].
    pub fn new(address: &str, token: Option<&str>) -> Result<Self, RayError> {
        let builder = RayClient::builder(address);
        match token {
            Some(token) => builder.token(token),
            None => builder,
        }
        .build()
    }

    /// As [`RayClient::new`], with the token read from the environment variable
    /// `token_env` when one is named (the variable must then be set).
    pub fn with_token_env(address: &str, token_env: Option<&str>) -> Result<Self, RayError> {
        let builder = RayClient::builder(address);
        match token_env {
            Some(name) => builder.token_env(name),
            None => builder,
        }
        .build()
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
    ///
    /// Ray's REST API answers a job's logs whole, with no offset to start from, so
    /// each look reads the log so far: only while the job runs and has not printed its
    /// handshake (which a worker prints first), and never more than
    /// [`MAX_LOG_BEFORE_HANDSHAKE`] bytes. Only the lines not seen before are parsed.
    pub async fn wait_for_handshake(&self, id: &str, limit: Duration) -> Result<Placed, RayError> {
        let started = Instant::now();
        let mut scanned = 0usize;
        let mut pause = POLL_INTERVAL;
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
                let logs = self.logs_before_handshake(id).await?;
                // A log that shrank was started again (Ray restarted its driver).
                if logs.len() < scanned {
                    scanned = 0;
                }
                let (found, complete) = scan_new_lines(&logs, scanned);
                scanned = complete;
                pause = log_poll_interval(logs.len());
                if let Some(found) = found {
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
            tokio::time::sleep(pause).await;
        }
    }

    /// The log of job `id`, bounded as a worker's output before its handshake is.
    async fn logs_before_handshake(&self, id: &str) -> Result<String, RayError> {
        let what = format!("the logs of job {id}");
        // The JSON around the log, and its escapes, take room of their own.
        let limit = MAX_LOG_BEFORE_HANDSHAKE * 2 + 1024;
        let body = match self
            .call_limited(
                Method::GET,
                &format!("/api/jobs/{}/logs", segment(id)),
                None,
                &what,
                limit,
            )
            .await
        {
            Err(RayError::TooLarge { .. }) => {
                return Err(RayError::NoHandshakeInOutput {
                    id: id.to_owned(),
                    limit: MAX_LOG_BEFORE_HANDSHAKE,
                })
            }
            other => other?,
        };
        let answer: LogsAnswer = self.parse(&body, &what)?;
        if answer.logs.len() > MAX_LOG_BEFORE_HANDSHAKE {
            return Err(RayError::NoHandshakeInOutput {
                id: id.to_owned(),
                limit: MAX_LOG_BEFORE_HANDSHAKE,
            });
        }
        Ok(answer.logs)
    }

    /// What Ray knows of its nodes' resources: each live node's address, labels, and
    /// what it has and has free (`GET /api/v0/nodes` and `GET /api/cluster_status`,
    /// see the module `resources`). `None` when the cluster's status holds no usage by
    /// node, so that Ray cannot say what is free.
    pub async fn cluster_resources(&self) -> Result<Option<Vec<NodeResources>>, RayError> {
        let what = "its nodes' resources";
        let (nodes, status) = tokio::join!(
            self.call(
                Method::GET,
                "/api/v0/nodes?detail=1&limit=10000",
                None,
                what
            ),
            self.call(Method::GET, "/api/cluster_status", None, what),
        );
        resources::join(&nodes?, &status?).map_err(|reason| RayError::Unexpected {
            address: self.address.clone(),
            what: what.to_owned(),
            reason,
        })
    }

    /// Send one request; the body of a 2xx answer, or the error its status means.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        what: &str,
    ) -> Result<Bytes, RayError> {
        self.call_limited(method, path, body, what, MAX_ANSWER_BYTES)
            .await
    }

    /// [`call`](Self::call), reading at most `limit` bytes of the answer.
    async fn call_limited(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        what: &str,
        limit: usize,
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
                .map_err(|err| self.not_sent(&err, what))?;
            let status = response.status();
            let body = body::read_to_bytes(response.into_body(), limit)
                .await
                .map_err(|err| match err {
                    body::BodyError::TooLarge { limit } => RayError::TooLarge {
                        address: self.address.clone(),
                        what: what.to_owned(),
                        limit,
                    },
                    other => unreachable(other.to_string()),
                })?;
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

    /// A request that got no answer: refused for the dashboard's certificate (then
    /// nothing was sent), or not reached.
    fn not_sent(&self, err: &hyper_util::client::legacy::Error, what: &str) -> RayError {
        let untrusted =
            std::iter::successors(std::error::Error::source(err), |cause| cause.source()).find_map(
                |cause| match cause.downcast_ref::<ConnectError>() {
                    Some(ConnectError::Untrusted { reason }) => Some(reason),
                    _ => None,
                },
            );
        if let (Some(reason), Some(trust)) = (untrusted, &self.trust) {
            return RayError::Untrusted {
                address: self.address.clone(),
                what: what.to_owned(),
                reason: reason.clone(),
                trust: trust.clone(),
            };
        }
        RayError::Unreachable {
            address: self.address.clone(),
            what: what.to_owned(),
            reason: ErrorChain(err).to_string(),
        }
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

/// How long to wait before looking again at a job log of `len` bytes.
fn log_poll_interval(len: usize) -> Duration {
    let polls = u32::try_from(len / LOG_BYTES_PER_POLL)
        .unwrap_or(u32::MAX)
        .max(1);
    POLL_INTERVAL
        .saturating_mul(polls)
        .min(MAX_LOG_POLL_INTERVAL)
}

/// Look for a handshake in the complete lines of `logs` from byte `from` on (a line
/// boundary); the handshake if one is there, and where the unparsed rest begins (the
/// start of a line still being written).
fn scan_new_lines(logs: &str, from: usize) -> (Option<Result<Handshake, HandshakeError>>, usize) {
    let Some(new) = logs.get(from..) else {
        return (None, 0);
    };
    let complete = new.rfind('\n').map_or(0, |end| end + 1);
    let found = Handshake::find_in(&new[..complete]);
    (found, from + complete)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_job_log_is_looked_at_less_often() {
        assert_eq!(log_poll_interval(0), POLL_INTERVAL);
        assert_eq!(log_poll_interval(LOG_BYTES_PER_POLL - 1), POLL_INTERVAL);
        assert_eq!(log_poll_interval(3 * LOG_BYTES_PER_POLL), POLL_INTERVAL * 3);
        assert_eq!(log_poll_interval(usize::MAX), MAX_LOG_POLL_INTERVAL);
        // At most LOG_BYTES_PER_POLL per POLL_INTERVAL up to the longest pause.
        let len = 8 * LOG_BYTES_PER_POLL;
        let rate = len as f64 / log_poll_interval(len).as_secs_f64();
        assert!(rate <= LOG_BYTES_PER_POLL as f64 / POLL_INTERVAL.as_secs_f64() + 1.0);
    }

    #[test]
    fn addresses_must_be_urls_without_a_path() {
        assert!(RayClient::new("http://127.0.0.1:8265/", None).is_ok());
        for (address, reason) in [
            ("127.0.0.1:8265", "only https:// and http:// are supported"),
            (
                "ftp://127.0.0.1:8265",
                "only https:// and http:// are supported",
            ),
            ("http://127.0.0.1:8265/api", "it must not have a path"),
            ("http:// bad", "it is not a URL (https://host:port)"),
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
    fn plain_http_is_for_loopback_unless_insecure_is_said() {
        for address in [
            "http://127.0.0.1:8265",
            "http://127.0.0.2:8265",
            "http://localhost:8265",
            "http://[::1]:8265",
        ] {
            RayClient::new(address, Some("t")).unwrap();
        }
        for address in [
            "http://192.0.2.1:8265",
            "http://ray-head:8265",
            "http://[2001:db8::1]:8265",
        ] {
            let err = RayClient::new(address, Some("t")).unwrap_err();
            assert!(matches!(err, RayError::PlainHttpRefused { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(address), "{text}");
            assert!(text.contains("insecure_http"), "{text}");
            // Said in so many words, it is accepted (and nothing is sent here).
            RayClient::builder(address)
                .token("t")
                .insecure_http(true)
                .build()
                .unwrap();
        }
    }

    #[test]
    fn https_needs_something_to_trust_and_http_takes_none() {
        let err = RayClient::new("https://ray-head:8265", None).unwrap_err();
        assert!(matches!(err, RayError::NoTrust { .. }), "{err:?}");
        let pin = DashboardTrust::Pinned(cjm_tls::certificate_fingerprint(b"dashboard"));
        RayClient::builder("https://ray-head:8265")
            .trust(pin.clone())
            .build()
            .unwrap();
        let err = RayClient::builder("http://127.0.0.1:8265")
            .trust(pin)
            .build()
            .unwrap_err();
        assert!(matches!(err, RayError::TrustWithoutTls { .. }), "{err:?}");
        let missing = std::path::PathBuf::from("/nonexistent/ca.pem");
        let err = RayClient::builder("https://ray-head:8265")
            .trust(DashboardTrust::CaFile(missing))
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot set up TLS for the Ray dashboard at https://ray-head:8265"
        );
        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = RayClient::builder("https://ray-head:8265")
            .trust(DashboardTrust::CaFile(empty.path().to_owned()))
            .build()
            .unwrap_err();
        let RayError::Trust { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            source
                .to_string()
                .contains("holds no usable CA certificate"),
            "{source}"
        );
    }

    #[test]
    fn only_new_complete_lines_are_scanned_for_the_handshake() {
        let line = Handshake::new(4100, cjm_tls::certificate_fingerprint(b"w"), 9).to_line();
        let first = "Running entrypoint for job j\npartial";
        let (found, from) = scan_new_lines(first, 0);
        assert!(found.is_none());
        assert_eq!(from, "Running entrypoint for job j\n".len());
        // The partial line completes with the handshake after it.
        let second = format!("{first} line\n{line}\nafter");
        let (found, next) = scan_new_lines(&second, from);
        assert_eq!(found.unwrap().unwrap().port, 4100);
        assert_eq!(&second[next..], "after");
        // Lines already scanned are not scanned again.
        let (found, _) = scan_new_lines(&second, next);
        assert!(found.is_none());
        assert!(scan_new_lines("short", 99).0.is_none());
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
