//! Message types and constants of the worker protocol (see the design's
//! `wire-protocol.md`); shared by the worker that serves it and the proxy that speaks it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ConfigMap;

pub const PATH_HEALTH: &str = "/health";
pub const PATH_STATS: &str = "/stats";
pub const PATH_INITIALIZE: &str = "/initialize";
pub const PATH_CONFIG_SCHEMA: &str = "/config_schema";
pub const PATH_CONFIG: &str = "/config";
pub const PATH_EXECUTE: &str = "/execute";
pub const PATH_EXECUTE_STREAM: &str = "/execute_stream";
pub const PATH_CLEANUP: &str = "/cleanup";
/// `POST`: ask calls in flight to stop (0.0.21 on).
pub const PATH_CANCEL: &str = "/cancel";
/// `GET`: how far calls have got (0.0.21 on).
pub const PATH_PROGRESS: &str = "/progress";
/// `POST`, remote workers only (`--listen`): renews the worker's lease (any request
/// does; this one does nothing else). Answer: [`crate::remote::LeaseResponse`].
pub const PATH_LEASE: &str = "/lease";

/// Extension: the id a host gives one call (`/execute`, `/execute_stream`), so that
/// it can ask for that call's progress and cancel that call alone. Ids are the
/// host's choice; a call sent without one gets one from the worker.
pub const CALL_ID_HEADER: &str = "x-cjm-call-id";

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_NDJSON: &str = "application/x-ndjson";

/// Extension: the host hands a native worker its already-bound listening socket as
/// this file descriptor number, named in this environment variable: a Unix-domain
/// socket in a folder only the user may enter, or a loopback TCP socket. No one else
/// can take its address between choosing it and the worker listening, and the host may
/// connect before the worker is up (the kernel queues the connection).
pub const LISTEN_FD_ENV: &str = "CJM_LISTEN_FD";

/// Extension: a native worker started by our host gets a fresh secret (64 hex digits)
/// in this environment variable and answers only requests carrying
/// `Authorization: Bearer <secret>` ([`AUTHORIZATION_SCHEME`]). A worker started
/// without it (by hand, or by the original's host) serves without this check.
pub const WORKER_TOKEN_ENV: &str = "CJM_WORKER_TOKEN";

/// Extension: a remote worker (`--listen`) accepts only the TLS client certificate
/// whose SHA-256 fingerprint (hex) is in this environment variable; see
/// [`crate::remote`]. Not a secret, but kept off the command line so that there is
/// one way to give it.
pub const CLIENT_CERT_SHA256_ENV: &str = "CJM_CLIENT_CERT_SHA256";

/// The scheme of the `Authorization` header that carries the worker's secret.
pub const AUTHORIZATION_SCHEME: &str = "Bearer";

/// Extension: on `POST /initialize`, the host names the schema it has already checked
/// the configuration against (its fingerprint, `cjm_validation::schema_fingerprint`).
/// A worker whose own config schema has that fingerprint, and that has checked the
/// request's [`WORKER_TOKEN_ENV`] secret, does not check the configuration a second
/// time: it was validated once, where it entered the system. Any other request is
/// checked by the worker itself.
pub const CONFIG_CHECKED_HEADER: &str = "x-cjm-config-checked";

/// Send buffer asked for on each end of a Unix-socket connection (the kernel caps it
/// at `net.core.wmem_max`). A Unix stream's data in flight is bounded by the sender's
/// buffer alone: with the default (~200 KiB) a 10 MiB body crosses in fifty
/// hand-overs between the two processes, with 4 MiB in three (10 MiB each way: ~2.9 ms
/// -> ~1.8 ms on the benchmark machine).
pub const UNIX_SEND_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Ask for [`UNIX_SEND_BUFFER_BYTES`] of send buffer on a connected Unix socket. A
/// refusal only costs speed, so it is not an error.
pub fn widen_send_buffer(socket: std::os::fd::BorrowedFd<'_>) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(socket, UNIX_SEND_BUFFER_BYTES);
}

/// Extension: the largest request body a native worker accepts, in bytes (bigger
/// ones get 413). Set it in a manifest's `env_vars` to change it for one plugin.
pub const MAX_BODY_ENV: &str = "CJM_MAX_BODY_BYTES";

/// Body of `POST /execute` and `POST /execute_stream`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub kwargs: ConfigMap,
}

/// Answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub pid: u32,
    pub name: String,
    pub version: String,
}

/// Answer of `GET /stats`: the worker and all its descendants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    pub pid: u32,
    pub cpu_percent: f64,
    pub memory_rss_mb: f64,
    /// Fields a peer adds beyond the base protocol, kept as they came.
    #[serde(flatten)]
    pub extra: ConfigMap,
}

/// `{"status": ..}` answers of `/initialize` (`"ok"`) and `/cleanup` (`"cleaned"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub status: String,
}

/// Error body: FastAPI's `detail`, our `kind`, and the original's typed error
/// (`_job_error`, 0.0.21 on). The original's 0.0.46 worker sends only `_job_error`
/// with a 500, and only `detail` with a 409; ours sends all three.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, in words.
    #[serde(default)]
    pub detail: String,
    /// Our class of the error ([`ErrorKind::as_str`](crate::ErrorKind::as_str)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The original's typed error.
    #[serde(
        rename = "_job_error",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub job_error: Option<JobError>,
}

/// The original's typed error (its `JobError` dataclass, as the worker sends it in
/// an error body and as the last line of a failed stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// `user_input`, `transient`, `resource` or `fatal`.
    pub category: String,
    /// What went wrong, in words.
    #[serde(default)]
    pub message: String,
    /// Whether trying again may help.
    #[serde(default)]
    pub retriable: bool,
    /// The exception as the plugin raised it (`PluginCancelledError(..)` marks a
    /// cancelled call in a stream).
    #[serde(default)]
    pub original_exc_repr: String,
    /// A hint of how long to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<f64>,
    /// The inputs that were wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_invalid: Option<Vec<String>>,
    /// The plugin that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    /// Everything else the peer sent (the original's `traceback`, `occurred_at`,
    /// `resource_shortfall`, ..), kept as it came.
    #[serde(flatten)]
    pub extra: ConfigMap,
}

impl JobError {
    /// The typed error of `err`, raised by plugin `plugin`.
    pub fn from_plugin_error(err: &crate::PluginError, plugin: &str) -> Self {
        JobError {
            category: err.category().as_str().to_owned(),
            message: err.message().to_owned(),
            retriable: err.retriable(),
            original_exc_repr: match err.kind() {
                crate::ErrorKind::Cancelled => format!("PluginCancelledError({plugin:?})"),
                kind => format!("PluginError({}: {:?})", kind.as_str(), err.message()),
            },
            retry_after_seconds: err.retry_after_seconds(),
            fields_invalid: (!err.fields_invalid().is_empty())
                .then(|| err.fields_invalid().to_vec()),
            plugin_name: Some(plugin.to_owned()),
            extra: ConfigMap::new(),
        }
    }

    /// The category, when it is one the original defines.
    pub fn category(&self) -> Option<crate::ErrorCategory> {
        crate::ErrorCategory::from_name(&self.category)
    }

    /// Whether it reports a cancelled call rather than a failure.
    pub fn is_cancellation(&self) -> bool {
        self.original_exc_repr.starts_with("PluginCancelledError")
    }
}

/// The final line of a stream that failed after it started: the original 0.0.20's
/// `{"error": ..}` and 0.0.46's `{"_job_error": ..}` in one object, so that hosts of
/// either version recognise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamError {
    /// What went wrong, in words (0.0.20's key).
    pub error: String,
    /// The typed error (0.0.46's key).
    #[serde(
        rename = "_job_error",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub job_error: Option<JobError>,
}

impl StreamError {
    /// Recognise the error line among a stream's chunks: an object with a
    /// `_job_error` (0.0.21 on), or one whose only key is `error`, holding a string
    /// (0.0.20). Plugin chunks never carry `_job_error`.
    pub fn from_chunk(chunk: &Value) -> Option<StreamError> {
        let Value::Object(map) = chunk else {
            return None;
        };
        if let Some(job_error) = map.get("_job_error") {
            let job_error: Option<JobError> = serde_json::from_value(job_error.clone()).ok();
            let error = map
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| job_error.as_ref().map(|error| error.message.clone()))
                .unwrap_or_else(|| String::from("the stream failed"));
            return Some(StreamError { error, job_error });
        }
        match map.get("error") {
            Some(Value::String(error)) if map.len() == 1 => Some(StreamError {
                error: error.clone(),
                job_error: None,
            }),
            _ => None,
        }
    }
}

/// Body of `POST /cancel`: the call to stop; none stops every call in flight (the
/// original's behaviour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The id the call was sent with ([`CALL_ID_HEADER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// Answer of `POST /cancel`: `status` is `cancelled`, `not_supported` or `error`
/// (with `detail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// `cancelled`, `not_supported` or `error`.
    pub status: String,
    /// Why, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Answer of `GET /progress`: the original's `progress` and `message`, and (ours)
/// which call, the report's number and whether the call has ended.
///
/// Ours takes `?call=ID` (that call; else the one that reported last), `after=SEQ`
/// and `wait_ms=MS`: the answer waits up to `wait_ms` for a report numbered above
/// `SEQ`, so a host sees each report the moment it is made without polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressResponse {
    /// 0.0 to 1.0; negative: cannot tell.
    pub progress: f64,
    /// What the call is doing.
    #[serde(default)]
    pub message: String,
    /// The call reported on (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Reports so far (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The call has ended (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<bool>,
}
