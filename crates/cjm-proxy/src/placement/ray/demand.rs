//! What a pending Ray job waits for, and whether stopping an idle GPU worker would
//! give it: the placement's decisions from what the cluster reports
//! ([`RayClient::cluster_resources`](cjm_ray::RayClient::cluster_resources)). A
//! cluster that cannot say what is free where gets no worker stopped for it.

use std::collections::{BTreeMap, BTreeSet};

use cjm_ray::NodeResources;

/// Resource amounts closer than this are equal (Ray keeps 4 decimal places).
const EPSILON: f64 = 1e-4 / 2.0;

/// The resources that stopping a GPU worker gives back: GPUs, and the GPU memory the
/// host asks for as the custom resource `gpu_vram_mb`.
const GPU_RESOURCES: [&str; 2] = ["GPU", "gpu_vram_mb"];

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
        NodeResources::new(
            format!("id-{address}"),
            address,
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            total,
            available,
        )
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
