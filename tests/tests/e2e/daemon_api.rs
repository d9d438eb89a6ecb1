//! The rest of `cjm-ctl serve`'s API against a live daemon: the plugin verbs
//! (reload, enable, disable, configuration, schema, stats, load as an instance),
//! plugin and worker events on the event stream in the order they happened, task
//! jobs, the job list's filters and pages, the journal's history, the worker
//! metrics, and the OpenAPI document held to the live router. Every step waits for
//! its condition (an event, a job's end) with a deadline, never for a fixed time.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::daemon::{assert_error, call, call_raw, send, Events, Served};

/// The next plugin event: `(name, state, pid)` (job events skipped).
async fn next_plugin(events: &mut Events) -> (String, String, Option<u64>) {
    loop {
        let event = events.next().await;
        if event.kind == "plugin" {
            let data = event.data;
            return (
                data["name"].as_str().unwrap().to_owned(),
                data["state"].as_str().unwrap().to_owned(),
                data["pid"].as_u64(),
            );
        }
        assert_ne!(event.kind, "lagged", "{:?}", event.data);
    }
}

/// Assert the next plugin events are `want` (name, state), in order; their pids.
async fn expect_plugin(events: &mut Events, want: &[(&str, &str)]) -> Vec<Option<u64>> {
    let mut pids = Vec::new();
    for (name, state) in want {
        let (got_name, got_state, pid) = next_plugin(events).await;
        assert_eq!(
            (got_name.as_str(), got_state.as_str()),
            (*name, *state),
            "plugin events out of order"
        );
        pids.push(pid);
    }
    pids
}

async fn wait_job(socket: &Path, id: u64) -> Value {
    let (status, body) = call(
        socket,
        "GET",
        &format!("/api/jobs/{id}/wait?timeout_ms=30000"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"], true, "{body}");
    body
}

async fn submit(socket: &Path, plugin: &str, args: Value) -> u64 {
    let (status, body) = call(
        socket,
        "POST",
        "/api/jobs",
        Some(json!({"plugin": plugin, "args": args})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_u64().unwrap()
}

async fn metrics(socket: &Path) -> String {
    let (status, _, text) = call_raw(socket, "GET", "/metrics", None, &[]).await;
    assert_eq!(status, 200);
    text
}

fn level(config: &Value) -> &Value {
    &config["config"]["level"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_api_plugin_verbs_config_and_worker_events_in_order() {
    let home = TestHome::new();
    home.installed_manifest("faulty", FAULTY, &["--schema"]);
    let served = Served::start(&home, &["--restarts", "2"], &[]);
    let socket = served.socket.clone();
    let mut events = Events::open(&socket, None).await;

    // Load with a configuration: its worker starts, then the plugin counts as loaded.
    let (status, body) = call(
        &socket,
        "POST",
        "/api/plugins/faulty/load",
        Some(json!({"config": {"level": 2}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let first_pid = body["pid"].as_u64().unwrap();
    assert_eq!(body["enabled"], true, "{body}");
    let pids = expect_plugin(
        &mut events,
        &[("faulty", "worker_started"), ("faulty", "loaded")],
    )
    .await;
    assert_eq!(pids, [Some(first_pid), Some(first_pid)]);

    // The configuration: read, refused by the schema (422, the old one kept),
    // updated.
    let (status, config) = call(&socket, "GET", "/api/plugins/faulty/config", None).await;
    assert_eq!((status, level(&config)), (200, &json!(2)), "{config}");
    let (status, refused) = call(
        &socket,
        "PUT",
        "/api/plugins/faulty/config",
        Some(json!({"config": {"level": 12}})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"], "invalid_config", "{refused}");
    assert_eq!(refused["category"], "user_input", "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("level"),
        "the validator's words name the field: {refused}"
    );
    let (_, config) = call(&socket, "GET", "/api/plugins/faulty/config", None).await;
    assert_eq!(
        level(&config),
        &json!(2),
        "the old configuration stays: {config}"
    );
    let (status, config) = call(
        &socket,
        "POST",
        "/api/plugins/faulty/config",
        Some(json!({"config": {"level": 5}})),
    )
    .await;
    assert_eq!((status, level(&config)), (200, &json!(5)), "{config}");
    assert_eq!(config["worker_stopped"], Value::Null, "{config}");
    let (status, body) = call(
        &socket,
        "PUT",
        "/api/plugins/faulty/config",
        Some(json!({"level": 5})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_request");

    // Schema and stats.
    let (status, schema) = call(&socket, "GET", "/api/plugins/faulty/schema", None).await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(
        schema["schema"]["properties"]["level"]["maximum"], 9,
        "{schema}"
    );
    let (status, stats) = call(&socket, "GET", "/api/plugins/faulty/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["pid"].as_u64(), Some(first_pid), "{stats}");
    assert!(stats["memory_rss_mb"].as_f64().unwrap() > 0.0, "{stats}");
    assert_eq!(stats["restarts"], 0, "{stats}");

    // Disable, enable: told, and shown in the list.
    let (status, body) = call(&socket, "POST", "/api/plugins/faulty/disable", None).await;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)), "{body}");
    let (_, list) = call(&socket, "GET", "/api/plugins", None).await;
    let faulty = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["name"] == "faulty")
        .unwrap();
    assert_eq!(faulty["enabled"], false, "{faulty}");
    assert!(faulty.get("gpu_memory_bytes").is_some(), "{faulty}");
    let (status, _) = call(&socket, "POST", "/api/plugins/faulty/enable", None).await;
    assert_eq!(status, 200);
    expect_plugin(
        &mut events,
        &[("faulty", "disabled"), ("faulty", "enabled")],
    )
    .await;

    // SIGKILL from outside: the death is told (with the dead worker's pid); the next
    // call restarts it (the restart policy of --restarts), and that is told too.
    sigkill(first_pid as u32);
    let pids = expect_plugin(&mut events, &[("faulty", "worker_died")]).await;
    assert_eq!(pids, [Some(first_pid)]);
    let job = submit(&socket, "faulty", json!(["pid"])).await;
    let ended = wait_job(&socket, job).await;
    assert_eq!(ended["job"]["state"], "succeeded", "{ended}");
    let second_pid = ended["result"]["pid"].as_u64().unwrap();
    assert_ne!(second_pid, first_pid);
    let pids = expect_plugin(&mut events, &[("faulty", "worker_restarted")]).await;
    assert_eq!(pids, [Some(second_pid)]);

    // Reload: a new worker, then the reload told; the old one's stop is no death.
    let (status, body) = call(&socket, "POST", "/api/plugins/faulty/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let third_pid = body["pid"].as_u64().unwrap();
    assert!(wait_gone(second_pid as u32, Duration::from_secs(20)).is_some());
    let pids = expect_plugin(
        &mut events,
        &[("faulty", "worker_started"), ("faulty", "reloaded")],
    )
    .await;
    assert_eq!(pids, [Some(third_pid), Some(third_pid)]);
    let (_, config) = call(&socket, "GET", "/api/plugins/faulty/config", None).await;
    assert_eq!(
        level(&config),
        &json!(5),
        "a reload keeps the configuration: {config}"
    );

    // Load as an instance, with a configuration of its own; unload it.
    let (status, body) = call(
        &socket,
        "POST",
        "/api/plugins/faulty/load",
        Some(json!({"instance": "faulty-two", "config": {"level": 1}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "faulty-two", "{body}");
    let (_, config) = call(&socket, "GET", "/api/plugins/faulty-two/config", None).await;
    assert_eq!(level(&config), &json!(1), "{config}");
    let (status, _) = call(&socket, "POST", "/api/plugins/faulty-two/unload", None).await;
    assert_eq!(status, 200);
    expect_plugin(
        &mut events,
        &[
            ("faulty-two", "worker_started"),
            ("faulty-two", "loaded"),
            ("faulty-two", "unloaded"),
        ],
    )
    .await;

    // Refusals: JSON errors naming what was wrong.
    let (status, body) = call(&socket, "POST", "/api/plugins/nope/enable", None).await;
    assert_error(status, &body, 404, "unknown_plugin");
    let (status, body) = call(&socket, "POST", "/api/plugins/nope/reload", None).await;
    assert_error(status, &body, 409, "plugin_not_loaded");
    let (status, body) = call(
        &socket,
        "POST",
        "/api/plugins/faulty/load",
        Some(json!({"instance": "bad name!"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(&socket, "DELETE", "/api/plugins/faulty/config", None).await;
    assert_error(status, &body, 405, "method_not_allowed");

    // The worker metrics moved with what happened.
    let text = metrics(&socket).await;
    for line in [
        "cjm_worker_spawns_total{plugin=\"faulty\"} 3",
        "cjm_worker_deaths_total{plugin=\"faulty\",cause=\"signal\"} 1",
        "cjm_worker_restarts_total{plugin=\"faulty\"} 1",
        "cjm_worker_spawns_total{plugin=\"faulty-two\"} 1",
    ] {
        assert!(
            text.lines().any(|got| got == line),
            "no {line:?} in\n{text}"
        );
    }
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_api_task_jobs_filters_pages_and_the_journals_history() {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    home.native_manifest("faulty", FAULTY, &[]);
    let served = Served::start(&home, &["--load", "cjm-wordcount", "--load", "faulty"], &[]);
    let socket = served.socket.clone();

    // A task job: queued, run through the adapter, its result as the method's.
    let (status, body) = call(
        &socket,
        "POST",
        "/api/tasks",
        Some(json!({
            "plugin": "cjm-wordcount",
            "task": "text-statistics",
            "method": "count_text",
            "kwargs": {"text": "a b c d"},
            "priority": 3,
        })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let ended = wait_job(&socket, body["id"].as_u64().unwrap()).await;
    assert_eq!(ended["job"]["state"], "succeeded", "{ended}");
    assert_eq!(ended["job"]["priority"], 3, "{ended}");
    assert_eq!(ended["result"], json!({"lines": 0, "words": 4, "bytes": 7}));

    // Refused before anything is queued.
    let task = |body: Value| {
        let socket = socket.clone();
        async move { call(&socket, "POST", "/api/tasks", Some(body)).await }
    };
    let (status, body) = task(json!({"plugin": "cjm-wordcount", "task": "text-statistics"})).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = task(json!({"plugin": "cjm-wordcount", "task": "", "method": "m"})).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) =
        task(json!({"plugin": "cjm-wordcount", "task": "no-such-task", "method": "m"})).await;
    assert_error(status, &body, 422, "task_not_served");
    let (status, body) = task(json!({"plugin": "nope", "task": "t", "method": "m"})).await;
    assert_error(status, &body, 404, "unknown_plugin");
    let (status, body) =
        task(json!({"plugin": "cjm-wordcount", "task": "t", "method": "m", "kwargs": [1]})).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) =
        task(json!({"plugin": "cjm-wordcount", "task": "t", "method": "m", "bogus": 1})).await;
    assert_error(status, &body, 400, "invalid_request");

    // Three plain jobs and one that fails, then the list: filtered, paged.
    let mut faulty_ids = Vec::new();
    for args in [
        json!(["pid"]),
        json!(["pid"]),
        json!(["pid"]),
        json!(["transient"]),
    ] {
        let id = submit(&socket, "faulty", args).await;
        wait_job(&socket, id).await;
        faulty_ids.push(id);
    }
    let list = |query: &'static str| {
        let socket = socket.clone();
        async move {
            let (status, body) = call(&socket, "GET", &format!("/api/jobs{query}"), None).await;
            assert_eq!(status, 200, "{query}: {body}");
            body
        }
    };
    let ids = |body: &Value| -> Vec<u64> {
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["id"].as_u64().unwrap())
            .collect()
    };
    let all = list("?plugin=faulty").await;
    assert_eq!(
        (all["total"].as_u64(), ids(&all)),
        (Some(4), faulty_ids.clone())
    );
    let page = list("?plugin=faulty&limit=3").await;
    assert_eq!(ids(&page), faulty_ids[..3]);
    assert_eq!(page["next_offset"], 3);
    let page = list("?plugin=faulty&limit=3&offset=3").await;
    assert_eq!(ids(&page), faulty_ids[3..]);
    assert_eq!(page["next_offset"], Value::Null);
    let failed = list("?state=failed").await;
    assert_eq!(ids(&failed), [faulty_ids[3]]);
    let succeeded = list("?state=succeeded").await;
    assert_eq!(succeeded["total"], 4, "{succeeded}");
    for bad in ["?state=done", "?limit=0", "?offset=x", "?after=2"] {
        let (status, body) = call(&socket, "GET", &format!("/api/jobs{bad}"), None).await;
        assert_error(status, &body, 400, "invalid_query");
    }

    // The journal's history, newest first, the same as `cjm-ctl jobs history`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let history = loop {
        let (status, body) = call(
            &socket,
            "GET",
            "/api/jobs/history?plugin=faulty&limit=10",
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let ended = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|job| job["finished_at"].is_number())
            .count();
        if ended == 4 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the journal never held 4 ended jobs: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let states: Vec<&str> = history["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "succeeded", "succeeded", "succeeded"]);
    assert_eq!(
        history["jobs"][0]["error_category"], "transient",
        "{history}"
    );
    let out = Command::new(CTL)
        .args([
            "jobs", "history", "--plugin", "faulty", "--limit", "10", "--json",
        ])
        .env("CJM_HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ctl: Value = serde_json::from_slice(&out.stdout).unwrap();
    let journal_ids = |jobs: &Value| -> Vec<String> {
        jobs.as_array()
            .unwrap()
            .iter()
            .map(|job| job["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(journal_ids(&history["jobs"]), journal_ids(&ctl["jobs"]));
    let (_, page) = call(
        &socket,
        "GET",
        "/api/jobs/history?plugin=faulty&limit=2&offset=2",
        None,
    )
    .await;
    assert_eq!(
        journal_ids(&page["jobs"]),
        journal_ids(&history["jobs"])[2..]
    );
    let (_, words) = call(
        &socket,
        "GET",
        "/api/jobs/history?plugin=cjm-wordcount",
        None,
    )
    .await;
    assert_eq!(words["jobs"].as_array().unwrap().len(), 1, "{words}");
    let (status, body) = call(&socket, "GET", "/api/jobs/history?state=nope", None).await;
    assert_error(status, &body, 400, "invalid_query");
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_api_the_openapi_document_lists_every_route_the_daemon_answers() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let served = Served::start(&home, &[], &[]);
    let socket = served.socket.clone();
    let (status, document) = call(&socket, "GET", "/api/openapi.json", None).await;
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let mut called = 0;
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path.replace("{name}", "nosuch").replace("{id}", "999999");
            let method = method.to_uppercase();
            if concrete == "/api/events" {
                let response = send(&socket, &method, &concrete, None, &[]).await;
                assert_eq!(response.status(), 200, "{method} {concrete}");
                called += 1;
                continue;
            }
            let (status, _, text) = call_raw(&socket, &method, &concrete, None, &[]).await;
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(
                !(status == 404 && body["error"] == "no_such_route") && status != 405,
                "{method} {path} is documented, and the daemon answers {status} {text}"
            );
            called += 1;
        }
    }
    assert!(called >= 20, "{called} routes called");
    // And an undocumented path is no route.
    let (status, body) = call(&socket, "GET", "/api/nothing-here", None).await;
    assert_error(status, &body, 404, "no_such_route");
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_api_loads_at_start_and_idle_stops_are_told_resumable_and_counted() {
    let home = TestHome::new();
    home.write_manifest(
        "faulty",
        json!({
            "name": "faulty",
            "version": "0.1.0",
            "command": FAULTY,
            "keep_alive_secs": 0.3,
        }),
    );
    let served = Served::start(&home, &["--load", "faulty"], &[]);
    let socket = served.socket.clone();
    let (_, health) = call(&socket, "GET", "/api/health", None).await;
    let session = health["session"].as_str().unwrap().to_owned();

    // From the start of this run: the load at start was told too, before `ready`.
    let mut events = Events::open(&socket, Some(&format!("{session}:0"))).await;
    let pids = expect_plugin(
        &mut events,
        &[("faulty", "worker_started"), ("faulty", "loaded")],
    )
    .await;
    let first_pid = pids[0].unwrap();
    // Idle past its keep-alive: stopped, and told with the stopped worker's pid.
    let stopped = loop {
        let event = events.next().await;
        if event.kind == "plugin" {
            break event;
        }
    };
    assert_eq!(stopped.data["state"], "idle_stopped", "{:?}", stopped.data);
    assert_eq!(stopped.data["pid"].as_u64(), Some(first_pid));
    assert!(
        stopped.data["detail"]
            .as_str()
            .unwrap()
            .contains("keep-alive"),
        "{:?}",
        stopped.data
    );
    // The next call starts it again.
    let job = submit(&socket, "faulty", json!(["pid"])).await;
    let ended = wait_job(&socket, job).await;
    let second_pid = ended["result"]["pid"].as_u64().unwrap();
    let pids = expect_plugin(&mut events, &[("faulty", "worker_started")]).await;
    assert_eq!(pids, [Some(second_pid)]);

    // A client that reconnects after the stop gets what followed it, plugin and job
    // events in one numbering.
    let mut resumed = Events::open(&socket, stopped.id.as_deref()).await;
    let after = sequence_of(&stopped);
    let started = loop {
        let event = resumed.next().await;
        assert!(
            sequence_of(&event) > after,
            "{event:?} is not after {stopped:?}"
        );
        if event.kind == "plugin" {
            break event;
        }
    };
    assert_eq!(
        started.data["state"], "worker_started",
        "{:?}",
        started.data
    );
    assert_eq!(started.data["pid"].as_u64(), Some(second_pid));

    // One call after one stop: two spawns; one idle stop, or two if the new worker
    // idled past its keep-alive again meanwhile.
    let text = metrics(&socket).await;
    let value = |name: &str| -> u64 {
        let prefix = format!("{name}{{plugin=\"faulty\"");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.rsplit_once(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .1
            .parse()
            .unwrap()
    };
    assert_eq!(value("cjm_worker_spawns_total"), 2, "{text}");
    assert!(
        (1..=2).contains(&value("cjm_worker_idle_stops_total")),
        "{text}"
    );
    assert!(
        text.contains("cjm_worker_idle_stops_total{plugin=\"faulty\",reason=\"keep_alive\"}"),
        "{text}"
    );
    drop(served);
}

fn sequence_of(event: &crate::daemon::Event) -> u64 {
    event
        .id
        .as_deref()
        .and_then(|id| id.rsplit(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{event:?} has no id"))
}
