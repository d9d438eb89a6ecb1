//! The worker's serving model: one thread serves every connection's I/O and plugin
//! code runs on the blocking pool, so no call, however long, and no request waiting
//! for the plugin's lock holds up the others.

use std::path::Path;
use std::thread::JoinHandle;

use crate::common::*;

fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, text) = exchange(
        port,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_ne!(status, 0, "no answer to {method} {path}: {text:?}");
    (status, text)
}

/// `request` on a thread of its own, for a call that runs while the test goes on.
fn in_background(
    port: u16,
    method: &'static str,
    path: &'static str,
    body: String,
) -> JoinHandle<(u16, String)> {
    std::thread::spawn(move || request(port, method, path, &body))
}

/// More long calls than the machine has cores all run at once, and meanwhile the
/// worker answers `/health`, `/progress`, a short call and the `/cancel` that ends them.
#[test]
fn more_long_calls_than_cores_run_at_once_and_the_worker_answers_meanwhile() {
    let worker = HandStartedWorker::start(FAULTY, &[]);
    let port = worker.port;
    let marks = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let long_calls: Vec<_> = (0..cores * 2 + 2)
        .map(|call| {
            let started = marks.path().join(format!("started-{call}"));
            let body = serde_json::json!({
                "args": ["steps", 1_000_000, 20],
                "kwargs": {"started_file": started},
            });
            in_background(port, "POST", "/execute", body.to_string())
        })
        .collect();
    for call in 0..long_calls.len() {
        // Each one reaches the plugin while the others still run: none waits for a
        // thread that another holds.
        wait_for_file(&marks.path().join(format!("started-{call}")));
    }
    assert_eq!(request(port, "GET", "/health", "").0, 200);
    let (status, progress) = request(port, "GET", "/progress", "");
    assert_eq!(status, 200, "{progress}");
    let (status, short) = request(port, "POST", "/execute", r#"{"args": ["pid"]}"#);
    assert_eq!(status, 200, "{short}");
    assert!(
        long_calls.iter().all(|call| !call.is_finished()),
        "a long call ended before it was cancelled"
    );
    let (status, cancelled) = request(port, "POST", "/cancel", "{}");
    assert_eq!(status, 200, "{cancelled}");
    for call in long_calls {
        let (status, answer) = call.join().unwrap();
        assert_eq!(status, 409, "a cancelled call answers 409: {answer}");
    }
}

/// A plugin busy in `initialize` holds its lock: requests that need the plugin wait
/// for it, but they wait off the I/O thread, so `/health`, `/stats` and `/cancel`
/// are answered meanwhile.
#[test]
fn requests_waiting_for_the_plugins_lock_hold_up_nothing_else() {
    let worker = HandStartedWorker::start(FAULTY, &[]);
    let port = worker.port;
    let marks = tempfile::tempdir().unwrap();
    let hold = marks.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let config = serde_json::json!({ "hold_while": hold });
    let initialize = in_background(port, "POST", "/initialize", config.to_string());
    wait_for_file(&hold.with_extension("held"));
    // Waits for the plugin's lock, which `initialize` holds.
    let config_read = in_background(port, "GET", "/config", String::new());
    let call = in_background(port, "POST", "/execute", r#"{"args": ["pid"]}"#.to_owned());
    for path in ["/health", "/stats"] {
        assert_eq!(request(port, "GET", path, "").0, 200, "{path}");
    }
    assert_eq!(request(port, "POST", "/cancel", "{}").0, 200);
    assert!(!initialize.is_finished() && !config_read.is_finished() && !call.is_finished());
    release(&hold);
    assert_eq!(initialize.join().unwrap().0, 200);
    let (status, config) = config_read.join().unwrap();
    assert_eq!(status, 200, "{config}");
    assert!(
        config.contains("hold_while"),
        "the configuration read after initialize: {config}"
    );
    assert_eq!(call.join().unwrap().0, 200);
}

fn release(hold: &Path) {
    std::fs::remove_file(hold).unwrap();
}
