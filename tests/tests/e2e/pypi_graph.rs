//! Task adapters with a real plugin from PyPI: cjm-graph-plugin-sqlite 0.0.24 (a
//! 0.0.46 `ToolCapability`, a graph store over SQLite) and the generic graph-storage
//! adapter of cjm-graph-storage-adapter-interface 0.0.6. Their manifests come from
//! the original's own installer code; our host discovers both, binds the adapter in
//! the tool's worker and calls the task's methods over `/task`: directly, as jobs, and
//! through `cjm-ctl task`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cjm_manager::jobs::{job_accounts, JobOptions, JobState, Jobs, TaskCall};
use cjm_manager::{
    CallArgs, CallOutput, ErrorCategory, ManagerError, PluginManager, ProxyError, TaskServer,
    TypedResult,
};
use serde_json::{json, Value};

use crate::common::*;
use crate::python_env;

const TOOL: &str = "cjm-graph-plugin-sqlite";
const TASK: &str = "graph-storage";
const ADAPTER: &str = "cjm_graph_storage_adapter_interface.generic.GenericGraphStorageAdapter";
const ADAPTER_SPEC: &str = "cjm_graph_storage_adapter_interface.generic:GenericGraphStorageAdapter";

/// Generate the tool's and the adapter's manifests into the home's plugin folder with
/// the original's installer code (its introspection runs `conda run -n ENV python ..`,
/// so a `conda` that runs the graph venv's Python goes first on PATH). Returns the
/// original's own verdict of whether the adapter fits the tool.
fn generate_manifests(home: &TestHome) -> Value {
    let path = python_env::path_with_conda_shim(home, python_env::python_graph());
    let script =
        python_env::workspace_root().join("tests/fixtures/pypi_graph/generate_graph_manifests.py");
    let out = Command::new(python_env::python_graph())
        .arg(script)
        .arg(home.plugins_dir())
        .env("PATH", path)
        .env("HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    report["verdict"].clone()
}

fn node(id: &str, label: &str, properties: Value) -> Value {
    json!({"id": id, "label": label, "properties": properties, "sources": []})
}

/// The typed result of a call, as the original's `wire_decode` would see it.
fn typed(value: Value) -> TypedResult {
    match CallOutput::from_value(value) {
        CallOutput::Typed(result) => result,
        CallOutput::Plain(value) => panic!("not a typed result: {value}"),
    }
}

async fn call(manager: &PluginManager, method: &str, kwargs: Value) -> Value {
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object")
    };
    manager
        .execute_task(TOOL, TASK, method, CallArgs::from_json(Vec::new(), kwargs))
        .await
        .unwrap_or_else(|err| panic!("{method}: {err}"))
}

/// A call whose result is one of the original's typed DTOs, decoded by our host.
async fn call_typed(manager: &PluginManager, method: &str, kwargs: Value) -> TypedResult {
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object")
    };
    match manager
        .execute_task_output(TOOL, TASK, method, CallArgs::from_json(Vec::new(), kwargs))
        .await
        .unwrap_or_else(|err| panic!("{method}: {err}"))
    {
        CallOutput::Typed(result) => result,
        CallOutput::Plain(value) => panic!("{method}: not a typed result: {value}"),
    }
}

fn database(home: &TestHome) -> std::path::PathBuf {
    home.path()
        .join("plugin_data")
        .join(TOOL)
        .join("context_graph.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypi_graph_our_host_binds_the_real_adapter_and_calls_graph_storage() {
    let home = TestHome::new();
    let original_verdict = generate_manifests(&home);
    let manager = home.manager();
    manager.discover_manifests();
    assert!(
        manager.discovery_problems().is_empty(),
        "{:?}",
        manager.discovery_problems()
    );

    // Which adapter fits the tool: ours says what the original says.
    let adapters = manager.adapter_manifests();
    assert_eq!(adapters.len(), 1, "{adapters:?}");
    assert_eq!(adapters[0].task_name, TASK);
    let verdict = manager.check_adapter_compatibility(ADAPTER, TOOL).unwrap();
    assert!(verdict.compatible, "{verdict:?}");
    assert_eq!(serde_json::to_value(&verdict).unwrap(), original_verdict);
    let protocol: Vec<&str> = adapters[0].protocol_members["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|method| method["name"].as_str().unwrap())
        .collect();
    assert_eq!(protocol.len(), 18, "{protocol:?}");
    assert!(protocol.contains(&"add_nodes") && protocol.contains(&"query_nodes"));
    eprintln!(
        "{ADAPTER} fits {TOOL}: its protocol's {} methods {protocol:?} are on the tool's \
         recorded surface with their parameters as a prefix",
        protocol.len()
    );
    assert_eq!(
        manager
            .matched_adapters(TOOL)
            .into_iter()
            .map(|adapter| adapter.name)
            .collect::<Vec<_>>(),
        [ADAPTER]
    );
    assert_eq!(
        manager.capabilities_for_task(TASK),
        [TaskServer {
            plugin: TOOL.to_owned(),
            adapter: Some(ADAPTER.to_owned())
        }]
    );

    // Our host starts the tool's worker with the adapter bound.
    manager.load_plugin(TOOL, None).await.unwrap();
    let pid = manager.worker_info(TOOL).unwrap().pid;
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|&byte| byte == 0)
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    assert!(
        argv.windows(2)
            .any(|pair| pair == ["--adapters", ADAPTER_SPEC]),
        "{argv:?}"
    );

    // Create: wire dicts in, the created ids out.
    let title = json!({"title": "Field notes, naïve ✓", "pages": 12, "tags": ["a", "b"], "meta": {"lang": "en", "score": 0.5}});
    let ids = call(
        &manager,
        "add_nodes",
        json!({"nodes": [
            node("doc-1", "Document", title.clone()),
            node("seg-1", "Segment", json!({"index": 1, "text": "first"})),
            node("seg-2", "Segment", json!({"index": 2, "text": "second"})),
        ]}),
    )
    .await;
    assert_eq!(ids, json!(["doc-1", "seg-1", "seg-2"]));
    let ids = call(
        &manager,
        "add_edges",
        json!({"edges": [
            {"id": "e-1", "source_id": "seg-1", "target_id": "doc-1",
             "relation_type": "PART_OF", "properties": {"weight": 0.75}},
            {"id": "e-2", "source_id": "seg-2", "target_id": "doc-1",
             "relation_type": "PART_OF", "properties": {}},
        ]}),
    )
    .await;
    assert_eq!(ids, json!(["e-1", "e-2"]));

    // Point reads come back as typed DTOs (`graph.node`, `graph.edge`).
    let doc = call_typed(&manager, "get_node", json!({"node_id": "doc-1"})).await;
    assert_eq!(doc.kind, "graph.node");
    assert_eq!(doc.data["id"], "doc-1");
    assert_eq!(doc.data["label"], "Document");
    assert_eq!(doc.data["properties"], title);
    assert!(doc.data["created_at"].is_f64(), "{doc:?}");
    let edge = call_typed(&manager, "get_edge", json!({"edge_id": "e-1"})).await;
    assert_eq!(edge.kind, "graph.edge");
    assert_eq!(
        (
            &edge.data["source_id"],
            &edge.data["target_id"],
            &edge.data["properties"]
        ),
        (&json!("seg-1"), &json!("doc-1"), &json!({"weight": 0.75}))
    );
    assert_eq!(
        call(&manager, "get_node", json!({"node_id": "nope"})).await,
        Value::Null
    );

    // Typed queries: a node query (ordered, filtered), a count, an edge query, a
    // neighbourhood, and the raw escape.
    let found = call_typed(
        &manager,
        "query_nodes",
        json!({"query": {"type": "node_query", "label": "Segment",
                             "where": [{"prop": "index", "op": "ge", "value": 1}],
                             "order_by": {"prop": "index", "descending": true}}}),
    )
    .await;
    assert_eq!(found.kind, "graph.node_query_result");
    let found_ids: Vec<&str> = found.data["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["id"].as_str().unwrap())
        .collect();
    assert_eq!(found_ids, ["seg-2", "seg-1"]);
    let counted = call_typed(
        &manager,
        "query_nodes",
        json!({"query": {"type": "node_query", "related":
                {"relation_type": "PART_OF", "direction": "out", "node_id": "doc-1"},
                "count": true}}),
    )
    .await;
    assert_eq!(counted.data["count"], 2, "{counted:?}");
    let edges = call_typed(
        &manager,
        "query_edges",
        json!({"query": {"type": "edge_query", "relation_type": "PART_OF",
                             "where": [{"prop": "weight", "op": "gt", "value": 0.5}]}}),
    )
    .await;
    assert_eq!(edges.kind, "graph.edge_query_result");
    assert_eq!(edges.data["edges"][0]["id"], "e-1", "{edges:?}");
    assert_eq!(edges.data["edges"].as_array().unwrap().len(), 1);
    let context = call_typed(
        &manager,
        "get_context",
        json!({"node_id": "doc-1", "depth": 1}),
    )
    .await;
    assert_eq!(context.kind, "graph.context");
    assert_eq!(context.data["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(context.data["edges"].as_array().unwrap().len(), 2);
    let raw = call_typed(
            &manager,
            "raw_query",
            json!({"query": {"type": "raw_query", "backend": "sqlite",
                             "text": "SELECT label, COUNT(*) FROM nodes GROUP BY label ORDER BY label"}}),
    )
    .await;
    assert_eq!(raw.kind, "graph.raw_query_result");
    assert_eq!(raw.data["rows"], json!([["Document", 1], ["Segment", 2]]));
    // An untyped list of DTOs comes as plain JSON.
    let labelled = call(
        &manager,
        "find_nodes_by_label",
        json!({"label": "Document"}),
    )
    .await;
    assert!(matches!(
        CallOutput::from_value(labelled.clone()),
        CallOutput::Plain(_)
    ));
    assert_eq!(labelled[0]["properties"], title);

    // Update, delete, and the store still whole.
    assert_eq!(
        call(
            &manager,
            "update_node",
            json!({"node_id": "doc-1", "properties": {"pages": 13}}),
        )
        .await,
        json!(true)
    );
    let doc = call_typed(&manager, "get_node", json!({"node_id": "doc-1"})).await;
    assert_eq!(doc.data["properties"]["pages"], 13);
    assert_eq!(doc.data["properties"]["title"], "Field notes, naïve ✓");
    assert_eq!(
        call(&manager, "delete_edges", json!({"edge_ids": ["e-2"]})).await,
        json!(1)
    );
    assert_eq!(
        call(&manager, "delete_nodes", json!({"node_ids": ["seg-1"]})).await,
        json!(1)
    );
    assert_eq!(
        call(&manager, "get_edge", json!({"edge_id": "e-1"})).await,
        Value::Null,
        "cascade deletes the node's edges"
    );
    assert_eq!(
        call(&manager, "get_schema", json!({})).await["counts"],
        json!({"Document": 1, "Segment": 1})
    );
    let health = call(&manager, "integrity_check", json!({})).await;
    assert_eq!(
        health,
        json!({"ok": true, "errors": [], "backend": "sqlite"})
    );

    // What the adapter does not serve: our typed 404, naming what is bound. `query`
    // is on the tool but not on the graph-storage contract.
    for (task, method) in [
        (TASK, "drop_everything"),
        (TASK, "query"),
        ("vector-search", "add_nodes"),
    ] {
        let err = manager
            .execute_task(TOOL, task, method, CallArgs::new())
            .await
            .unwrap_err();
        match &err {
            ManagerError::Plugin(ProxyError::UnknownTask {
                task: asked,
                method: asked_method,
                detail,
                ..
            }) => {
                assert_eq!((asked.as_str(), asked_method.as_str()), (task, method));
                assert!(detail.contains(method) || detail.contains(task), "{detail}");
            }
            other => panic!("{task} {method}: {other:?}"),
        }
    }
    // The plugin's own typed error for a bad argument: the caller's mistake.
    let err = manager
        .execute_task(
            TOOL,
            TASK,
            "raw_query",
            CallArgs::new().kwarg(
                "query",
                json!({"type": "raw_query", "backend": "postgres", "text": "SELECT 1"}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.category(), Some(ErrorCategory::UserInput), "{err:?}");
    assert!(err.to_string().contains("postgres"), "{err}");

    // The store is the plugin's, in its data folder under this CJM_HOME.
    assert!(database(&home).is_file(), "{}", database(&home).display());
    let by_id = call_typed(
        &manager,
        "query_nodes",
        json!({"query": {"type": "node_query", "ids": ["doc-1"]}}),
    )
    .await;
    manager.shutdown().await;

    // The original's own host reads the same store: the DTOs it decodes (with the
    // interface library imported) are, field for field, what ours gave as typed data.
    let theirs = original_reads(&home, "doc-1");
    assert_eq!(theirs["adapters"], json!([ADAPTER]), "{theirs}");
    assert_eq!(theirs["get_node"]["class"], "GraphNode", "{theirs}");
    assert_eq!(theirs["get_node"]["data"], doc.data);
    assert_eq!(
        theirs["query_nodes"]["class"], "NodeQueryResult",
        "{theirs}"
    );
    assert_eq!(theirs["query_nodes"]["data"], by_id.data);
}

/// What the original 0.0.46's PluginManager decodes reading node `id` from the
/// store our host wrote (tests/fixtures/pypi_graph/original_graph_host.py).
fn original_reads(home: &TestHome, id: &str) -> Value {
    let script =
        python_env::workspace_root().join("tests/fixtures/pypi_graph/original_graph_host.py");
    let out = Command::new(python_env::python_graph())
        .arg(script)
        .arg(home.plugins_dir())
        .arg(database(home))
        .arg(id)
        .env("HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypi_graph_storage_calls_run_as_jobs_with_their_accounts() {
    let home = TestHome::new();
    generate_manifests(&home);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin(TOOL, None).await.unwrap();
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default()
            .journal(&journal)
            .progress_poll(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let run = |method: &str, kwargs: Value| {
        let Value::Object(kwargs) = kwargs else {
            panic!("kwargs must be an object")
        };
        jobs.submit_task(
            TOOL,
            TaskCall::new(TASK, method),
            CallArgs::from_json(Vec::new(), kwargs),
            0,
        )
        .unwrap()
    };
    let added = run(
        "add_nodes",
        json!({"nodes": [node("job-node", "Note", json!({"body": "kept by a job"}))]}),
    );
    let added_id = jobs.journal_id(added).unwrap();
    let ended = jobs.wait(added).await.unwrap();
    assert_eq!(ended.result, Some(json!(["job-node"])), "{ended:?}");
    let fetched = run("get_node", json!({"node_id": "job-node"}));
    let ended = jobs.wait(fetched).await.unwrap();
    let node = typed(ended.result.unwrap());
    assert_eq!(node.kind, "graph.node");
    assert_eq!(node.data["properties"], json!({"body": "kept by a job"}));

    jobs.sync_journal().await;
    let accounts = job_accounts(&journal, &added_id).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].event_type, "task_account");
    assert_eq!(accounts[0].payload["method"], "add_nodes");
    assert_eq!(accounts[0].payload["ok"], true);

    // A bad argument fails the job with the plugin's category.
    let refused = run(
        "import_graph",
        json!({"graph_data": {"nodes": [], "edges": []}, "merge_strategy": "replace-all"}),
    );
    let ended = jobs.wait(refused).await.unwrap();
    assert_eq!(ended.status.state, JobState::Failed, "{ended:?}");
    assert_eq!(
        ended.status.failure.unwrap().category,
        ErrorCategory::UserInput
    );
    jobs.shutdown().await;
    manager.shutdown().await;
}

fn ctl_task(home: &TestHome, method: &str, kwargs: &str) -> Output {
    Command::new(CTL)
        .args(["task", TOOL, TASK, method, "--kwargs", kwargs])
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn printed(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("{err}: {out:?}"))
}

#[test]
fn pypi_graph_cjm_ctl_task_calls_the_real_adapter() {
    let home = TestHome::new();
    generate_manifests(&home);
    // Each run is its own host and worker; the graph stays in the plugin's data folder
    // between them.
    let added = ctl_task(
        &home,
        "add_nodes",
        r#"{"nodes": [{"id": "ctl-1", "label": "Note", "properties": {"n": 1}, "sources": []}]}"#,
    );
    assert_eq!(printed(&added), json!(["ctl-1"]));
    assert!(Path::new(&database(&home)).is_file());
    let fetched = ctl_task(&home, "get_node", r#"{"node_id": "ctl-1"}"#);
    let node = typed(printed(&fetched));
    assert_eq!(
        (node.kind.as_str(), &node.data["properties"]),
        ("graph.node", &json!({"n": 1}))
    );
    let unknown = ctl_task(&home, "drop_everything", "{}");
    assert_eq!(unknown.status.code(), Some(65), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("drop_everything"),
        "{unknown:?}"
    );
}
