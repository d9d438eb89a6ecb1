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
