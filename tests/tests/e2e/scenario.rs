//! The original's own scenario and the ordinary paths around it.

use std::collections::HashMap;
use std::time::Duration;

use cjm_manager::{BlockingPluginManager, CallArgs, ConfigMap};
use serde_json::json;
use tokio::task::JoinSet;

use crate::common::*;

fn config(value: serde_json::Value) -> ConfigMap {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_scenario_through_the_manager() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let manager = home.manager();

    let found = manager.discover_manifests();
    assert_eq!(
        found.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["cjm-echo"]
    );
    assert_eq!(manager.discovered_categories(), ["test"]);

    manager
        .load_plugin("cjm-echo", Some(config(json!({"prefix": "> "}))))
        .await
        .unwrap();
    let pid = manager.worker_info("cjm-echo").unwrap().pid;
    assert_ne!(pid, std::process::id());
    assert_eq!(manager.loaded_categories(), ["test"]);
    assert_eq!(manager.plugins_by_category("test").len(), 1);

    let result = manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("hi").kwarg("repeat", 3))
        .await
        .unwrap();
    assert_eq!(result["result"], "> hihihi");
    assert_eq!(result["processed_by_pid"], pid);
    assert_eq!(result["config_used"], json!({"prefix": "> "}));
    assert_eq!(result["file_content_read"], serde_json::Value::Null);

    // A file-backed argument: only its path travels, the worker reads the file, and
    // the temporary file is gone after the call.
    let result = manager
        .execute_plugin(
            "cjm-echo",
            CallArgs::new()
                .arg("x")
                .file_kwarg("file_path", String::from("secret content")),
        )
        .await
        .unwrap();
    assert_eq!(result["file_content_read"], "secret content");
    assert_eq!(entries(&home.temp_dir()), Vec::<std::path::PathBuf>::new());

    let missing = manager
        .execute_plugin(
            "cjm-echo",
            CallArgs::new().arg("x").kwarg("file_path", "/no/such/file"),
        )
        .await
        .unwrap();
    assert_eq!(missing["file_content_read"], "FILE_NOT_FOUND");

    let chunks = manager
        .execute_plugin_stream("cjm-echo", CallArgs::new().arg(3))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        chunks,
        (0..3)
            .map(|i| json!({"chunk": i, "status": "streaming"}))
            .collect::<Vec<_>>()
    );

    let stats = manager.plugin_stats("cjm-echo").await.unwrap();
    assert_eq!(stats.pid, pid);
    assert!(
        stats.memory_rss_mb > 0.1 && stats.memory_rss_mb < 512.0,
        "{stats:?}"
    );

    let schema = manager.plugin_config_schema("cjm-echo").await.unwrap();
    assert_eq!(schema["properties"]["prefix"]["type"], "string");
    assert_eq!(
        manager.plugin_config("cjm-echo").await.unwrap(),
        json!({"prefix": "> "})
    );
    assert_eq!(
        manager.all_plugin_configs().await,
        [(String::from("cjm-echo"), json!({"prefix": "> "}))]
            .into_iter()
            .collect()
    );
    let meta = manager.plugin_meta("cjm-echo").unwrap();
    assert!(meta.last_executed_at().is_some());
    assert_eq!(manager.active_executions("cjm-echo"), Some(0));

    let logs = manager.plugin_logs("cjm-echo", 50).unwrap();
    assert!(logs.contains("starting cjm-echo"), "{logs}");

    manager.unload_plugin("cjm-echo").await.unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(5)).is_some(),
        "worker {pid} still running"
    );
    assert!(manager.list_plugins().is_empty());
    let err = manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("x"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "plugin cjm-echo is not loaded");
}

#[test]
fn blocking_facade_executes_streams_and_stops_workers_on_drop() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let manager = BlockingPluginManager::new(home.options()).unwrap();
    manager.discover_manifests();
    manager.load_plugin("cjm-echo", None).unwrap();
    let result = manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("ab").kwarg("repeat", 2))
        .unwrap();
    assert_eq!(result["result"], "abab");
    let chunks: Vec<_> = manager
        .execute_plugin_stream("cjm-echo", CallArgs::new().kwarg("count", 2))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunks.len(), 2);
    let pid = manager.manager().worker_info("cjm-echo").unwrap().pid;
    drop(manager);
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
}

#[test]
fn blocking_facade_has_a_twin_of_every_async_method_and_shutdown_stops_every_worker() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let manager = BlockingPluginManager::new(home.options()).unwrap();
    manager.discover_manifests();
    manager
        .load_plugin("cjm-echo", Some(config(json!({"prefix": "a: "}))))
        .unwrap();
    manager
        .load_instance("cjm-echo", "echo-b", Some(config(json!({"prefix": "b: "}))))
        .unwrap();
    let output = manager
        .execute_plugin_output("echo-b", CallArgs::new().arg("x"))
        .unwrap();
    let cjm_manager::CallOutput::Plain(value) = output else {
        panic!("a plain result came back typed: {output:?}");
    };
    assert_eq!(value["result"], "b: x");
    assert_eq!(
        manager.all_plugin_configs(),
        [
            (String::from("cjm-echo"), json!({"prefix": "a: "})),
            (String::from("echo-b"), json!({"prefix": "b: "})),
        ]
        .into_iter()
        .collect()
    );
    // cjm-echo has no live options to tell.
    assert_eq!(
        manager.plugin_config_options("cjm-echo").unwrap(),
        json!({})
    );
    let pids = ["cjm-echo", "echo-b"].map(|name| manager.manager().worker_info(name).unwrap().pid);
    manager.shutdown();
    assert!(manager.list_plugins().is_empty());
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)).is_some(),
            "worker {pid} still running"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_executes_on_one_worker() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-echo", None).await.unwrap();
    let pid = manager.worker_info("cjm-echo").unwrap().pid;
    let mut calls = JoinSet::new();
    for i in 0..32 {
        let manager = manager.clone();
        calls.spawn(async move {
            let text = format!("call-{i}-");
            let result = manager
                .execute_plugin(
                    "cjm-echo",
                    CallArgs::new().arg(text.clone()).kwarg("repeat", 2),
                )
                .await
                .unwrap();
            (text, result)
        });
    }
    let mut seen = 0;
    while let Some(joined) = calls.join_next().await {
        let (text, result) = joined.unwrap();
        assert_eq!(result["result"], format!("{text}{text}"));
        assert_eq!(result["processed_by_pid"], pid);
        seen += 1;
    }
    assert_eq!(seen, 32);
    manager.shutdown().await;
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_all_starts_every_plugin_and_reload_keeps_the_config() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    home.native_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let manager = home.manager();
    let configs: HashMap<String, ConfigMap> =
        [(String::from("cjm-echo"), config(json!({"prefix": "kept:"})))]
            .into_iter()
            .collect();
    let results = manager.load_all(configs).await;
    assert_eq!(results.len(), 2);
    assert!(results.values().all(Result::is_ok), "{results:?}");

    let old_pid = manager.worker_info("cjm-echo").unwrap().pid;
    manager.reload_plugin("cjm-echo", None).await.unwrap();
    let new_pid = manager.worker_info("cjm-echo").unwrap().pid;
    assert_ne!(old_pid, new_pid);
    assert!(wait_gone(old_pid, Duration::from_secs(5)).is_some());
    let result = manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("x"))
        .await
        .unwrap();
    assert_eq!(result["result"], "kept:x");

    manager
        .update_plugin_config("cjm-echo", config(json!({"prefix": "new:"})))
        .await
        .unwrap();
    let result = manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("x"))
        .await
        .unwrap();
    assert_eq!(result["result"], "new:x");

    assert!(manager.disable_plugin("cjm-echo").await);
    let err = manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("x"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "plugin cjm-echo is disabled");
    assert!(!manager.plugin_meta("cjm-echo").unwrap().enabled);
    assert!(manager.enable_plugin("cjm-echo").await);
    manager
        .execute_plugin("cjm-echo", CallArgs::new().arg("x"))
        .await
        .unwrap();
    assert!(!manager.enable_plugin("no-such-plugin").await);

    let pids: Vec<u32> = ["cjm-echo", "cjm-wordcount"]
        .iter()
        .map(|name| manager.worker_info(name).unwrap().pid)
        .collect();
    manager.unload_all().await;
    for pid in pids {
        assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_counts_a_file_backed_text_and_streams_progress() {
    let home = TestHome::new();
    home.native_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager
        .load_plugin("cjm-wordcount", Some(config(json!({"chunk_bytes": 4096}))))
        .await
        .unwrap();
    let text = "one two  three\nfour\n".repeat(1000);
    let result = manager
        .execute_plugin("cjm-wordcount", CallArgs::new().file_arg(text.clone()))
        .await
        .unwrap();
    assert_eq!(result["lines"], 2000);
    assert_eq!(result["words"], 4000);
    assert_eq!(result["bytes"], text.len());

    let chunks = manager
        .execute_plugin_stream("cjm-wordcount", CallArgs::new().file_arg(text.clone()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let progress: Vec<u64> = chunks
        .iter()
        .filter(|chunk| chunk["status"] == "progress")
        .map(|chunk| chunk["bytes_read"].as_u64().unwrap())
        .collect();
    assert!(progress.len() >= 5, "{progress:?}");
    assert!(progress.windows(2).all(|pair| pair[0] < pair[1]));
    let done = chunks.last().unwrap();
    assert_eq!(
        (done["status"].as_str(), done["words"].as_u64()),
        (Some("done"), Some(4000))
    );
    assert_eq!(entries(&home.temp_dir()), Vec::<std::path::PathBuf>::new());
    manager.shutdown().await;
}
