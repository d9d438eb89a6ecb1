//! The worker's HTTP surface, spoken to byte by byte like any peer would.

use crate::common::*;

fn exchange_text(port: u16, request: &str) -> (u16, String) {
    let (status, text) = exchange(port, request.as_bytes());
    assert_ne!(status, 0, "no status line in {text:?}");
    (status, text)
}

/// Started by hand, the worker has no secret and answers anyone, as the original's.
#[test]
fn the_worker_answers_like_the_protocol_says() {
    let worker = HandStartedWorker::start(ECHO, &[]);
    let port = worker.port;
    let pid = worker.child.id();
    let exchange = exchange_text;

    let answers = {
        let close = "Connection: close\r\n";
        vec![
            exchange(port, &format!("GET /health HTTP/1.1\r\nHost: x\r\n{close}\r\n")),
            exchange(port, &format!("GET /nowhere HTTP/1.1\r\nHost: x\r\n{close}\r\n")),
            exchange(port, &format!("GET /execute HTTP/1.1\r\nHost: x\r\n{close}\r\n")),
            exchange(
                port,
                &format!("POST /execute HTTP/1.1\r\nHost: x\r\n{close}Content-Length: 5\r\n\r\n{{bad}}"),
            ),
            exchange(
                port,
                &format!(
                    "POST /execute_stream HTTP/1.1\r\nHost: x\r\n{close}Content-Length: 13\r\n\r\n{{\"args\": [2]}}"
                ),
            ),
            exchange(port, &format!("POST /execute HTTP/1.1\r\nHost: x\r\n{close}Content-Length: 0\r\n\r\n")),
        ]
    };
    let (status, health) = &answers[0];
    assert_eq!(*status, 200);
    assert!(
        health.contains(&format!("\"pid\":{pid}")) && health.contains("\"status\":\"running\""),
        "{health}"
    );
    assert_eq!(answers[1].0, 404);
    assert_eq!(answers[2].0, 405);
    assert!(
        answers[2].1.to_ascii_lowercase().contains("allow: post"),
        "{}",
        answers[2].1
    );
    assert_eq!(answers[3].0, 400);
    assert!(answers[3].1.contains("\"detail\""), "{}", answers[3].1);
    let (status, stream) = &answers[4];
    assert_eq!(*status, 200);
    assert!(stream.contains("application/x-ndjson"), "{stream}");
    assert!(
        stream.contains("{\"chunk\":0,\"status\":\"streaming\"}\n"),
        "{stream}"
    );
    assert!(
        stream.contains("{\"chunk\":1,\"status\":\"streaming\"}\n"),
        "{stream}"
    );
    // An empty body is an empty call: text is missing, which the plugin reports as
    // the caller's mistake: 400, with the original's typed error beside `detail`.
    let (status, missing) = &answers[5];
    assert_eq!(*status, 400);
    assert!(
        missing.contains("missing required argument 'text'"),
        "{missing}"
    );
    assert!(
        missing.contains(r#""_job_error":{"category":"user_input""#),
        "{missing}"
    );
    assert!(
        missing.contains(r#""kind":"invalid_argument""#),
        "{missing}"
    );
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    exchange_text(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn get(port: u16, path: &str) -> (u16, String) {
    exchange_text(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// The JSON body of a raw answer.
fn body(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {answer}"))
}

/// The endpoints the original 0.0.46 added, answered as its worker answers them.
#[test]
fn the_worker_answers_the_046_lifecycle_endpoints() {
    let worker = HandStartedWorker::start(ECHO, &[]);
    let port = worker.port;

    let (status, options) = get(port, "/config_options");
    assert_eq!((status, body(&options)), (200, serde_json::json!({})));
    let (status, surface) = get(port, "/structural_surface");
    assert_eq!(status, 200);
    let methods: Vec<String> = body(&surface)["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|method| method["name"].as_str().unwrap().to_owned())
        .collect();
    for expected in ["execute", "reconfigure", "on_enable", "prefetch", "cancel"] {
        assert!(methods.iter().any(|name| name == expected), "{methods:?}");
    }
    for (path, status) in [
        ("/on_disable", "disabled"),
        ("/on_enable", "enabled"),
        ("/prefetch", "prefetched"),
    ] {
        let (code, answer) = post(port, path, "");
        assert_eq!(
            (code, body(&answer)["status"].as_str()),
            (200, Some(status)),
            "{answer}"
        );
    }

    // Reconfigure: the new configuration is checked, then in force.
    let (code, answer) = post(
        port,
        "/reconfigure",
        r#"{"old_config": {"prefix": ""}, "new_config": {"prefix": "> "}}"#,
    );
    assert_eq!(
        (code, body(&answer)["status"].as_str()),
        (200, Some("reconfigured")),
        "{answer}"
    );
    assert_eq!(body(&get(port, "/config").1)["prefix"], "> ");
    let (code, answer) = post(port, "/reconfigure", r#"{"new_config": {"prefix": 7}}"#);
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("prefix"), "{answer}");
    assert_eq!(
        body(&get(port, "/config").1)["prefix"],
        "> ",
        "a refused one changed it"
    );

    // Not a monitor: 404, as the original answers for a plugin without the accessor.
    assert_eq!(post(port, "/get_system_status", "").0, 404);
    assert_eq!(post(port, "/list_processes", "").0, 404);
    assert_eq!(get(port, "/reconfigure").0, 405);

    let monitor = HandStartedWorker::start(SYSMON, &[]);
    let (code, figures) = post(monitor.port, "/get_system_status", "");
    assert_eq!(code, 200, "{figures}");
    assert!(body(&figures)["memory_available_mb"].as_f64().unwrap() > 0.0);
    let (code, processes) = post(monitor.port, "/list_processes", "");
    assert_eq!(code, 200, "{processes}");
    assert!(body(&processes).is_array(), "{processes}");
}
