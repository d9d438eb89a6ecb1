//! The worker's HTTP surface, spoken to byte by byte like any peer would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

fn exchange(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_answers_like_the_protocol_says() {
    let home = TestHome::new();
    home.native_manifest("cjm-echo", ECHO, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-echo", None).await.unwrap();
    let proxy = manager.get_plugin("cjm-echo").unwrap();
    let port = proxy.port();
    let pid = proxy.pid();

    let answers = tokio::task::spawn_blocking(move || {
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
    })
    .await
    .unwrap();
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
    // An empty body is an empty call: text is missing, which the plugin reports.
    assert_eq!(answers[5].0, 500);
    assert!(
        answers[5].1.contains("missing required argument 'text'"),
        "{}",
        answers[5].1
    );
    manager.shutdown().await;
}
