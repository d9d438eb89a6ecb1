//! Calls that carry the original 0.0.46's envelope (who the call is for) and bring
//! back the accounts the worker recorded (`x-cjm-accounts`): `/execute` for jobs, and
//! the task channel, `/task`.

use bytes::Bytes;
use cjm_interface::envelope::{
    parse_accounts, Account, CallEnvelope, ACCOUNTS_HEADER, ENVELOPE_BODY_KEY, PATH_TASK,
};
use cjm_interface::wire::{self, ProgressResponse};
use cjm_interface::{json, CallArgs};
use serde_json::Value;

use super::{with_call_id, CallMetrics, RemotePluginProxy};
use crate::files::{self, TempFiles};
use crate::transport::Outgoing;
use crate::ProxyError;

/// What a call addresses: the plugin's `execute`, or a method of a task adapter
/// bound in its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTarget<'a> {
    /// `POST /execute`.
    Execute,
    /// `POST /task`: keyword arguments only.
    Task {
        /// The task, such as `"graph-storage"`.
        task: &'a str,
        /// The adapter's method.
        method: &'a str,
    },
}

/// A call's answer and what came beside it.
#[derive(Debug)]
pub struct Answered {
    /// The result (or the call's error).
    pub result: Result<(Value, Option<ProgressResponse>), ProxyError>,
    /// The accounts the worker recorded during the call, success or failure alike
    /// (none from a worker that records none, or sends a header that cannot be
    /// read: that is logged, never the call's error).
    pub accounts: Vec<Account>,
    /// What the call cost: bytes each way, seconds posting and decoding, and the
    /// worker's own seconds and I/O where its accounts say them.
    pub metrics: CallMetrics,
}

impl RemotePluginProxy {
    /// Call `method` of the task adapter for `task` bound in the worker, with the
    /// keyword arguments of `kwargs` (positional ones are refused: a task method's
    /// parameters are named). A task or method the worker does not serve is
    /// [`ProxyError::UnknownTask`], naming what it does serve.
    pub async fn execute_task(
        &self,
        task: &str,
        method: &str,
        kwargs: CallArgs,
    ) -> Result<Value, ProxyError> {
        self.call_enveloped(CallTarget::Task { task, method }, kwargs, None, None)
            .await
            .result
            .map(|(value, _)| value)
    }

    /// Send `call` to `target` as call `call_id`, with `envelope` beside its
    /// arguments (the body's top-level `"envelope"`, never in its kwargs): the
    /// result with the call's last progress report, and the accounts the worker sent.
    pub async fn call_enveloped(
        &self,
        target: CallTarget<'_>,
        call: CallArgs,
        call_id: Option<&str>,
        envelope: Option<&CallEnvelope>,
    ) -> Answered {
        let endpoint = match target {
            CallTarget::Execute => wire::PATH_EXECUTE,
            CallTarget::Task { .. } => PATH_TASK,
        };
        let (body, _files) = match self.enveloped_body(target, call, envelope).await {
            Ok(prepared) => prepared,
            Err(err) => {
                return Answered {
                    result: Err(err),
                    accounts: Vec::new(),
                    metrics: CallMetrics::default(),
                }
            }
        };
        let mut metrics = CallMetrics::sent(body.len());
        let request = with_call_id(Outgoing::post(endpoint, body), call_id);
        let mut progress = None;
        let mut accounts = Vec::new();
        let plugin = self.plugin.clone();
        let value = self
            .request_json_measured(request, |headers| {
                progress = headers
                    .get(wire::PROGRESS_HEADER)
                    .and_then(|value| serde_json::from_slice(value.as_bytes()).ok());
                if let Some(header) = headers.get(ACCOUNTS_HEADER) {
                    match parse_accounts(header.as_bytes()) {
                        Some(read) => accounts = read,
                        None => tracing::warn!(
                            "plugin {plugin}: {endpoint}: {ACCOUNTS_HEADER} is not a list of accounts; dropped"
                        ),
                    }
                }
            }, &mut metrics)
            .await;
        metrics.read_accounts(&accounts);
        let result = match (value, target) {
            (
                Err(ProxyError::Http {
                    status: 404,
                    detail,
                    ..
                }),
                CallTarget::Task { task, method },
            ) => Err(ProxyError::UnknownTask {
                plugin: self.plugin.clone(),
                task: task.to_owned(),
                method: method.to_owned(),
                detail,
            }),
            (value, _) => value.map(|value| (value, progress)),
        };
        Answered {
            result,
            accounts,
            metrics,
        }
    }

    pub(super) async fn enveloped_body(
        &self,
        target: CallTarget<'_>,
        call: CallArgs,
        envelope: Option<&CallEnvelope>,
    ) -> Result<(Bytes, TempFiles), ProxyError> {
        if let CallTarget::Task { task, method } = target {
            if !call.args.is_empty() {
                return Err(ProxyError::TaskArguments {
                    plugin: self.plugin.clone(),
                    task: task.to_owned(),
                    method: method.to_owned(),
                    positional: call.args.len(),
                });
            }
        }
        let (args, kwargs, files) = if call.has_files() {
            // Writing files (possibly large) must not stall the runtime's threads.
            let plugin = self.plugin.clone();
            let dir = self.temp_dir.clone();
            tokio::task::spawn_blocking(move || files::materialize(&plugin, call, &dir))
                .await
                .map_err(|err| ProxyError::InvalidResponse {
                    plugin: self.plugin.clone(),
                    endpoint: wire::PATH_EXECUTE,
                    reason: format!("writing file arguments failed: {err}"),
                })??
        } else {
            files::materialize(&self.plugin, call, &self.temp_dir)?
        };
        let mut body = self.buffers.take();
        match target {
            CallTarget::Execute => json::write_call_body(&mut body, &args, &kwargs),
            CallTarget::Task { task, method } => {
                body.extend_from_slice(b"{\"task\":");
                json::write_value(&mut body, &Value::from(task));
                body.extend_from_slice(b",\"method\":");
                json::write_value(&mut body, &Value::from(method));
                body.extend_from_slice(b",\"kwargs\":");
                json::write_object(&mut body, &kwargs);
                body.push(b'}');
            }
        }
        if let Some(envelope) = envelope {
            // The body is an object ending in `}`: the envelope goes in before it.
            body.pop();
            body.extend_from_slice(format!(",\"{ENVELOPE_BODY_KEY}\":").as_bytes());
            let encoded = serde_json::to_value(envelope).unwrap_or(Value::Null);
            json::write_value(&mut body, &encoded);
            body.push(b'}');
        }
        Ok((self.buffers.lend_as_bytes(body, &self.runtime), files))
    }
}
