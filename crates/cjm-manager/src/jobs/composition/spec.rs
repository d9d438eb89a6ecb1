//! What a composition is, as its submitter writes it: nodes, their inputs (values, or
//! an upstream node's output), and the checks made before anything runs.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Deserialize;
use serde_json::Value;

/// A DAG of plugin calls submitted as one unit
/// ([`Jobs::submit_composition`](crate::jobs::Jobs::submit_composition)). A node's
/// job is created once the nodes whose outputs it takes have succeeded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Composition {
    /// The nodes; their order is the order in which nodes ready at once are queued.
    pub nodes: Vec<CompositionNode>,
    /// On a failed or cancelled node, skip every node not started yet and cancel the
    /// queued ones (nodes running go on to their end); off: only the failed node's
    /// dependents are skipped (default true, as the original's).
    #[serde(default = "yes")]
    pub fail_fast: bool,
    /// The priority of nodes that name none (default 0).
    #[serde(default)]
    pub priority: i32,
}

fn yes() -> bool {
    true
}

impl Composition {
    /// A composition of `nodes`, failing fast, at priority 0.
    pub fn new(nodes: Vec<CompositionNode>) -> Self {
        Composition {
            nodes,
            fail_fast: true,
            priority: 0,
        }
    }

    /// Whether a failed node stops the nodes that do not depend on it.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// The priority of nodes that name none.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
}

/// One plugin call in a [`Composition`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawNode")]
#[non_exhaustive]
pub struct CompositionNode {
    /// Unique within the composition.
    pub id: String,
    /// The plugin it calls.
    pub plugin: String,
    /// Positional arguments.
    pub args: Vec<Input>,
    /// Keyword arguments.
    pub kwargs: BTreeMap<String, Input>,
    /// Its job's priority; `None`: the composition's.
    pub priority: Option<i32>,
    /// What it calls on the plugin.
    pub target: NodeTarget,
}

impl CompositionNode {
    /// A node `id` calling `plugin`'s `execute`, with no arguments yet.
    pub fn new(id: impl Into<String>, plugin: impl Into<String>) -> Self {
        CompositionNode {
            id: id.into(),
            plugin: plugin.into(),
            args: Vec::new(),
            kwargs: BTreeMap::new(),
            priority: None,
            target: NodeTarget::Execute,
        }
    }

    /// With positional argument `input` after those given so far.
    pub fn arg(mut self, input: impl Into<Input>) -> Self {
        self.args.push(input.into());
        self
    }

    /// With keyword argument `name`.
    pub fn kwarg(mut self, name: impl Into<String>, input: impl Into<Input>) -> Self {
        self.kwargs.insert(name.into(), input.into());
        self
    }

    /// At `priority`.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Calling `method` of the plugin's adapter for `task`.
    pub fn task(mut self, task: impl Into<String>, method: impl Into<String>) -> Self {
        self.target = NodeTarget::Task {
            task: task.into(),
            method: method.into(),
        };
        self
    }

    /// The nodes whose outputs it takes, each once, in the order first named.
    pub fn inputs_from(&self) -> Vec<&str> {
        let mut from: Vec<&str> = Vec::new();
        for input in self.args.iter().chain(self.kwargs.values()) {
            if let Input::Output(output) = input {
                if !from.contains(&output.node.as_str()) {
                    from.push(&output.node);
                }
            }
        }
        from
    }
}

/// What a node calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeTarget {
    /// The plugin's `execute`.
    Execute,
    /// A method of one of the plugin's task adapters (`/task`).
    Task {
        /// The task (the adapter's `task_name`).
        task: String,
        /// The method.
        method: String,
    },
}

/// A node's argument: a value given at submission, or an upstream node's output.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Passed as it is.
    Value(Value),
    /// Bound, once that node has succeeded, to its result (or one field of it).
    Output(OutputRef),
}

impl<T: Into<Value>> From<T> for Input {
    fn from(value: T) -> Self {
        Input::Value(value.into())
    }
}

impl From<OutputRef> for Input {
    fn from(output: OutputRef) -> Self {
        Input::Output(output)
    }
}

/// The key that marks an [`OutputRef`] where a composition is read from JSON or
/// YAML: `{"$output": "node"}` or `{"$output": "node", "field": "name"}`.
pub const OUTPUT_KEY: &str = "$output";

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Input::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl Input {
    /// `value`, read as an [`OutputRef`] where it is an object with the key
    /// [`OUTPUT_KEY`] (and at most `field` beside it).
    pub fn from_value(value: Value) -> Result<Input, String> {
        let Value::Object(map) = &value else {
            return Ok(Input::Value(value));
        };
        let Some(node) = map.get(OUTPUT_KEY) else {
            return Ok(Input::Value(value));
        };
        let Value::String(node) = node else {
            return Err(format!("'{OUTPUT_KEY}' must name a node, got {node}"));
        };
        let field = match map.get("field") {
            None | Some(Value::Null) => None,
            Some(Value::String(field)) => Some(field.clone()),
            Some(other) => return Err(format!("'field' must be a string, got {other}")),
        };
        if let Some(extra) = map.keys().find(|key| *key != OUTPUT_KEY && *key != "field") {
            return Err(format!(
                "an output reference has '{OUTPUT_KEY}' and 'field' only, not '{extra}'"
            ));
        }
        Ok(Input::Output(OutputRef {
            node: node.clone(),
            field,
        }))
    }
}

/// An upstream node's result, or one field of it (a key of its JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputRef {
    /// The node that produces it.
    pub node: String,
    /// `None`: the whole result.
    pub field: Option<String>,
}

impl OutputRef {
    /// Node `node`'s whole result.
    pub fn whole(node: impl Into<String>) -> Self {
        OutputRef {
            node: node.into(),
            field: None,
        }
    }

    /// Field `field` of node `node`'s result.
    pub fn field(node: impl Into<String>, field: impl Into<String>) -> Self {
        OutputRef {
            node: node.into(),
            field: Some(field.into()),
        }
    }
}

/// A node as written in a file: the task's two names side by side, as the original
/// writes them (`task_name`, `method`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    plugin: String,
    #[serde(default)]
    args: Vec<Input>,
    #[serde(default)]
    kwargs: BTreeMap<String, Input>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default, alias = "task_name")]
    task: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

impl TryFrom<RawNode> for CompositionNode {
    type Error = String;

    fn try_from(raw: RawNode) -> Result<Self, String> {
        let target = match (raw.task, raw.method) {
            (None, None) => NodeTarget::Execute,
            (Some(task), Some(method)) => NodeTarget::Task { task, method },
            _ => {
                return Err(format!(
                    "node '{}': 'task' and 'method' go together (one names the other)",
                    raw.id
                ))
            }
        };
        Ok(CompositionNode {
            id: raw.id,
            plugin: raw.plugin,
            args: raw.args,
            kwargs: raw.kwargs,
            priority: raw.priority,
            target,
        })
    }
}

/// Why a composition was refused at submission. Each names the node at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompositionError {
    /// Two nodes have one id.
    #[error("composition: node id '{node}' is used twice")]
    DuplicateNode {
        /// The id.
        node: String,
    },
    /// A node takes the output of a node that is not in the composition.
    #[error(
        "composition: node '{node}' takes the output of '{missing}', which is not a node of it"
    )]
    UnknownReference {
        /// The node that names it.
        node: String,
        /// The name it gives.
        missing: String,
    },
    /// Nodes take each other's outputs in a circle.
    #[error("composition: node '{node}' depends on itself (a cycle: {})", cycle.join(" -> "))]
    Cycle {
        /// A node on the cycle.
        node: String,
        /// The cycle, from `node` back to it.
        cycle: Vec<String>,
    },
    /// A node calls a plugin that is not loaded.
    #[error("composition: node '{node}' calls plugin '{plugin}', which is not loaded")]
    NotLoaded {
        /// The node.
        node: String,
        /// Its plugin.
        plugin: String,
    },
    /// A node calls a plugin that is disabled.
    #[error("composition: node '{node}' calls plugin '{plugin}', which is disabled")]
    Disabled {
        /// The node.
        node: String,
        /// Its plugin.
        plugin: String,
    },
}

/// The nodes' dependencies, checked: no duplicate ids, no reference to a node that
/// is not there, no cycle. For each node (by index), the indices of the nodes whose
/// outputs it takes.
pub(crate) fn dependencies(nodes: &[CompositionNode]) -> Result<Vec<Vec<usize>>, CompositionError> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (at, node) in nodes.iter().enumerate() {
        if index.insert(node.id.as_str(), at).is_some() {
            return Err(CompositionError::DuplicateNode {
                node: node.id.clone(),
            });
        }
    }
    let mut deps = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut from = Vec::new();
        for name in node.inputs_from() {
            let Some(&at) = index.get(name) else {
                return Err(CompositionError::UnknownReference {
                    node: node.id.clone(),
                    missing: name.to_owned(),
                });
            };
            from.push(at);
        }
        deps.push(from);
    }
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<String> = cycle.iter().map(|&at| nodes[at].id.clone()).collect();
        return Err(CompositionError::Cycle {
            node: names[0].clone(),
            cycle: names,
        });
    }
    Ok(deps)
}

/// A cycle of the graph (`deps[n]`: the nodes n takes from), as the nodes along it
/// from one back to itself; `None` when it is acyclic. Kahn's peeling finds whether;
/// a walk along the unpeeled nodes' dependencies finds which.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); deps.len()];
    for (node, from) in deps.iter().enumerate() {
        for &dep in from {
            dependents[dep].push(node);
        }
    }
    let mut ready: VecDeque<usize> = (0..deps.len()).filter(|&n| waiting[n] == 0).collect();
    let mut peeled = vec![false; deps.len()];
    while let Some(node) = ready.pop_front() {
        peeled[node] = true;
        for &next in &dependents[node] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push_back(next);
            }
        }
    }
    let start = (0..deps.len()).find(|&n| !peeled[n])?;
    // Every unpeeled node has an unpeeled dependency: walking them must come back
    // around; the first node seen twice closes the cycle.
    let mut seen_at: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut node = start;
    loop {
        if let Some(&at) = seen_at.get(&node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        seen_at.insert(node, path.len());
        path.push(node);
        node = *deps[node].iter().find(|&&dep| !peeled[dep])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, from: &[&str]) -> CompositionNode {
        from.iter()
            .fold(CompositionNode::new(id, "p"), |node, dep| {
                node.kwarg(format!("from_{dep}"), OutputRef::whole(*dep))
            })
    }

    #[test]
    fn a_fan_in_is_accepted_with_its_dependencies() {
        let deps = dependencies(&[node("a", &[]), node("b", &[]), node("c", &["a", "b"])]).unwrap();
        assert_eq!(deps, [vec![], vec![], vec![0, 1]]);
    }

    #[test]
    fn duplicates_unknown_references_and_cycles_are_refused_naming_the_node() {
        assert_eq!(
            dependencies(&[node("a", &[]), node("a", &[])]),
            Err(CompositionError::DuplicateNode { node: "a".into() })
        );
        assert_eq!(
            dependencies(&[node("a", &["zz"])]),
            Err(CompositionError::UnknownReference {
                node: "a".into(),
                missing: "zz".into()
            })
        );
        let err = dependencies(&[
            node("x", &[]),
            node("a", &["c"]),
            node("b", &["a"]),
            node("c", &["b", "x"]),
        ])
        .unwrap_err();
        let CompositionError::Cycle { cycle, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        assert!(err.to_string().contains("->"), "{err}");
        let err = dependencies(&[node("self", &["self"])]).unwrap_err();
        assert!(matches!(err, CompositionError::Cycle { ref node, .. } if node == "self"));
    }

    #[test]
    fn output_references_are_read_from_json_and_bad_ones_refused() {
        let node: CompositionNode = serde_json::from_value(json!({
            "id": "count",
            "plugin": "cjm-wordcount",
            "args": [{"$output": "write"}],
            "kwargs": {"file_path": {"$output": "write", "field": "written_to"}, "plain": {"a": 1}},
        }))
        .unwrap();
        assert_eq!(node.args, [Input::Output(OutputRef::whole("write"))]);
        assert_eq!(
            node.kwargs["file_path"],
            Input::Output(OutputRef::field("write", "written_to"))
        );
        assert_eq!(node.kwargs["plain"], Input::Value(json!({"a": 1})));
        assert_eq!(node.inputs_from(), ["write"]);
        for bad in [
            json!({"id": "n", "plugin": "p", "kwargs": {"x": {"$output": 3}}}),
            json!({"id": "n", "plugin": "p", "kwargs": {"x": {"$output": "a", "other": 1}}}),
            json!({"id": "n", "plugin": "p", "task": "t"}),
            json!({"id": "n", "plugin": "p", "unknown": 1}),
        ] {
            assert!(
                serde_json::from_value::<CompositionNode>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let task: CompositionNode = serde_json::from_value(
            json!({"id": "n", "plugin": "p", "task_name": "t", "method": "m"}),
        )
        .unwrap();
        assert_eq!(
            task.target,
            NodeTarget::Task {
                task: "t".into(),
                method: "m".into()
            }
        );
    }
}
