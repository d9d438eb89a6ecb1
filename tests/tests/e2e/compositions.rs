//! Compositions with real workers: a fan-in whose inputs are other nodes' outputs, a
//! failure that skips its dependents, a cancel mid-way, the journal's record of them;
//! and `cjm-ctl run` on the example pipeline, a failing one and a Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cjm_manager::jobs::{
    job_accounts, recent_compositions, Cancellation, Composition, CompositionChange,
    CompositionNode, CompositionState, JobChange, JobOptions, JobState, Jobs, NodeState, OutputRef,
};
use cjm_manager::ErrorCategory;
use serde_json::{json, Value};

use crate::common::*;

fn home() -> TestHome {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    home.installed_manifest("cjm-echo", ECHO, &[]);
    home.native_manifest("faulty", FAULTY, &[]);
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_in_a_failure_and_a_cancel_with_real_workers() {
    let home = home();
    let manager = home.manager();
    manager.discover_manifests();
    for plugin in ["cjm-echo", "cjm-wordcount", "faulty"] {
        manager.load_plugin(plugin, None).await.unwrap();
    }
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default()
            .journal(journal.clone())
            .concurrency("cjm-echo", 2),
    )
    .await
    .unwrap();
    let written = home.path().join("words.txt");

    // A fan-in: `fold` takes three nodes' outputs, one of them itself downstream of
    // another (write -> count).
    let fan_in = jobs
        .submit_composition(Composition::new(vec![
            CompositionNode::new("write", "cjm-echo")
                .kwarg("text", "one two three ")
                .kwarg("repeat", 2)
                .kwarg("write_to", written.to_str().unwrap()),
            CompositionNode::new("count", "cjm-wordcount")
                .kwarg("file_path", OutputRef::field("write", "written_to")),
            CompositionNode::new("greet", "cjm-echo").kwarg("text", "hi "),
            CompositionNode::new("fold", "cjm-echo")
                .kwarg("text", OutputRef::field("greet", "result"))
                .kwarg("repeat", OutputRef::field("count", "words"))
                .kwarg("file_path", OutputRef::field("write", "written_to")),
        ]))
        .unwrap();
    let ended = jobs.wait_for_composition(fan_in).await.unwrap();
    assert_eq!(ended.state, CompositionState::Succeeded, "{ended:?}");
    assert_eq!(
        ended.node("count").unwrap().result.as_ref().unwrap()["words"],
        6
    );
    let fold = ended.node("fold").unwrap().result.clone().unwrap();
    assert_eq!(fold["result"], json!("hi ".repeat(6)));
    assert_eq!(
        fold["file_content_read"],
        json!("one two three one two three ")
    );

    // A failure: its dependent is skipped and never gets a job; the composition fails
    // with the failed node's category.
    let failing = jobs
        .submit_composition(Composition::new(vec![
            CompositionNode::new("bad", "faulty").arg("resource"),
            CompositionNode::new("after", "cjm-echo")
                .kwarg("text", OutputRef::field("bad", "anything")),
        ]))
        .unwrap();
    let ended = jobs.wait_for_composition(failing).await.unwrap();
    assert_eq!(ended.state, CompositionState::Failed);
    let (node, failure) = ended.first_failure().unwrap();
    assert_eq!(node.id, "bad");
    assert_eq!(failure.category, ErrorCategory::Resource);
    let after = ended.node("after").unwrap();
    assert_eq!((after.state, after.job), (NodeState::Skipped, None));

    // A cancel mid-way: the running member is asked to stop (and does), the node
    // after it is skipped.
    let cancelled = jobs
        .submit_composition(Composition::new(vec![
            CompositionNode::new("long", "faulty")
                .arg("steps")
                .arg(100_000)
                .arg(20),
            CompositionNode::new("then", "cjm-echo")
                .kwarg("text", OutputRef::field("long", "steps")),
        ]))
        .unwrap();
    let mut events = jobs.events_for_composition(cancelled);
    // Running for real: it has reported progress.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the long node never reported progress"
        );
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let CompositionChange::Job {
            change: JobChange::Progress { .. },
            ..
        } = event.change
        {
            break;
        }
    }
    assert!(jobs.cancel_composition(cancelled).unwrap());
    let ended = jobs.wait_for_composition(cancelled).await.unwrap();
    assert_eq!(ended.state, CompositionState::Cancelled);
    let long = jobs
        .status(ended.node("long").unwrap().job.unwrap())
        .unwrap();
    assert_eq!(long.state, JobState::Cancelled);
    assert_eq!(long.cancelled, Some(Cancellation::Cooperative));
    assert_eq!(ended.node("then").unwrap().state, NodeState::Skipped);

    // The journal holds all three, with their nodes and their jobs.
    jobs.sync_journal().await;
    let kept = recent_compositions(&journal, 10).unwrap();
    let states: Vec<CompositionState> = kept.iter().map(|entry| entry.state).collect();
    assert_eq!(
        states,
        [
            CompositionState::Cancelled,
            CompositionState::Failed,
            CompositionState::Succeeded
        ]
    );
    let fan_in_entry = &kept[2];
    assert_eq!(
        Some(fan_in_entry.id.clone()),
        jobs.composition_journal_id(fan_in)
    );
    assert_eq!(fan_in_entry.nodes.len(), 4);
    assert!(fan_in_entry
        .nodes
        .iter()
        .all(|(_, _, state, job)| state == "succeeded" && job.is_some()));
    assert_eq!(kept[1].nodes[1].2, "skipped");
    jobs.shutdown().await;
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_calls_a_task_adapter_on_an_upstream_output() {
    let home = home();
    let manager = home.manager();
    manager.discover_manifests();
    for plugin in ["cjm-echo", "cjm-wordcount"] {
        manager.load_plugin(plugin, None).await.unwrap();
    }
    let journal = home.path().join("jobs.sqlite3");
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().journal(journal.clone()),
    )
    .await
    .unwrap();
    let written = home.path().join("words.txt");
    let id = jobs
        .submit_composition(Composition::new(vec![
            CompositionNode::new("write", "cjm-echo")
                .kwarg("text", "one two three ")
                .kwarg("repeat", 3)
                .kwarg("write_to", written.to_str().unwrap()),
            CompositionNode::new("stats", "cjm-wordcount")
                .task("text-statistics", "count_file")
                .kwarg("file_path", OutputRef::field("write", "written_to")),
            CompositionNode::new("say", "cjm-echo")
                .kwarg("text", "w ")
                .kwarg("repeat", OutputRef::field("stats", "words")),
        ]))
        .unwrap();
    let ended = jobs.wait_for_composition(id).await.unwrap();
    assert_eq!(ended.state, CompositionState::Succeeded, "{ended:?}");
    let stats = ended.node("stats").unwrap();
    assert_eq!(stats.result.as_ref().unwrap()["words"], 9, "{stats:?}");
    assert_eq!(
        ended.node("say").unwrap().result.as_ref().unwrap()["result"],
        json!("w ".repeat(9))
    );
    // It ran over `/task`: the worker accounted for the adapter's method, and the
    // account is kept with the node's job.
    let journal_id = jobs.journal_id(stats.job.unwrap()).unwrap();
    jobs.sync_journal().await;
    let accounts = job_accounts(&journal, &journal_id).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].payload["method"], "count_file");

    // A method the adapter does not have fails the node (the worker's 404, named),
    // and skips what depends on it.
    let id = jobs
        .submit_composition(Composition::new(vec![
            CompositionNode::new("stats", "cjm-wordcount")
                .task("text-statistics", "count_everything")
                .kwarg("text", "a b"),
            CompositionNode::new("say", "cjm-echo")
                .kwarg("text", OutputRef::field("stats", "words")),
        ]))
        .unwrap();
    let ended = jobs.wait_for_composition(id).await.unwrap();
    assert_eq!(ended.state, CompositionState::Failed, "{ended:?}");
    let failure = ended.node("stats").unwrap().failure.clone().unwrap();
    assert!(
        failure.message.contains("count_everything"),
        "{}",
        failure.message
    );
    assert_eq!(ended.node("say").unwrap().state, NodeState::Skipped);
}

/// `cjm-ctl run FILE` under `home`: its exit status, stdout, stderr lines.
fn ctl_run(
    home: &TestHome,
    file: &std::path::Path,
    interrupt_on: Option<&str>,
) -> (i32, String, Vec<String>) {
    let mut child = Command::new(CTL)
        .arg("run")
        .arg(file)
        .arg("--json")
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    for line in stderr.lines().map_while(Result::ok) {
        let hit = interrupt_on.is_some_and(|text| line.contains(text));
        lines.push(line);
        if hit {
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
                rustix::process::Signal::INT,
            )
            .unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        lines,
    )
}

#[test]
fn cjm_ctl_runs_the_example_pipeline_and_exits_by_its_end() {
    let home = home();
    // The example as shipped, its output file moved into this test's home.
    let example = include_str!("../../../examples/pipeline.yaml");
    let words = home.path().join("words.txt");
    assert!(example.contains("/tmp/cjm-pipeline-words.txt"));
    let pipeline = home.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        example.replace("/tmp/cjm-pipeline-words.txt", words.to_str().unwrap()),
    )
    .unwrap();
    let (code, stdout, stderr) = ctl_run(&home, &pipeline, None);
    assert_eq!(code, 0, "{stderr:?}");
    let results: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results["state"], "succeeded");
    assert_eq!(results["nodes"]["count"]["result"]["words"], 9 * 1000);
    assert_eq!(results["nodes"]["stats"]["result"]["words"], 9 * 1000);
    assert_eq!(
        results["nodes"]["count"]["result"]["file_path"],
        json!(words)
    );
    // Progress per node on stderr, each node's start before its end.
    let at = |text: &str| stderr.iter().position(|line| line.contains(text));
    let write_queued = at("[write] queued as").unwrap();
    let write_done = at("[write] succeeded").unwrap();
    let count_queued = at("[count] queued as").unwrap();
    assert!(
        write_queued < write_done && write_done < count_queued,
        "{stderr:?}"
    );
    assert!(at("[count] succeeded").is_some(), "{stderr:?}");

    // A node failing on its input: exit 65 (user_input), its dependent skipped.
    let failing = home.path().join("failing.yaml");
    std::fs::write(
        &failing,
        "nodes:\n  - {id: count, plugin: cjm-wordcount, kwargs: {file_path: /nonexistent/x}}\n  - {id: echo, plugin: cjm-echo, kwargs: {text: {$output: count, field: words}}}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = ctl_run(&home, &failing, None);
    assert_eq!(code, 65, "{stderr:?}");
    let results: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results["nodes"]["echo"]["state"], "skipped");
    assert_eq!(results["nodes"]["count"]["error"]["category"], "user_input");

    // Ctrl-C while a node runs cancels the composition: exit 130.
    let long = home.path().join("long.yaml");
    std::fs::write(
        &long,
        "nodes:\n  - {id: long, plugin: faulty, args: [steps, 100000, 20]}\n  - {id: then, plugin: cjm-echo, kwargs: {text: {$output: long, field: steps}}}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = ctl_run(&home, &long, Some("[long] running"));
    assert_eq!(code, 130, "{stderr:?}");
    let results: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results["state"], "cancelled");
    assert_eq!(results["nodes"]["then"]["state"], "skipped");
    // A file that is no composition is refused naming it.
    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "nodes:\n  - {id: a, plugin: p, kwargs: {x: {$output: 3}}}\n",
    )
    .unwrap();
    let (code, _, stderr) = ctl_run(&home, &bad, None);
    assert_eq!(code, 1, "{stderr:?}");
    assert!(
        stderr.iter().any(|line| line.contains("bad.yaml")),
        "{stderr:?}"
    );

    // The runs' jobs are in the journal: counted by state, and paged newest first.
    let ctl = |args: &[&str]| -> Value {
        let out = Command::new(CTL)
            .args(args)
            .env("CJM_HOME", home.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let counts = ctl(&["jobs", "stats", "--json"]);
    // write, count and stats, then the failing count; the cancelled long one.
    assert_eq!(counts["counts"]["succeeded"], 3, "{counts}");
    assert_eq!(counts["counts"]["failed"], 1, "{counts}");
    assert_eq!(counts["counts"]["cancelled"], 1, "{counts}");
    let page = ctl(&[
        "jobs",
        "history",
        "--state",
        "succeeded",
        "--limit",
        "1",
        "--json",
    ]);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["plugin"], "cjm-wordcount");
    let next = ctl(&[
        "jobs",
        "history",
        "--state",
        "succeeded",
        "--limit",
        "1",
        "--offset",
        "2",
        "--json",
    ]);
    // count and stats (cjm-wordcount) came after write (cjm-echo).
    assert_eq!(next["jobs"][0]["plugin"], "cjm-echo");
    let faulty = ctl(&["jobs", "history", "--plugin", "faulty", "--json"]);
    assert_eq!(faulty["jobs"][0]["state"], "cancelled");
}
