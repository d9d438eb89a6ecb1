//! Bad input at the worker's door: random methods, paths, headers and bodies, huge
//! and deeply nested JSON. Whatever comes, the answer is an HTTP status with a reason,
//! and the worker keeps serving.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

use crate::common::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map("[a-z_]{0,8}", inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..2048),
        json_value().prop_map(|value| value.to_string().into_bytes()),
        (json_value(), json_value()).prop_map(|(args, kwargs)| {
            serde_json::json!({"args": args, "kwargs": kwargs})
                .to_string()
                .into_bytes()
        }),
        (0usize..4096).prop_map(|depth| {
            let mut nested = "[".repeat(depth).into_bytes();
            nested.extend(std::iter::repeat_n(b']', depth));
            nested
        }),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"
        ])
        .prop_map(str::to_owned),
        "[A-Z]{1,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/health",
            "/stats",
            "/initialize",
            "/config_schema",
            "/config",
            "/execute",
            "/execute_stream",
            "/execute?x=1",
        ])
        .prop_map(str::to_owned),
        "/[a-zA-Z0-9_%./?=&-]{0,40}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(("X-[A-Za-z-]{1,16}", "[ -~]{0,40}"), 0..6)
}

/// The statuses a worker may answer: never a bare connection drop or a crash.
const STATUSES: [u16; 7] = [200, 400, 404, 405, 413, 431, 500];

/// The worker must still answer `/health`.
fn still_serving(port: u16) {
    let (status, text) = exchange(
        port,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn random_requests_get_a_status_and_a_reason_and_the_worker_survives() {
    let worker = HandStartedWorker::start(ECHO, &[]);
    let port = worker.port;
    let config = ProptestConfig {
        cases: 160,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(method in method(), path in path(), headers in headers(), body in body())| {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for (name, value) in &headers {
            request.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&body);
        let (status, text) = exchange(port, &bytes);
        prop_assert!(STATUSES.contains(&status), "status {} for {} {}: {}", status, method, path, text);
        if status >= 400 && method != "HEAD" {
            prop_assert!(text.contains("\"detail\""), "{}", text);
        }
        still_serving(port);
    });
}

#[test]
fn random_bytes_on_the_socket_never_take_the_worker_down() {
    let worker = HandStartedWorker::start(ECHO, &[]);
    let port = worker.port;
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(garbage in vec(any::<u8>(), 0..4096))| {
        let (status, _) = exchange(port, &garbage);
        // Not HTTP: hyper answers 400 or closes; either way nothing else.
        prop_assert!(status == 0 || status == 400 || status == 431, "status {}", status);
        still_serving(port);
    });
}

#[test]
fn json_nested_beyond_the_parsers_limit_is_a_400_not_a_crash() {
    let worker = HandStartedWorker::start(ECHO, &[]);
    for depth in [129, 10_000, 1_000_000] {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let request = format!(
            "POST /execute HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = exchange(worker.port, request.as_bytes());
        assert_eq!(status, 400, "depth {depth}: {text}");
        assert!(text.contains("recursion limit exceeded"), "{text}");
    }
    still_serving(worker.port);
}

#[test]
fn bodies_over_the_configured_limit_get_413_whether_declared_or_chunked() {
    let worker = HandStartedWorker::start(ECHO, &[("CJM_MAX_BODY_BYTES", "4096")]);
    let port = worker.port;
    let big = format!("{{\"args\": [\"{}\"]}}", "x".repeat(5000));
    let declared = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let (status, text) = exchange(port, declared.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("request body exceeds the worker's limit of 4096 bytes"),
        "{text}"
    );
    let chunked = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (status, text) = exchange(port, chunked.as_bytes());
    assert_eq!(status, 413, "{text}");
    let small = "{\"args\": [\"hi\"]}";
    let fits = format!(
        "POST /execute HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{small}",
        small.len()
    );
    assert_eq!(exchange(port, fits.as_bytes()).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_sets_a_plugins_body_limit_and_the_host_sees_413() {
    let home = TestHome::new();
    home.write_manifest(
        "cjm-echo",
        serde_json::json!({
            "name": "cjm-echo",
            "version": "0.1.0",
            "command": ECHO,
            "env_vars": {"CJM_MAX_BODY_BYTES": "1000"},
        }),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-echo", None).await.unwrap();
    let err = manager
        .execute_plugin(
            "cjm-echo",
            cjm_manager::CallArgs::new().arg("x".repeat(2000)),
        )
        .await
        .unwrap_err();
    match &err {
        cjm_manager::ManagerError::Plugin(cjm_manager::ProxyError::Http { status, .. }) => {
            assert_eq!(*status, 413, "{err}")
        }
        other => panic!("unexpected {other:?}"),
    }
    manager
        .execute_plugin("cjm-echo", cjm_manager::CallArgs::new().arg("short"))
        .await
        .unwrap();
    manager.shutdown().await;
}
