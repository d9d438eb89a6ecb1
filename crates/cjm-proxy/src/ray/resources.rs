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
//! elsewhere) cannot say; the caller then evicts nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

/// Resource amounts closer than this are equal (Ray keeps 4 decimal places).
const EPSILON: f64 = 1e-4 / 2.0;

/// The resources that stopping a GPU worker gives back: GPUs, and the GPU memory the
/// host asks for as the custom resource `gpu_vram_mb`.
pub(crate) const GPU_RESOURCES: [&str; 2] = ["GPU", "gpu_vram_mb"];

/// One live node of the cluster: where it is, its labels and its resources.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeResources {
    /// Ray's node id.
    pub node_id: String,
    /// The node's IP address (what [`JobDetails::node_address`](super::JobDetails::node_address)
    /// gives for a job running there).
    pub address: String,
    /// The node's labels (`ray start --labels`).
    pub labels: BTreeMap<String, String>,
    /// Everything the node declared, by name.
    pub total: BTreeMap<String, f64>,
    /// What is not reserved, as of the monitor's last report.
    pub available: BTreeMap<String, f64>,
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

/// What a pending job asks of a node: resources by Ray's names, and labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Demand {
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) labels: BTreeMap<String, String>,
}

/// Why a pending job waits, as far as the cluster's resources say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Assessment {
    /// A node can take it now: Ray is about to start it (or the report is older than
    /// the resources it shows as taken).
    Fits,
    /// Every node that could ever take it lacks only GPU resources: by node address,
    /// how much of which.
    ShortOfGpu(BTreeMap<String, BTreeMap<String, f64>>),
    /// It waits for something stopping a GPU worker would not give (named).
    ShortOf(BTreeSet<String>),
    /// No node with its labels could ever hold it.
    NoNode,
}

impl Demand {
    pub(crate) fn assess(&self, nodes: &[NodeResources]) -> Assessment {
        let mut gpu_short = BTreeMap::new();
        let mut other_short = BTreeSet::new();
        for node in nodes.iter().filter(|node| self.labels_match(node)) {
            let never = self
                .resources
                .iter()
                .any(|(name, need)| node.total.get(name).copied().unwrap_or(0.0) + EPSILON < *need);
            if never {
                continue;
            }
            let deficit: BTreeMap<String, f64> = self
                .resources
                .iter()
                .filter_map(|(name, need)| {
                    let free = node.available.get(name).copied().unwrap_or(0.0);
                    (need - free > EPSILON).then(|| (name.clone(), need - free))
                })
                .collect();
            if deficit.is_empty() {
                return Assessment::Fits;
            }
            let (gpu, other): (Vec<&String>, Vec<&String>) = deficit
                .keys()
                .partition(|name| GPU_RESOURCES.contains(&name.as_str()));
            if other.is_empty() && !gpu.is_empty() {
                gpu_short.insert(node.address.clone(), deficit);
            } else {
                other_short.extend(other.into_iter().cloned());
            }
        }
        if !gpu_short.is_empty() {
            Assessment::ShortOfGpu(gpu_short)
        } else if !other_short.is_empty() {
            Assessment::ShortOf(other_short)
        } else {
            Assessment::NoNode
        }
    }

    /// Ray's label selector: `value`, `!value`, `in(a,b)`, `!in(a,b)`.
    fn labels_match(&self, node: &NodeResources) -> bool {
        self.labels.iter().all(|(key, wanted)| {
            let has = node.labels.get(key).map(String::as_str);
            let (negated, wanted) = match wanted.trim().strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, wanted.trim()),
            };
            let matches = match wanted
                .strip_prefix("in(")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                Some(list) => has.is_some_and(|has| list.split(',').any(|v| v.trim() == has)),
                None => has == Some(wanted),
            };
            matches != negated
        })
    }
}

/// What was free of the GPU resources on the nodes short of them, when a worker was
/// stopped to free some: the next eviction waits until a report shows more.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GpuSnapshot(BTreeMap<String, BTreeMap<String, f64>>);

impl GpuSnapshot {
    pub(crate) fn of(
        short: &BTreeMap<String, BTreeMap<String, f64>>,
        nodes: &[NodeResources],
    ) -> Self {
        let free = nodes
            .iter()
            .filter(|node| short.contains_key(&node.address))
            .map(|node| {
                let gpu = GPU_RESOURCES
                    .iter()
                    .map(|name| {
                        (
                            (*name).to_owned(),
                            node.available.get(*name).copied().unwrap_or(0.0),
                        )
                    })
                    .collect();
                (node.address.clone(), gpu)
            })
            .collect();
        GpuSnapshot(free)
    }

    /// Whether `nodes` show more of a GPU resource free on one of these nodes.
    pub(crate) fn freed_in(&self, nodes: &[NodeResources]) -> bool {
        nodes.iter().any(|node| {
            self.0.get(&node.address).is_some_and(|before| {
                before.iter().any(|(name, was)| {
                    node.available.get(name).copied().unwrap_or(0.0) > was + EPSILON
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(
        address: &str,
        labels: &[(&str, &str)],
        total: &[(&str, f64)],
        used: &[(&str, f64)],
    ) -> NodeResources {
        let total: BTreeMap<String, f64> =
            total.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        let available = total
            .iter()
            .map(|(name, amount)| {
                let in_use = used
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(0.0, |(_, v)| *v);
                (name.clone(), amount - in_use)
            })
            .collect();
        NodeResources {
            node_id: format!("id-{address}"),
            address: address.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            total,
            available,
        }
    }

    fn demand(resources: &[(&str, f64)], labels: &[(&str, &str)]) -> Demand {
        Demand {
            resources: resources
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

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

    #[test]
    fn a_job_short_only_of_gpu_memory_is_short_of_gpu_on_that_node() {
        let nodes = [
            node("10.0.0.1", &[("cjm-pool", "cpu")], &[("CPU", 8.0)], &[]),
            node(
                "10.0.0.2",
                &[("cjm-pool", "gpu")],
                &[("CPU", 2.0), ("GPU", 2.0), ("gpu_vram_mb", 24000.0)],
                &[("CPU", 0.5), ("GPU", 1.0), ("gpu_vram_mb", 16000.0)],
            ),
        ];
        let wants = demand(
            &[("CPU", 0.5), ("GPU", 1.0), ("gpu_vram_mb", 16000.0)],
            &[("cjm-pool", "gpu")],
        );
        let Assessment::ShortOfGpu(short) = wants.assess(&nodes) else {
            panic!("{:?}", wants.assess(&nodes))
        };
        assert_eq!(short.len(), 1);
        assert_eq!(
            short["10.0.0.2"],
            BTreeMap::from([(String::from("gpu_vram_mb"), 8000.0)])
        );

        // Short of CPU as well on the only node: a GPU eviction alone would not do.
        let busy_cpu = [node(
            "10.0.0.2",
            &[("cjm-pool", "gpu")],
            &[("CPU", 2.0), ("GPU", 2.0), ("gpu_vram_mb", 24000.0)],
            &[("CPU", 2.0), ("gpu_vram_mb", 16000.0)],
        )];
        assert_eq!(
            wants.assess(&busy_cpu),
            Assessment::ShortOf(BTreeSet::from([String::from("CPU")]))
        );
        // A node that could never hold it (too little VRAM in all) is not counted.
        let small = [node(
            "10.0.0.3",
            &[("cjm-pool", "gpu")],
            &[("CPU", 2.0), ("GPU", 1.0), ("gpu_vram_mb", 8000.0)],
            &[],
        )];
        assert_eq!(wants.assess(&small), Assessment::NoNode);
        // Room somewhere: it fits.
        let free = [node(
            "10.0.0.2",
            &[("cjm-pool", "gpu")],
            &[("CPU", 2.0), ("GPU", 2.0), ("gpu_vram_mb", 24000.0)],
            &[],
        )];
        assert_eq!(wants.assess(&free), Assessment::Fits);
    }

    #[test]
    fn label_selectors_follow_rays_forms() {
        let gpu = node("a", &[("pool", "gpu"), ("zone", "b")], &[("CPU", 1.0)], &[]);
        for (selector, matches) in [
            ("gpu", true),
            ("cpu", false),
            ("!cpu", true),
            ("!gpu", false),
            ("in(cpu, gpu)", true),
            ("in(cpu)", false),
            ("!in(cpu,tpu)", true),
            ("!in(gpu)", false),
        ] {
            assert_eq!(
                demand(&[("CPU", 1.0)], &[("pool", selector)]).labels_match(&gpu),
                matches,
                "{selector}"
            );
        }
        assert!(!demand(&[], &[("missing", "x")]).labels_match(&gpu));
        assert!(demand(&[], &[("missing", "!x")]).labels_match(&gpu));
    }

    #[test]
    fn a_snapshot_sees_gpu_memory_freed_on_its_nodes_only() {
        let before = [
            node(
                "g",
                &[],
                &[("GPU", 2.0), ("gpu_vram_mb", 24000.0)],
                &[("GPU", 2.0), ("gpu_vram_mb", 24000.0)],
            ),
            node(
                "h",
                &[],
                &[("gpu_vram_mb", 8000.0)],
                &[("gpu_vram_mb", 8000.0)],
            ),
        ];
        let short = BTreeMap::from([(String::from("g"), BTreeMap::new())]);
        let snapshot = GpuSnapshot::of(&short, &before);
        assert!(!snapshot.freed_in(&before));
        let elsewhere = [
            before[0].clone(),
            node("h", &[], &[("gpu_vram_mb", 8000.0)], &[]),
        ];
        assert!(
            !snapshot.freed_in(&elsewhere),
            "another node's memory is not ours"
        );
        let freed = [node(
            "g",
            &[],
            &[("GPU", 2.0), ("gpu_vram_mb", 24000.0)],
            &[("GPU", 1.0), ("gpu_vram_mb", 12000.0)],
        )];
        assert!(snapshot.freed_in(&freed));
    }
}
