//! What the cluster has free, node by node, and what a pending job is short of.
//!
//! Ray 2.60's REST API has no single answer to "what is free where". Two answers
//! together give it, and both were read from a real Ray 2.60 cluster:
//!
//! - `GET /api/v0/nodes?detail=1` (the state API): each node's id, IP, state, labels
//!   and `resources_total`, resource names as declared.
//! - `GET /api/cluster_status`: the autoscaler monitor's last report (written every
//!   few seconds; `clusterStatus.time` says when), whose
//!   `loadMetricsReport.usageByNode` maps each node id to `[used, total]` per
//!   resource. The dashboard camel-cases these keys (`gpu_vram_mb` arrives as
//!   `gpuVramMb`), so names are looked up the way Ray turned them.
//!
//! A cluster whose monitor writes no such report (an autoscaler that keeps its status
//! elsewhere) cannot say: [`RayClient::cluster_resources`](crate::RayClient::cluster_resources)
//! then answers `None`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One live node of the cluster: where it is, its labels and its resources.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeResources {
    /// Ray's node id.
    pub node_id: String,
    /// The node's IP address (what [`JobDetails::node_address`](crate::JobDetails::node_address)
    /// gives for a job running there).
    pub address: String,
    /// The node's labels (`ray start --labels`).
    pub labels: BTreeMap<String, String>,
    /// Everything the node declared, by name.
    pub total: BTreeMap<String, f64>,
    /// What is not reserved, as of the monitor's last report.
    pub available: BTreeMap<String, f64>,
}

impl NodeResources {
    /// A node as Ray would report it: its id, address, labels, everything it declared
    /// and what of it is free.
    pub fn new(
        node_id: impl Into<String>,
        address: impl Into<String>,
        labels: BTreeMap<String, String>,
        total: BTreeMap<String, f64>,
        available: BTreeMap<String, f64>,
    ) -> Self {
        NodeResources {
            node_id: node_id.into(),
            address: address.into(),
            labels,
            total,
            available,
        }
    }
}

#[derive(Deserialize)]
struct NodesAnswer {
    data: NodesData,
}

#[derive(Deserialize)]
struct NodesData {
    result: NodesResult,
}

#[derive(Deserialize)]
struct NodesResult {
    result: Vec<NodeState>,
}

#[derive(Deserialize)]
struct NodeState {
    node_id: String,
    node_ip: String,
    state: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    resources_total: BTreeMap<String, f64>,
}

/// The nodes of `GET /api/v0/nodes?detail=1` joined with the usage of
/// `GET /api/cluster_status`; `None` when the status holds no usage by node (Ray
/// cannot tell). A live node missing from the report is taken as wholly free, so
/// that an unknown is never a reason to stop a worker.
pub(crate) fn join(nodes: &[u8], status: &[u8]) -> Result<Option<Vec<NodeResources>>, String> {
    let nodes: NodesAnswer = serde_json::from_slice(nodes).map_err(|err| err.to_string())?;
    let status: Value = serde_json::from_slice(status).map_err(|err| err.to_string())?;
    let Some(usage) = status
        .pointer("/data/clusterStatus/loadMetricsReport/usageByNode")
        .and_then(Value::as_object)
    else {
        return Ok(None);
    };
    let joined = nodes
        .data
        .result
        .result
        .into_iter()
        .filter(|node| node.state == "ALIVE")
        .map(|node| {
            let used = usage.get(&node.node_id);
            let available = node
                .resources_total
                .iter()
                .map(|(name, total)| {
                    let in_use = used
                        .and_then(|used| used.get(ray_camel_case(name)))
                        .and_then(|pair| pair.get(0))
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0);
                    (name.clone(), (total - in_use).max(0.0))
                })
                .collect();
            NodeResources {
                node_id: node.node_id,
                address: node.node_ip,
                labels: node.labels,
                total: node.resources_total,
                available,
            }
        })
        .collect();
    Ok(Some(joined))
}

/// A key as Ray's dashboard writes it (`to_camel_case`): split on `_`, every part
/// after the first in Python's `str.title()`.
fn ray_camel_case(name: &str) -> String {
    let mut parts = name.split('_');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let mut cased_before = false;
        for c in part.chars() {
            if c.is_alphabetic() {
                if cased_before {
                    out.extend(c.to_lowercase());
                } else {
                    out.extend(c.to_uppercase());
                }
                cased_before = true;
            } else {
                out.push(c);
                cased_before = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ray_260s_answers_join_into_free_resources() {
        // As Ray 2.60 answered, trimmed: the GPU node with 16000 of 24000 taken.
        let nodes = json!({"result": true, "msg": "", "data": {"result": {"total": 2, "result": [
            {"node_id": "54d4", "node_ip": "192.0.2.2", "is_head_node": true, "state": "ALIVE",
             "labels": {"cjm-pool": "cpu"}, "resources_total": {"CPU": 2.0, "memory": 17171887309.0,
             "node:__internal_head__": 1.0}},
            {"node_id": "c97f", "node_ip": "127.0.0.2", "is_head_node": false, "state": "ALIVE",
             "labels": {"cjm-pool": "gpu"}, "resources_total": {"CPU": 2.0, "GPU": 2.0,
             "gpu_vram_mb": 24000.0, "memory": 17134949172.0}},
            {"node_id": "dead", "node_ip": "127.0.0.3", "state": "DEAD", "labels": {},
             "resources_total": {"GPU": 8.0}}
        ]}}});
        let status = json!({"result": true, "msg": "Got cluster status.", "data": {
            "autoscalingStatus": "..", "autoscalingError": null, "clusterStatus": {
                "time": 1796604582.23, "loadMetricsReport": {"usageByNode": {
                    "54d4": {"CPU": [0.0, 2.0], "node:InternalHead": [0.0, 1.0]},
                    "c97f": {"CPU": [0.5, 2.0], "GPU": [1.0, 2.0], "gpuVramMb": [16000.0, 24000.0],
                             "memory": [0.0, 17134949172.0]}}}}}});
        let joined = join(nodes.to_string().as_bytes(), status.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(joined.len(), 2, "the dead node is left out");
        let gpu = &joined[1];
        assert_eq!(gpu.address, "127.0.0.2");
        assert_eq!(gpu.available["gpu_vram_mb"], 8000.0);
        assert_eq!(gpu.available["GPU"], 1.0);
        assert_eq!(gpu.available["CPU"], 1.5);
        assert_eq!(joined[0].available["node:__internal_head__"], 1.0);

        let silent = json!({"result": true, "data": {"clusterStatus": null}});
        assert_eq!(
            join(nodes.to_string().as_bytes(), silent.to_string().as_bytes()).unwrap(),
            None
        );
        assert!(join(b"{}", status.to_string().as_bytes()).is_err());
    }

    #[test]
    fn keys_are_camel_cased_as_ray_does() {
        assert_eq!(ray_camel_case("gpu_vram_mb"), "gpuVramMb");
        assert_eq!(ray_camel_case("object_store_memory"), "objectStoreMemory");
        assert_eq!(
            ray_camel_case("node:__internal_head__"),
            "node:InternalHead"
        );
        assert_eq!(ray_camel_case("GPU"), "GPU");
        assert_eq!(ray_camel_case("node:127.0.0.2"), "node:127.0.0.2");
        assert_eq!(
            ray_camel_case("accelerator_type:A100"),
            "acceleratorType:A100"
        );
    }
}
