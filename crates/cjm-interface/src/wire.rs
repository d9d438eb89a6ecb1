//! Message types and constants of the worker protocol (see the design's
//! `wire-protocol.md`); shared by the worker that serves it and the proxy that speaks it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ConfigMap;

/// `GET`: whether the worker serves, and which plugin ([`HealthResponse`]).
pub const PATH_HEALTH: &str = "/health";
/// `GET`: the worker's CPU and memory use ([`StatsResponse`]).
pub const PATH_STATS: &str = "/stats";
/// `POST` a configuration (a JSON object): the plugin's `initialize`
/// ([`StatusResponse`] `ok`).
pub const PATH_INITIALIZE: &str = "/initialize";
/// `GET`: the plugin's configuration schema, JSON.
pub const PATH_CONFIG_SCHEMA: &str = "/config_schema";
/// `GET`: the configuration in force, JSON.
pub const PATH_CONFIG: &str = "/config";
/// `POST` an [`ExecuteRequest`]: the plugin's `execute`, its result as JSON.
pub const PATH_EXECUTE: &str = "/execute";
/// `POST` an [`ExecuteRequest`]: the plugin's `execute_stream`, one JSON value per
/// line ([`CONTENT_TYPE_NDJSON`]); a failure after the start is a last line holding
/// a [`StreamError`].
pub const PATH_EXECUTE_STREAM: &str = "/execute_stream";
/// `POST`: the plugin's `cleanup`, before the worker is stopped ([`StatusResponse`]
/// `cleaned`).
pub const PATH_CLEANUP: &str = "/cleanup";
/// `POST`: ask calls in flight to stop (0.0.21 on).
pub const PATH_CANCEL: &str = "/cancel";
/// `GET`: how far calls have got (0.0.21 on).
pub const PATH_PROGRESS: &str = "/progress";
/// Extension: on the answer to `/execute`, the call's last progress report
/// ([`ProgressResponse`] as JSON, non-ASCII escaped), so that a host learns it without
/// another request. Absent when the call reported none.
pub const PROGRESS_HEADER: &str = "x-cjm-progress";

/// `value` as JSON with every non-ASCII character escaped (`\uXXXX`), fit for a
/// header value.
pub fn ascii_json<T: Serialize>(value: &T) -> Option<String> {
    let text = serde_json::to_string(value).ok()?;
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Some(ascii)
}

/// `POST {"old_config", "new_config"}`: re-configure (0.0.46).
pub const PATH_RECONFIGURE: &str = "/reconfigure";
/// `POST`: the host enabled the plugin (0.0.46).
pub const PATH_ON_ENABLE: &str = "/on_enable";
/// `POST`: the host disabled the plugin (0.0.46).
pub const PATH_ON_DISABLE: &str = "/on_disable";
/// `POST`: acquire ahead of calls (0.0.46).
pub const PATH_PREFETCH: &str = "/prefetch";
/// `GET`: live configuration choices (0.0.46).
pub const PATH_CONFIG_OPTIONS: &str = "/config_options";
/// `GET`: the plugin's methods, properties and attributes (0.0.46).
pub const PATH_STRUCTURAL_SURFACE: &str = "/structural_surface";
/// `POST`: a monitor plugin's figures (0.0.46).
pub const PATH_GET_SYSTEM_STATUS: &str = "/get_system_status";
/// `POST`: a monitor plugin's processes (0.0.46).
pub const PATH_LIST_PROCESSES: &str = "/list_processes";

/// Body of `POST /reconfigure`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconfigureRequest {
    /// The configuration in force.
    #[serde(default)]
    pub old_config: Option<ConfigMap>,
    /// The configuration wanted.
    #[serde(default)]
    pub new_config: Option<ConfigMap>,
}

/// `POST`, remote workers only (`--listen`): renews the worker's lease (any request
/// does; this one does nothing else). Answer: [`crate::remote::LeaseResponse`].
pub const PATH_LEASE: &str = "/lease";

/// Extension: the id a host gives one call (`/execute`, `/execute_stream`), so that
/// it can ask for that call's progress and cancel that call alone. Ids are the
/// host's choice; a call sent without one gets one from the worker.
pub const CALL_ID_HEADER: &str = "x-cjm-call-id";

/// The content type of every JSON body.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// The content type of a stream's answer: newline-delimited JSON.
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
    /// Positional arguments; absent means none.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments; absent means none.
    #[serde(default)]
    pub kwargs: ConfigMap,
    /// Who the call is for (the original 0.0.46's envelope); absent means unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<crate::envelope::CallEnvelope>,
}

/// Answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `running` while the worker serves (the original's word).
    pub status: String,
    /// The worker's process id.
    pub pid: u32,
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The cjm-substrate release the worker answers as (the successor's host refuses
    /// a worker without its own); absent from 0.0.46-era workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substrate_version: Option<String>,
    /// The worker's program (the successor names its Python); sent with
    /// `substrate_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_executable: Option<String>,
}

/// Answer of `GET /stats`: memory of the worker and all its descendants, the
/// worker's own CPU load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// The worker's process id.
    pub pid: u32,
    /// The worker process's CPU load since the previous `/stats`, in percent of one
    /// core (as psutil reports it: above 100 on several cores); 0 the first time.
    pub cpu_percent: f64,
    /// Resident memory of the worker and its descendants, in MiB.
    pub memory_rss_mb: f64,
    /// The worker and its descendants (0.0.46): a host matches them with a GPU's
    /// processes to tell the plugin's GPU memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree_pids: Option<Vec<u32>>,
    /// What the plugin reported it used during its last call (0.0.46's
    /// `report_usage`, unit-agnostic: tokens, API credits); `None` when it said
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Fields a peer adds beyond the base protocol, kept as they came.
    #[serde(flatten)]
    pub extra: ConfigMap,
}

/// `__wire__`: the key of the original 0.0.46's typed result envelope,
/// `{"__wire__": kind, "data": ..}`.
pub const WIRE_KIND_KEY: &str = "__wire__";

/// A result a worker sent as a typed envelope (the original 0.0.46 wraps results of
/// its registered DTO classes so), given to the caller as its kind and data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypedResult {
    /// The DTO's stable name, such as `transcription.result`.
    pub kind: String,
    /// Its fields.
    pub data: Value,
}

/// What a call returned: a plain JSON value, or a typed one.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutput {
    /// Any JSON (our workers, the original's untyped results).
    Plain(Value),
    /// A typed envelope, unwrapped.
    Typed(TypedResult),
}

impl CallOutput {
    /// `value` unwrapped when it is exactly a typed envelope (`__wire__` a string,
    /// `data`, nothing else), else as it is.
    pub fn from_value(value: Value) -> CallOutput {
        match value {
            Value::Object(mut fields)
                if fields.len() == 2
                    && fields.get(WIRE_KIND_KEY).is_some_and(Value::is_string)
                    && fields.contains_key("data") =>
            {
                let data = fields.remove("data").unwrap_or(Value::Null);
                match fields.remove(WIRE_KIND_KEY) {
                    Some(Value::String(kind)) => CallOutput::Typed(TypedResult { kind, data }),
                    _ => CallOutput::Plain(Value::Null),
                }
            }
            other => CallOutput::Plain(other),
        }
    }
}

/// `{"status": ..}` answers of `/initialize` (`"ok"`) and `/cleanup` (`"cleaned"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// `ok` or `cleaned`.
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

/// Whose exception names a typed error is written in. A host knows a stream that was
/// cancelled (rather than failed) only by its own class name at the start of
/// `original_exc_repr`: the original's `PluginCancelledError`, its successor's
/// (cjm-substrate) `CapabilityCancelledError`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorNames {
    /// The original's (cjm_plugin_system, up to 0.0.46), and our hosts'.
    #[default]
    Original,
    /// The successor's: `Capability*Error`, and `capability_name` for the plugin.
    Substrate,
}

impl JobError {
    /// The typed error of `err`, raised by plugin `plugin`.
    pub fn from_plugin_error(err: &crate::PluginError, plugin: &str) -> Self {
        Self::from_plugin_error_named(err, plugin, ErrorNames::Original)
    }

    /// [`JobError::from_plugin_error`], in the exception names of one host.
    pub fn from_plugin_error_named(
        err: &crate::PluginError,
        plugin: &str,
        names: ErrorNames,
    ) -> Self {
        let class = match names {
            ErrorNames::Original => "Plugin",
            ErrorNames::Substrate => "Capability",
        };
        let mut extra = ConfigMap::new();
        let plugin_name = match names {
            ErrorNames::Original => Some(plugin.to_owned()),
            ErrorNames::Substrate => {
                extra.insert(String::from("capability_name"), plugin.into());
                None
            }
        };
        JobError {
            category: err.category().as_str().to_owned(),
            message: err.message().to_owned(),
            retriable: err.retriable(),
            original_exc_repr: match err.kind() {
                crate::ErrorKind::Cancelled => format!("{class}CancelledError({plugin:?})"),
                kind => format!("{class}Error({}: {:?})", kind.as_str(), err.message()),
            },
            retry_after_seconds: err.retry_after_seconds(),
            fields_invalid: (!err.fields_invalid().is_empty())
                .then(|| err.fields_invalid().to_vec()),
            plugin_name,
            extra,
        }
    }

    /// The category, when it is one the original defines.
    pub fn category(&self) -> Option<crate::ErrorCategory> {
        crate::ErrorCategory::from_name(&self.category)
    }

    /// Whether it reports a cancelled call rather than a failure.
    pub fn is_cancellation(&self) -> bool {
        self.original_exc_repr.starts_with("PluginCancelledError")
            || self
                .original_exc_repr
                .starts_with("CapabilityCancelledError")
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

/// [`CancelResponse::status`]: the call (or every call) was asked to stop.
pub const CANCEL_STATUS_CANCELLED: &str = "cancelled";
/// [`CancelResponse::status`]: the worker has no way to stop a call (the original
/// 0.0.20 has no `/cancel`; the host reads its 404 so).
pub const CANCEL_STATUS_NOT_SUPPORTED: &str = "not_supported";
/// [`CancelResponse::status`]: nothing was stopped (`detail` says why; ours: the call
/// has already ended).
pub const CANCEL_STATUS_ERROR: &str = "error";
/// [`CancelResponse::status`] as the host reads ours: the worker had not seen the
/// call yet (it answered 404 with [`KIND_UNKNOWN_CALL`]) and will refuse it as
/// cancelled when it arrives.
pub const CANCEL_STATUS_REMEMBERED: &str = "remembered";
/// `kind` of our worker's 404 to `/cancel` for a call id it has not seen: unlike a
/// 404 for the route (a worker without `/cancel`), the cancel was taken.
pub const KIND_UNKNOWN_CALL: &str = "unknown_call";

/// Answer of `POST /cancel`: `status` is `cancelled`, `not_supported` or `error`
/// (with `detail`); the host also says `remembered` (see
/// [`CANCEL_STATUS_REMEMBERED`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// `cancelled`, `not_supported`, `error` or (host side) `remembered`.
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

#[cfg(test)]
mod tests {

    #[test]
    fn each_host_reads_a_cancelled_stream_by_its_own_class_name() {
        use super::*;
        let cancelled = crate::PluginError::cancelled("stopped");
        let original = JobError::from_plugin_error(&cancelled, "cjm-wordcount");
        assert!(original
            .original_exc_repr
            .starts_with("PluginCancelledError("));
        assert_eq!(original.plugin_name.as_deref(), Some("cjm-wordcount"));
        let successor =
            JobError::from_plugin_error_named(&cancelled, "cjm-wordcount", ErrorNames::Substrate);
        assert!(successor
            .original_exc_repr
            .starts_with("CapabilityCancelledError("));
        let sent = serde_json::to_value(&successor).unwrap();
        assert_eq!(sent["capability_name"], "cjm-wordcount");
        assert!(sent.get("plugin_name").is_none(), "{sent}");
        // Our hosts read both.
        assert!(original.is_cancellation() && successor.is_cancellation());
        let failed = crate::PluginError::invalid_argument("bad");
        let failed = JobError::from_plugin_error_named(&failed, "x", ErrorNames::Substrate);
        assert!(failed.original_exc_repr.starts_with("CapabilityError("));
        assert!(!failed.is_cancellation());
    }

    #[test]
    fn only_an_exact_typed_envelope_is_unwrapped() {
        use serde_json::json;
        let typed = CallOutput::from_value(json!({"__wire__": "a.b", "data": {"x": 1}}));
        assert_eq!(
            typed,
            CallOutput::Typed(TypedResult {
                kind: String::from("a.b"),
                data: json!({"x": 1})
            })
        );
        for plain in [
            json!({"__wire__": "a.b", "data": 1, "more": 2}),
            json!({"__wire__": 5, "data": 1}),
            json!({"__wire__": "a.b"}),
            json!([1]),
        ] {
            assert_eq!(
                CallOutput::from_value(plain.clone()),
                CallOutput::Plain(plain)
            );
        }
    }
    use super::*;

    #[test]
    fn ascii_json_escapes_what_a_header_cannot_hold_and_parses_back() {
        let value = serde_json::json!({"message": "zählt 5 € 🎉"});
        let text = ascii_json(&value).unwrap();
        assert!(text.is_ascii(), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn stream_error_lines_of_both_originals_are_recognised() {
        let old = serde_json::json!({"error": "boom"});
        assert_eq!(StreamError::from_chunk(&old).unwrap().error, "boom");
        let new = serde_json::json!({"_job_error": {"category": "transient", "message": "busy"}});
        let parsed = StreamError::from_chunk(&new).unwrap();
        assert_eq!(parsed.error, "busy");
        assert_eq!(
            parsed.job_error.unwrap().category(),
            Some(crate::ErrorCategory::Transient)
        );
        // A plugin's own chunk with an "error" field among others is no error line.
        let chunk = serde_json::json!({"error": "none", "count": 3});
        assert!(StreamError::from_chunk(&chunk).is_none());
    }
}
