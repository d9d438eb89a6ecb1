//! `/initialize` and `/reconfigure`: a configuration is checked against the plugin's
//! schema before the plugin sees it, and a refused one changes nothing.

use std::sync::Arc;

use cjm_interface::wire::{self, ReconfigureRequest, StatusResponse};
use cjm_interface::{ConfigMap, ErrorKind, PluginError};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::host::{guarded, CallFailure};
use crate::request::answer_off_io;
use crate::respond::{error_response, failure_response, failure_response_with, json_response};
use crate::state::Worker;

pub(crate) async fn initialize(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let claim = request.headers().get(wire::CONFIG_CHECKED_HEADER).cloned();
    answer_off_io(worker, request, move |worker, config: ConfigMap| {
        let config = match checked_config(worker, config, claim.as_ref()) {
            Ok(config) => config,
            Err(refusal) => return refusal.into_response(worker),
        };
        let result = {
            let mut plugin = worker.host.write();
            let checked_against = worker.config_check.fingerprint();
            crate::config::with_config_checked_against(checked_against, || {
                guarded(|| plugin.initialize(config))
            })
        };
        configured(worker, result, "ok")
    })
    .await
}

/// `POST /reconfigure {"old_config", "new_config"}` (the original 0.0.46's): the new
/// configuration checked like `/initialize`'s, then the plugin's `reconfigure`.
pub(crate) async fn reconfigure(
    worker: Arc<Worker>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let claim = request.headers().get(wire::CONFIG_CHECKED_HEADER).cloned();
    answer_off_io(worker, request, move |worker, asked: ReconfigureRequest| {
        let new = match checked_config(worker, asked.new_config.unwrap_or_default(), claim.as_ref())
        {
            Ok(config) => config,
            Err(refusal) => return refusal.into_response(worker),
        };
        let result = {
            let mut plugin = worker.host.write();
            let old = match asked.old_config {
                Some(old) => old,
                None => match plugin.current_config() {
                    serde_json::Value::Object(old) => old,
                    _ => ConfigMap::new(),
                },
            };
            let checked_against = worker.config_check.fingerprint();
            crate::config::with_config_checked_against(checked_against, || {
                guarded(|| plugin.reconfigure(old, new))
            })
        };
        configured(worker, result, "reconfigured")
    })
    .await
}

fn configured(
    worker: &Worker,
    result: Result<(), CallFailure>,
    status: &str,
) -> Response<ResponseBody> {
    match result {
        Ok(()) => json_response(
            StatusCode::OK,
            &StatusResponse {
                status: status.to_owned(),
            },
        ),
        // Whatever the plugin refuses is the caller's configuration: the original's 400.
        Err(failure @ CallFailure::Plugin(_)) => {
            failure_response_with(StatusCode::BAD_REQUEST, worker, &failure)
        }
        Err(failure) => failure_response(worker, &failure),
    }
}

/// `config`, once it is known to fit the plugin's schema. Checked before taking the
/// plugin: a refused configuration never waits for running calls, and never reaches
/// the plugin, which keeps its previous one.
fn checked_config(
    worker: &Worker,
    config: ConfigMap,
    claim: Option<&HeaderValue>,
) -> Result<ConfigMap, ConfigRefusal> {
    // Only the host holding this worker's secret is believed when it says it has
    // checked the configuration against this very schema.
    if worker.access.is_some() && worker.config_check.is_checked_by(claim) {
        return Ok(config);
    }
    let validator = worker
        .config_check
        .validator()
        .map_err(|schema_error| ConfigRefusal::BrokenSchema(schema_error.to_string()))?;
    validator
        .validate_map(config)
        .map_err(|invalid| ConfigRefusal::Invalid(invalid.to_string()))
}

enum ConfigRefusal {
    /// The plugin's own schema cannot check anything: its fault (500).
    BrokenSchema(String),
    /// The configuration breaks the schema: the caller's fault (400).
    Invalid(String),
}

impl ConfigRefusal {
    fn into_response(self, worker: &Worker) -> Response<ResponseBody> {
        let plugin = worker.host.name();
        match self {
            ConfigRefusal::BrokenSchema(reason) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "plugin {plugin} cannot check configurations: its config schema is {reason}"
                ),
                Some(ErrorKind::Failed.as_str()),
            ),
            ConfigRefusal::Invalid(violations) => failure_response(
                worker,
                &CallFailure::Plugin(PluginError::invalid_config(violations)),
            ),
        }
    }
}
