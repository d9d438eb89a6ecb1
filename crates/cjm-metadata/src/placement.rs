//! Where a plugin's worker runs, as its manifest says: on this host (no field), at a
//! worker someone else runs (`"attach"`), or placed by Ray (`"placement": {"ray":
//! ..}`). The host turns this into a placement of `cjm-proxy`; the metadata only
//! checks its shape, so that a broken form is a broken manifest at discovery.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a plugin's worker runs.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum WorkerPlacement {
    /// A child process of the host (no `attach` or `placement` field).
    #[default]
    Local,
    /// `"attach": {..}`: a worker someone else runs.
    Attach(AttachSpec),
    /// `"placement": {"ray": {..}}`: a worker placed by a Ray cluster.
    Ray(RaySpec),
}

/// `"attach": {"url": "https://host:port", "server_fingerprint": "<sha256 hex>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AttachSpec {
    /// `https://host:port` of the worker (started with `--listen`).
    pub url: String,
    /// SHA-256 of the worker's certificate (its handshake line says it), hex.
    pub server_fingerprint: String,
    /// A variable of the host's environment holding the worker's bearer secret, for
    /// a worker whose operator gave it `CJM_WORKER_TOKEN` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// `"placement": {"ray": {"address": "https://head:8265", "ca_file": "ca.pem", ..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RaySpec {
    /// The Ray dashboard (Jobs API): `https://host:8265`, or `http://` on this
    /// machine's loopback (elsewhere only with `insecure_http`).
    pub address: String,
    /// For an `https://` address: a PEM file of the CAs that issue the dashboard's
    /// certificate (relative to the manifest's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// For an `https://` address: the SHA-256 of the dashboard's certificate, hex
    /// (pinned, in place of a CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_fingerprint: Option<String>,
    /// `true`: plain `http://` to a dashboard off loopback is accepted, and with it
    /// that anyone on the path reads the token and can answer with a worker of their
    /// own. Nothing else turns plain HTTP off loopback on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
    /// A variable of the host's environment holding the cluster's token
    /// (`RAY_AUTH_MODE=token`); the token itself never goes in a manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Node labels the worker must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_selector: BTreeMap<String, String>,
    /// CPUs reserved for the worker's job (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_cpus: Option<f64>,
    /// Seconds without a request after which the worker exits (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Seconds placement may take, pending for resources included (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_timeout_secs: Option<u64>,
    /// Python plugins: the packages the job's environment installs (Ray's
    /// `runtime_env.pip`), the original and the plugin's own package among them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    /// Python plugins: the interpreter on the node (default `python`, the job
    /// environment's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

impl WorkerPlacement {
    /// The placement the fields `extra` of a manifest describe.
    pub(crate) fn from_fields(extra: &Map<String, Value>) -> Result<Self, String> {
        match (extra.get("attach"), extra.get("placement")) {
            (None, None) => Ok(WorkerPlacement::Local),
            (Some(_), Some(_)) => Err(String::from(
                "\"attach\" and \"placement\" both given: a worker runs in one place",
            )),
            (Some(attach), None) => serde_json::from_value(attach.clone())
                .map(WorkerPlacement::Attach)
                .map_err(|err| format!("\"attach\": {err}")),
            (None, Some(placement)) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Placement {
                    ray: RaySpec,
                }
                serde_json::from_value::<Placement>(placement.clone())
                    .map(|placement| WorkerPlacement::Ray(placement.ray))
                    .map_err(|err| format!("\"placement\": {err}"))
            }
        }
    }

    /// Whether the worker runs on this host.
    pub fn is_local(&self) -> bool {
        matches!(self, WorkerPlacement::Local)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(extra: Value) -> Result<WorkerPlacement, String> {
        WorkerPlacement::from_fields(extra.as_object().unwrap())
    }

    #[test]
    fn the_three_forms_parse() {
        assert_eq!(
            parse(json!({"env_name": "x"})).unwrap(),
            WorkerPlacement::Local
        );
        let attach = parse(json!({"attach": {"url": "https://h:1", "server_fingerprint": "ab"}}));
        assert!(matches!(attach, Ok(WorkerPlacement::Attach(spec)) if spec.url == "https://h:1"));
        let ray = parse(json!({"placement": {"ray": {
            "address": "http://head:8265", "token_env": "T",
            "label_selector": {"cjm-pool": "gpu"}, "lease_secs": 20}}}))
        .unwrap();
        let WorkerPlacement::Ray(ray) = ray else {
            panic!("{ray:?}")
        };
        assert_eq!(ray.label_selector["cjm-pool"], "gpu");
        assert_eq!(ray.lease_secs, Some(20));
        assert!(
            !ray.insecure_http,
            "plain HTTP off loopback is off unless said"
        );
        assert_eq!(ray.ca_file, None);
        let tls = parse(json!({"placement": {"ray": {
            "address": "https://head:8265", "ca_file": "ca.pem",
            "dashboard_fingerprint": "ab", "insecure_http": true}}}))
        .unwrap();
        let WorkerPlacement::Ray(tls) = tls else {
            panic!("{tls:?}")
        };
        assert_eq!(tls.ca_file.as_deref(), Some("ca.pem"));
        assert_eq!(tls.dashboard_fingerprint.as_deref(), Some("ab"));
        assert!(tls.insecure_http);
    }

    #[test]
    fn broken_forms_say_which_field_and_why() {
        for (extra, expected) in [
            (
                json!({"attach": {"url": "https://h:1"}}),
                "\"attach\": missing field `server_fingerprint`",
            ),
            (
                json!({"attach": {"url": "u", "server_fingerprint": "f", "x": 1}}),
                "\"attach\": unknown field `x`",
            ),
            (
                json!({"placement": {"kubernetes": {}}}),
                "\"placement\": unknown field `kubernetes`",
            ),
            (
                json!({"placement": {"ray": {"address": 5}}}),
                "\"placement\": invalid type",
            ),
            (json!({"attach": {}, "placement": {}}), "both given"),
            (
                // Insecure in so many words: a string or a number is not consent.
                json!({"placement": {"ray": {"address": "http://h:1", "insecure_http": "yes"}}}),
                "\"placement\": invalid type: string \"yes\", expected a boolean",
            ),
        ] {
            let err = parse(extra).unwrap_err();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }
}
