//! The original 0.0.46's lifecycle endpoints, as the host calls them. A worker that
//! lacks one (the original 0.0.20, a 0.0.46 plugin without the hook) is no error:
//! the answer says it is not supported.

use bytes::Bytes;
use cjm_interface::wire::{self, ReconfigureRequest};
use cjm_interface::ConfigMap;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::transport::Outgoing;
use crate::{ProxyError, RemotePluginProxy};

/// What a lifecycle hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// The worker ran it.
    Done,
    /// The worker has no such endpoint, or its plugin no such hook.
    NotSupported,
    /// The hook failed; the plugin goes on (the original's `{"status": "error"}`).
    Failed(String),
}

impl RemotePluginProxy {
    /// `POST /reconfigure` from `old` to `new` (checked already against the schema
    /// with fingerprint `schema_fingerprint`). `NotSupported` tells the caller to
    /// send `/initialize` instead.
    pub async fn reconfigure(
        &self,
        old: ConfigMap,
        new: ConfigMap,
        schema_fingerprint: &str,
    ) -> Result<HookOutcome, ProxyError> {
        let body = ReconfigureRequest {
            old_config: Some(old),
            new_config: Some(new),
        };
        let body = serde_json::to_vec(&body).map_err(|err| ProxyError::InvalidResponse {
            plugin: self.name().to_owned(),
            endpoint: wire::PATH_RECONFIGURE,
            reason: format!("cannot encode the configurations: {err}"),
        })?;
        let mut request = Outgoing::post(wire::PATH_RECONFIGURE, Bytes::from(body));
        if let Ok(claim) = HeaderValue::from_str(schema_fingerprint) {
            request = request.header(HeaderName::from_static(wire::CONFIG_CHECKED_HEADER), claim);
        }
        self.hook(request).await
    }

    /// `POST /on_enable`.
    pub async fn on_enable(&self) -> Result<HookOutcome, ProxyError> {
        self.hook(Outgoing::post(wire::PATH_ON_ENABLE, Bytes::new()))
            .await
    }

    /// `POST /on_disable`.
    pub async fn on_disable(&self) -> Result<HookOutcome, ProxyError> {
        self.hook(Outgoing::post(wire::PATH_ON_DISABLE, Bytes::new()))
            .await
    }

    /// `POST /prefetch`, as call `call_id` where the worker takes ids (its progress
    /// is then that call's on `/progress`). Waits for the prefetch to end.
    pub async fn prefetch(&self, call_id: &str) -> Result<HookOutcome, ProxyError> {
        let mut request = Outgoing::post(wire::PATH_PREFETCH, Bytes::new());
        if let Ok(id) = HeaderValue::from_str(call_id) {
            request = request.header(HeaderName::from_static(wire::CALL_ID_HEADER), id);
        }
        self.hook(request).await
    }

    /// `GET /config_options`: the live domains of configuration fields; `{}` when the
    /// worker has none to tell.
    pub async fn config_options(&self) -> Result<Value, ProxyError> {
        match self
            .request_json::<Value>(Outgoing::get(wire::PATH_CONFIG_OPTIONS))
            .await
        {
            Err(ProxyError::Http { status: 404, .. }) => Ok(Value::Object(ConfigMap::new())),
            answer => answer,
        }
    }

    async fn hook(&self, request: Outgoing) -> Result<HookOutcome, ProxyError> {
        let answer = match self.request_json::<Value>(request).await {
            Ok(answer) => answer,
            Err(ProxyError::Http { status: 404, .. }) => return Ok(HookOutcome::NotSupported),
            Err(err) => return Err(err),
        };
        Ok(match answer.get("status").and_then(Value::as_str) {
            Some("not_supported") => HookOutcome::NotSupported,
            Some("error") => HookOutcome::Failed(
                answer
                    .get("detail")
                    .and_then(Value::as_str)
                    .unwrap_or("the hook failed")
                    .to_owned(),
            ),
            _ => HookOutcome::Done,
        })
    }
}
