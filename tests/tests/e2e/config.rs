//! Configuration validation at every boundary: the worker's `/initialize`, the
//! manager before it starts or re-configures a worker, and discovery.

use std::path::Path;

use cjm_manager::{ConfigMap, Endpoint, ManagerError, ProxyError};
use serde_json::{json, Value};

use crate::common::*;

fn config(value: Value) -> ConfigMap {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Processes whose command line mentions `marker`.
fn processes_mentioning(marker: &Path) -> Vec<u32> {
    let marker = marker.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_an_invalid_config_with_400_and_keeps_the_old_one() {
    let home = TestHome::new();
    // The manifest carries no schema, so the manager lets everything through, and
    // this plugin's own initialize accepts anything: only the worker can refuse.
    home.native_manifest("faulty", FAULTY, &["--schema"]);
    let manager = home.manager();
    manager.discover_manifests();
    manager
        .load_plugin("faulty", Some(config(json!({"level": 1}))))
        .await
        .unwrap();

    let err = manager
        .update_plugin_config("faulty", config(json!({"level": 12, "colour": "red"})))
        .await
        .unwrap_err();
    let ManagerError::Plugin(ProxyError::Http {
        status,
        detail,
        kind,
        ..
    }) = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(*status, 400);
    assert_eq!(kind.as_deref(), Some("invalid_config"));
    assert!(
        detail.contains("level: 12 is greater than the maximum of 9"),
        "{detail}"
    );
    assert!(
        detail.contains("colour: unknown key; known keys: level, cleanup_marker")
            || detail.contains("colour: unknown key; known keys: cleanup_marker, level"),
        "{detail}"
    );
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 1})
    );

    // Through the manager too: the worker's refusal comes back whole, and the
    // configuration the manager remembers does not change either.
    let err = manager
        .update_plugin_config("faulty", config(json!({"level": -1})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ManagerError::Plugin(ProxyError::Http { status: 400, .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("level: -1 is less than the minimum of 0"),
        "{err}"
    );
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 1})
    );
    manager
        .update_plugin_config("faulty", config(json!({"level": 9})))
        .await
        .unwrap();
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 9})
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_own_schema_is_broken_refuses_every_configuration() {
    let home = TestHome::new();
    // No schema in the manifest: the manager cannot tell, only the worker can.
    home.native_manifest("faulty", FAULTY, &["--broken-schema"]);
    let manager = home.manager();
    manager.discover_manifests();
    let err = manager.load_plugin("faulty", None).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ManagerError::Plugin(ProxyError::Http { status: 500, .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("plugin faulty cannot check configurations: its config schema is not a valid config schema"),
        "{text}"
    );
    assert!(!manager.is_loaded("faulty"));
}

/// A raw `POST /initialize` of `body`, with the secret and the host's claim if given.
fn initialize_raw(at: &Endpoint, token: Option<&str>, claim: Option<&str>, body: &str) -> u16 {
    let mut headers = String::new();
    if let Some(token) = token {
        headers.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(claim) = claim {
        headers.push_str(&format!("x-cjm-config-checked: {claim}\r\n"));
    }
    let request = format!(
        "POST /initialize HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange_at(at, request.as_bytes()).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_believes_only_its_own_host_that_a_config_was_checked_against_its_schema() {
    let home = TestHome::new();
    home.installed_manifest("faulty", FAULTY, &["--schema"]);
    let manager = home.manager();
    manager.discover_manifests();
    manager
        .load_plugin("faulty", Some(config(json!({"level": 3}))))
        .await
        .unwrap();
    let worker = manager.worker_info("faulty").unwrap();
    let endpoint = worker.endpoint.clone();
    let token = initial_env_var(worker.pid, "CJM_WORKER_TOKEN").unwrap();
    let schema = manager.plugin_config_schema("faulty").await.unwrap();
    // The premise of what follows: level 12 breaks the plugin's own schema.
    assert_eq!(schema["properties"]["level"]["maximum"], 9, "{schema}");
    let own = cjm_validation::schema_fingerprint(&schema);
    let other = cjm_validation::schema_fingerprint(&json!({"type": "object"}));

    // level 12 breaks the schema's maximum of 9: only a claim that the host holding
    // the secret checked it against this very schema gets it past the worker.
    let statuses = tokio::task::spawn_blocking(move || {
        let out_of_range = r#"{"level": 12}"#;
        [
            initialize_raw(&endpoint, Some(&token), None, out_of_range),
            initialize_raw(&endpoint, Some(&token), Some(&other), out_of_range),
            initialize_raw(&endpoint, Some(&token), Some(&own), out_of_range),
        ]
    })
    .await
    .unwrap();
    assert_eq!(statuses, [400, 400, 200]);
    assert_eq!(
        manager.plugin_config("faulty").await.unwrap(),
        json!({"level": 12})
    );
    manager.shutdown().await;

    // A worker started by hand (as the original's host does) has no secret: nobody's
    // claim is believed.
    let worker = HandStartedWorker::start_with_args(FAULTY, &["--schema"], &[]);
    let (status, response) = exchange(
        worker.port,
        b"GET /config_schema HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let served: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        served, schema,
        "the worker serves the schema its host was told of"
    );
    let own = cjm_validation::schema_fingerprint(&served);
    let endpoint = Endpoint::Tcp { port: worker.port };
    let status = tokio::task::spawn_blocking(move || {
        initialize_raw(&endpoint, None, Some(&own), r#"{"level": 12}"#)
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_spawns_nothing_for_an_invalid_config() {
    let home = TestHome::new();
    // A plugin argument that echo ignores, to find this test's workers by.
    let marker = format!("--test-home={}", home.path().display());
    home.installed_manifest("cjm-echo", ECHO, &[&marker]);
    let manager = home.manager();
    manager.discover_manifests();

    let err = manager
        .load_plugin(
            "cjm-echo",
            Some(config(json!({"prefix": 5, "colour": "red"}))),
        )
        .await
        .unwrap_err();
    let ManagerError::InvalidConfig { name, errors } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(name, "cjm-echo");
    assert_eq!(errors.violations().len(), 2, "{err}");
    assert_eq!(
        err.to_string(),
        "plugin cjm-echo: invalid configuration: prefix: 5 is not of type \"string\"; \
         colour: unknown key; known keys: prefix"
    );
    assert!(!manager.is_loaded("cjm-echo"));
    // The proxy writes the log's header line before it spawns anything.
    let log = manager.options().home.log_path("cjm-echo");
    assert!(!log.exists(), "{} was written", log.display());
    assert_eq!(processes_mentioning(home.path()), Vec::<u32>::new());

    // No configuration: the schema's defaults.
    manager.load_plugin("cjm-echo", None).await.unwrap();
    assert_eq!(
        manager.plugin_config("cjm-echo").await.unwrap(),
        json!({"prefix": ""})
    );
    let pid = manager.worker_info("cjm-echo").unwrap().pid;
    assert_eq!(processes_mentioning(home.path()), [pid]);

    // Updates are partial, merged over the current configuration, and checked
    // before they are sent.
    let err = manager
        .update_plugin_config("cjm-echo", config(json!({"prefx": ">"})))
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::InvalidConfig { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(r#"prefx: unknown key, did you mean "prefix"?"#),
        "{err}"
    );
    manager
        .update_plugin_config("cjm-echo", config(json!({"prefix": ">"})))
        .await
        .unwrap();
    assert_eq!(
        manager.plugin_config("cjm-echo").await.unwrap(),
        json!({"prefix": ">"})
    );

    // A reload with an invalid configuration keeps the running worker.
    let err = manager
        .reload_plugin("cjm-echo", Some(config(json!({"prefix": "x".repeat(101)}))))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is longer than 100 characters"),
        "{err}"
    );
    assert_eq!(manager.worker_info("cjm-echo").unwrap().pid, pid);
    assert!(alive(pid));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_loaded_without_a_config_run_on_their_defaults() {
    let home = TestHome::new();
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-wordcount", None).await.unwrap();
    assert_eq!(
        manager.plugin_config("cjm-wordcount").await.unwrap(),
        json!({"chunk_bytes": 1_048_576})
    );
    let schema = manager.plugin_config_schema("cjm-wordcount").await.unwrap();
    assert_eq!(schema["properties"]["chunk_bytes"]["minimum"], 4096);
    manager.shutdown().await;
}

#[test]
fn discovery_reports_a_manifest_whose_schema_is_invalid() {
    let home = TestHome::new();
    home.installed_manifest("cjm-echo", ECHO, &[]);
    let broken = home.write_manifest(
        "broken",
        json!({
            "name": "broken",
            "command": ECHO,
            "config_schema": {"properties": {"n": {"type": "integr"}}},
        }),
    );
    let manager = home.manager();
    let found = manager.discover_manifests();
    assert_eq!(
        found.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["cjm-echo"]
    );
    let problems = manager.discovery_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, broken);
    assert!(
        problems[0]
            .reason
            .starts_with("\"config_schema\" is not a valid config schema: "),
        "{}",
        problems[0]
    );
    assert!(problems[0].reason.contains("integr"), "{}", problems[0]);
}
