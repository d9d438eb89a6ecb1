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

/// Error body, in FastAPI's shape, plus our optional `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The final line of a stream that failed after it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamError {
    pub error: String,
}

impl StreamError {
    /// Recognise the error line among a stream's chunks: an object whose only key is
    /// `error`, holding a string.
    pub fn from_chunk(chunk: &Value) -> Option<&str> {
        match chunk {
            Value::Object(map) if map.len() == 1 => map.get("error").and_then(Value::as_str),
            _ => None,
        }
    }
}
