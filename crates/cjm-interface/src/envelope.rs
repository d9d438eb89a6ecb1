//! The original 0.0.46's per-call envelope and accounts: who a call is for (its job,
//! run, composition node, actor), sent by the host beside a call's arguments, and
//! what the worker recorded during the call, sent back on the answer's
//! [`ACCOUNTS_HEADER`]. Also the body of its task channel, `POST /task`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigMap;

/// `POST` a [`TaskRequest`]: call one method of a task adapter bound in the worker
/// (0.0.46). 404 for a task or method not bound, 409 when cancelled, 500 with a
/// `_job_error` when it fails.
pub const PATH_TASK: &str = "/task";

/// The `kind` of a 404 from `/task`: no adapter is bound for the task, or it has no
/// such method (the detail names what is bound).
pub const KIND_UNKNOWN_TASK: &str = "unknown_task";

/// The top-level key of a call's body that holds its [`CallEnvelope`] (never inside
/// the kwargs: a plugin's parameters never see it).
pub const ENVELOPE_BODY_KEY: &str = "envelope";

/// The answer header carrying the accounts a worker recorded during a unary call
/// (`/execute`, `/task`), success or `_job_error` 500 alike: a JSON list of
/// [`Account`], ASCII.
pub const ACCOUNTS_HEADER: &str = "x-cjm-accounts";

/// The event type of the account a worker records for every `/task` call (the
/// original's `SubstrateEventType.TASK_ACCOUNT`).
pub const TASK_ACCOUNT: &str = "task_account";

/// Who a call is for, in the original's wire shape (`CallEnvelope.to_wire`: fields
/// that are unset are left out). Every field is optional: a call without an envelope
/// (a direct call, an old host) is simply unattributed. Keys this version does not
/// know are kept in `extra`, as the original ignores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallEnvelope {
    /// The job the call runs for (our host: the job's journal id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// A run of a host tier that groups jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The composition the call is a node of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composition_id: Option<String>,
    /// The node of that composition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Who or what started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Per-call flags (the original's `control`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub control: Map<String, Value>,
    /// Our addition: which attempt of the job this is (1 for the first). The
    /// original's decoder ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Keys this version does not know, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CallEnvelope {
    /// The envelope of attempt `attempt` of job `job_id`.
    pub fn for_job(job_id: impl Into<String>, attempt: u32) -> Self {
        CallEnvelope {
            job_id: Some(job_id.into()),
            attempt: Some(attempt),
            ..CallEnvelope::default()
        }
    }
}

/// One account a worker recorded during a call, as the original writes it:
/// `{"event_type": .., "payload": {..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// What happened (`task_account`, `result_saved`, `cache_hit`, ..).
    pub event_type: String,
    /// Its details: references and hashes, never content.
    #[serde(default)]
    pub payload: Map<String, Value>,
}

impl Account {
    /// An account of `event_type` with `payload`.
    pub fn new(event_type: impl Into<String>, payload: Map<String, Value>) -> Self {
        Account {
            event_type: event_type.into(),
            payload,
        }
    }
}

/// The accounts of an [`ACCOUNTS_HEADER`] value; `None` when it is not a list of
/// accounts (a header the host cannot read is logged and dropped, never an error of
/// the call).
pub fn parse_accounts(header: &[u8]) -> Option<Vec<Account>> {
    serde_json::from_slice(header).ok()
}

/// Body of `POST /task`. Keyword arguments only, as in the original: a task method
/// has named parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The task (an adapter's `task_name`), such as `"graph-storage"`.
    #[serde(default)]
    pub task: Option<String>,
    /// The adapter's method.
    #[serde(default)]
    pub method: Option<String>,
    /// Its keyword arguments.
    #[serde(default)]
    pub kwargs: ConfigMap,
    /// Who the call is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<CallEnvelope>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_envelope_has_the_originals_compact_shape_and_keeps_unknown_keys() {
        let envelope = CallEnvelope::for_job("s-1", 2);
        assert_eq!(
            serde_json::to_value(&envelope).unwrap(),
            json!({"job_id": "s-1", "attempt": 2})
        );
        let read: CallEnvelope = serde_json::from_value(json!({
            "job_id": "j", "node_id": "n", "control": {"force": true}, "future": 1
        }))
        .unwrap();
        assert_eq!(read.job_id.as_deref(), Some("j"));
        assert_eq!(read.node_id.as_deref(), Some("n"));
        assert_eq!(read.control["force"], true);
        assert_eq!(read.extra["future"], 1);
        assert_eq!(serde_json::to_value(&read).unwrap()["future"], 1);
    }

    #[test]
    fn accounts_read_as_the_original_writes_them_and_garbage_is_none() {
        let header = br#"[{"event_type": "task_account", "payload": {"ok": true}}]"#;
        let accounts = parse_accounts(header).unwrap();
        assert_eq!(accounts[0].event_type, TASK_ACCOUNT);
        assert_eq!(accounts[0].payload["ok"], true);
        assert!(parse_accounts(b"{not json").is_none());
        assert!(parse_accounts(br#"{"event_type": "x"}"#).is_none());
    }
}
