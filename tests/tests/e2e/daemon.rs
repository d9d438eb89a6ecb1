//! `cjm-ctl serve` as a user runs it: a child process on a temporary CJM_HOME, talked
//! to over its Unix socket with a small HTTP/1.1 client; jobs, events, errors,
//! metrics, the lock, and its stops (SIGTERM, SIGKILL). Every step waits for a
//! condition with a deadline, never for a fixed time.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixStream;

use crate::common::*;

/// A `cjm-ctl serve` child; killed on drop if it still runs.
pub(crate) struct Served {
    child: Child,
    pub(crate) socket: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    ready: String,
}

impl Served {
    pub(crate) fn start(home: &TestHome, args: &[&str], env: &[(&str, &Path)]) -> Served {
        let mut command = Command::new(CTL);
        command
            .arg("serve")
            .args(args)
            .env("CJM_HOME", home.path())
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    stderr.lock().unwrap().push(line);
                }
            });
        }
        let (send, receive) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let ready = receive
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no ready line; stderr: {:?}", stderr.lock().unwrap()));
        Served {
            child,
            socket: home.path().join("daemon.sock"),
            stderr,
            ready,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit: {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for a stderr line containing `text`.
    fn wait_stderr(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.stderr().into_iter().find(|line| line.contains(text)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request on a connection of its own: the status, the content type and the
/// body (JSON when it parses, else a string).
pub(crate) async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, text) = call_raw(socket, method, path, body.map(|b| b.to_string()), &[]).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

pub(crate) async fn call_raw(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let response = send(socket, method, path, body, headers).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

pub(crate) async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "daemon");
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    sender.send_request(request).await.unwrap()
}

/// An event stream being read.
pub(crate) struct Events {
    body: hyper::body::Incoming,
    buffer: String,
}

/// One event: its id, its `event:` name and its data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) id: Option<String>,
    pub(crate) kind: String,
    pub(crate) data: Value,
}

impl Events {
    pub(crate) async fn open(socket: &Path, last_event_id: Option<&str>) -> Events {
        let headers: Vec<(&str, &str)> = last_event_id
            .map(|id| ("last-event-id", id))
            .into_iter()
            .collect();
        let response = send(socket, "GET", "/api/events", None, &headers).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next event (comments and `retry:` skipped).
    pub(crate) async fn next(&mut self) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::new(), None);
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix("id: ") {
                        id = Some(rest.to_owned());
                    } else if let Some(rest) = line.strip_prefix("event: ") {
                        kind = rest.to_owned();
                    } else if let Some(rest) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(rest).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Event { id, kind, data };
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .expect("an event within 20 s")
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// Events until job `job` reaches state `state` (that event included).
    pub(crate) async fn until_state(&mut self, job: u64, state: &str) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let done = event.data["job"] == job && event.data["state"] == state;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Events until job `job` reports progress.
    async fn until_progress(&mut self, job: u64) {
        while !(self.next().await.data)
            .as_object()
            .is_some_and(|data| data["job"] == job && data["change"] == "progress")
        {}
    }
}

fn sequence(id: &Option<String>) -> u64 {
    id.as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn submit(socket: &Path, args: Value) -> u64 {
    let (status, body) = call(
        socket,
        "POST",
        "/api/jobs",
        Some(json!({"plugin": "faulty", "args": args})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_u64().unwrap()
}

async fn worker_pid(socket: &Path) -> u32 {
    let (status, body) = call(socket, "GET", "/api/plugins", None).await;
    assert_eq!(status, 200);
    let faulty = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["name"] == "faulty")
        .unwrap()
        .clone();
    assert_eq!(faulty["loaded"], true, "{faulty}");
    assert_eq!(faulty["state"], "running", "{faulty}");
    assert!(faulty["rss_bytes"].as_u64().unwrap() > 0, "{faulty}");
    faulty["pid"].as_u64().unwrap() as u32
}

pub(crate) fn assert_error(status: u16, body: &Value, want_status: u16, error: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["category"], "user_input", "{body}");
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
}

/// A request of `length` bytes of body, written by hand: the daemon answers 413
/// without reading it all, so the writer may find the socket closed.
fn huge_request(socket: &Path, length: usize) -> String {
    let mut stream = StdUnixStream::connect(socket).unwrap();
    let head = format!(
        "POST /api/jobs HTTP/1.1\r\nhost: daemon\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b'a'; length]);
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    writing.join().unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn journal_state(home: &TestHome, journal_id: &str) -> String {
    let entry = cjm_manager::jobs::journal_entry(&home.path().join("jobs.sqlite3"), journal_id)
        .unwrap()
        .unwrap_or_else(|| panic!("{journal_id} is not in the journal"));
    entry.state.as_str().to_owned()
}

/// A Python with prometheus_client: $CJM_TEST_PROM_PYTHON, or a venv of the tests'
/// own under target/; `None` (said on stderr) where pip cannot reach PyPI.
// The skip is said on stderr, where cargo test shows it.
#[allow(clippy::print_stderr)]
fn prometheus_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("CJM_TEST_PROM_PYTHON").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(python));
    }
    let venv = crate::python_env::workspace_root().join("target/prom-venv");
    let python = venv.join("bin/python");
    let has_client = |python: &Path| {
        Command::new(python)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if has_client(&python) {
        return Some(python);
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status();
    let installed = made.is_ok_and(|status| status.success())
        && Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "prometheus_client",
            ])
            .status()
            .is_ok_and(|status| status.success());
    if installed && has_client(&python) {
        Some(python)
    } else {
        eprintln!("skipped: the Prometheus parser check (pip could not install prometheus_client)");
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_jobs_streams_events_refuses_bad_requests_and_stops_on_sigterm() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let notify_path = home.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut served = Served::start(
        &home,
        &["--load", "faulty"],
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let socket = served.socket.clone();
    assert_eq!(
        served.ready,
        format!(
            "ready: serving on unix:{} (pid {})",
            socket.display(),
            served.pid()
        )
    );
    let mut datagram = [0u8; 64];
    let length = notify.recv(&mut datagram).unwrap();
    assert_eq!(&datagram[..length], b"READY=1");
    let (status, health) = call(&socket, "GET", "/api/health", None).await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let worker = worker_pid(&socket).await;

    // A job: its events in order over SSE, its result through the long poll.
    let mut events = Events::open(&socket, None).await;
    let job = submit(&socket, json!(["steps", 5, 20])).await;
    let (status, waited) = call(
        &socket,
        "GET",
        &format!("/api/jobs/{job}/wait?timeout_ms=20000"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(waited["ended"], true, "{waited}");
    assert_eq!(waited["job"]["state"], "succeeded", "{waited}");
    assert_eq!(waited["result"]["steps"], 5, "{waited}");
    let seen = events.until_state(job, "succeeded").await;
    let ids: Vec<u64> = seen.iter().map(|event| sequence(&event.id)).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(seen[0].data["state"], "queued", "{seen:?}");
    let states: Vec<&str> = seen
        .iter()
        .filter_map(|event| event.data["state"].as_str())
        .collect();
    let running = states.iter().position(|state| *state == "running").unwrap();
    let fractions: Vec<f64> = seen
        .iter()
        .filter(|event| event.data["change"] == "progress")
        .map(|event| event.data["fraction"].as_f64().unwrap())
        .collect();
    assert!(!fractions.is_empty(), "{seen:?}");
    assert!(
        fractions.windows(2).all(|pair| pair[0] < pair[1]),
        "{fractions:?}"
    );
    let first_progress = seen
        .iter()
        .position(|event| event.data["change"] == "progress")
        .unwrap();
    assert!(
        seen.iter()
            .position(|event| event.data["state"] == "running")
            .unwrap()
            < first_progress
    );
    assert!(running < states.len());

    // A reconnect with Last-Event-ID resumes right after it, from the buffer.
    let mut resumed = Events::open(&socket, seen[1].id.as_deref()).await;
    assert_eq!(resumed.next().await, seen[2]);

    // A cancel of a running job.
    let endless = submit(&socket, json!(["steps", 100000, 20])).await;
    events.until_progress(endless).await;
    let (status, cancelled) = call(
        &socket,
        "POST",
        &format!("/api/jobs/job-{endless}/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (status, &cancelled["cancelled"]),
        (200, &json!(true)),
        "{cancelled}"
    );
    let (_, waited) = call(
        &socket,
        "GET",
        &format!("/api/jobs/{endless}/wait?timeout_ms=20000"),
        None,
    )
    .await;
    assert_eq!(waited["job"]["state"], "cancelled", "{waited}");
    assert_eq!(waited["job"]["cancelled"], "cooperative", "{waited}");
    events.until_state(endless, "cancelled").await;

    // Bad requests: JSON errors, and the daemon and its worker go on.
    let (status, body) = call_raw(
        &socket,
        "POST",
        "/api/jobs",
        Some(String::from("{\"plugin\": \"faulty\",")),
        &[],
    )
    .await
    .into_json();
    assert_error(status, &body, 400, "invalid_json");
    let (status, body) = call(
        &socket,
        "POST",
        "/api/jobs",
        Some(json!({"plugin": "nope"})),
    )
    .await;
    assert_error(status, &body, 404, "unknown_plugin");
    let (status, body) = call(
        &socket,
        "POST",
        "/api/jobs",
        Some(json!({"plugin": "faulty", "args": "x"})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = call(
        &socket,
        "POST",
        "/api/jobs",
        Some(json!({"plugin": "faulty", "bogus": 1})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = call(&socket, "GET", "/api/jobs/banana", None).await;
    assert_error(status, &body, 400, "invalid_job_id");
    let (status, body) = call(&socket, "GET", "/api/jobs/999", None).await;
    assert_error(status, &body, 404, "unknown_job");
    let (status, body) = call(&socket, "DELETE", "/api/jobs", None).await;
    assert_error(status, &body, 405, "method_not_allowed");
    let (status, body) = call(&socket, "GET", "/api/nothing", None).await;
    assert_error(status, &body, 404, "no_such_route");
    let huge = huge_request(&socket, 2 << 20);
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("\"error\":\"body_too_large\""), "{huge}");
    assert_eq!(call(&socket, "GET", "/api/health", None).await.0, 200);
    assert_eq!(worker_pid(&socket).await, worker);
    let after = submit(&socket, json!(["steps", 2, 1])).await;
    let (_, waited) = call(&socket, "GET", &format!("/api/jobs/{after}/wait"), None).await;
    assert_eq!(waited["job"]["state"], "succeeded", "{waited}");

    // Metrics: what happened, counted, in a format a real parser reads. The
    // counters follow the job events, which the daemon reads a moment after a wait
    // may have answered: waited for, with a deadline.
    let want = [
        "cjm_jobs_submitted_total{plugin=\"faulty\"} 3",
        "cjm_jobs_finished_total{plugin=\"faulty\",status=\"succeeded\"} 2",
        "cjm_jobs_finished_total{plugin=\"faulty\",status=\"cancelled\"} 1",
        "cjm_workers_running 1",
        "cjm_job_run_seconds_count{plugin=\"faulty\"} 3",
        "cjm_build_info{version=\"",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, content_type, text) = call_raw(&socket, "GET", "/metrics", None, &[]).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|line| !text.contains(line))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(Instant::now() < deadline, "{missing:?} not in:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(!text.contains("job-"), "a job id in a label:\n{text}");
    if let Some(python) = prometheus_python() {
        let parsed = Command::new(python)
            .args(["-c", "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nfor f in p(sys.stdin.read()):\n    for s in f.samples: print(s.name, float(s.value))"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(text.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            parsed.status.success(),
            "{}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        let samples = String::from_utf8(parsed.stdout).unwrap();
        assert!(
            samples
                .lines()
                .any(|line| line == "cjm_jobs_submitted_total 3.0"),
            "{samples}"
        );
        assert!(
            samples
                .lines()
                .any(|line| line.starts_with("cjm_worker_resident_memory_bytes ")),
            "{samples}"
        );
    }

    // One daemon per home: a second is refused, naming the first's pid.
    let second = Command::new(CTL)
        .arg("serve")
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains(&format!("pid {} holds its lock", served.pid())),
        "{said}"
    );
    // A network address is refused without TLS (daemon_auth.rs tests the rest).
    let open = Command::new(CTL)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("CJM_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&open.stderr).contains("TLS"),
        "{open:?}"
    );

    // SIGTERM: a running job may end within the grace period; then exit 0, no
    // worker, no socket, the journal complete.
    let last = submit(&socket, json!(["steps", 10, 100])).await;
    events.until_progress(last).await;
    let (_, status_body) = call(&socket, "GET", &format!("/api/jobs/{last}"), None).await;
    let journal_id = status_body["journal_id"].as_str().unwrap().to_owned();
    served.signal(rustix::process::Signal::TERM);
    let finished = events.until_state(last, "succeeded").await;
    assert!(!finished.is_empty());
    let exit = served.wait_exit(Duration::from_secs(60));
    assert_eq!(exit.code(), Some(0), "{:?}", served.stderr());
    assert!(
        wait_gone(worker, Duration::from_secs(20)).is_some(),
        "worker {worker} left behind"
    );
    assert!(!socket.exists());
    assert_eq!(journal_state(&home, &journal_id), "succeeded");
    served.wait_stderr("SIGTERM: stopping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_runs_out_then_jobs_are_cancelled_and_a_sigkilled_daemons_jobs_are_reported() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);

    // The grace period runs out: the job is cancelled, the daemon still exits 0.
    let mut served = Served::start(&home, &["--load", "faulty", "--grace-secs", "1"], &[]);
    let socket = served.socket.clone();
    let worker = worker_pid(&socket).await;
    let mut events = Events::open(&socket, None).await;
    let job = submit(&socket, json!(["steps", 100000, 20])).await;
    events.until_progress(job).await;
    let (_, body) = call(&socket, "GET", &format!("/api/jobs/{job}"), None).await;
    let journal_id = body["journal_id"].as_str().unwrap().to_owned();
    served.signal(rustix::process::Signal::TERM);
    served.wait_stderr("grace period over");
    let exit = served.wait_exit(Duration::from_secs(60));
    assert_eq!(exit.code(), Some(0), "{:?}", served.stderr());
    assert_eq!(journal_state(&home, &journal_id), "cancelled");
    assert!(wait_gone(worker, Duration::from_secs(20)).is_some());
    drop(served);

    // SIGKILL: the worker dies with its host; the next serve reports the job.
    let mut served = Served::start(&home, &["--load", "faulty"], &[]);
    let worker = worker_pid(&socket).await;
    let mut events = Events::open(&socket, None).await;
    let job = submit(&socket, json!(["steps", 100000, 20])).await;
    events.until_progress(job).await;
    let (_, body) = call(&socket, "GET", &format!("/api/jobs/{job}"), None).await;
    let journal_id = body["journal_id"].as_str().unwrap().to_owned();
    // The journal is written a moment behind: the job's start must be in it before
    // the kill for the next host to know it was running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal_state(&home, &journal_id) != "running" {
        assert!(
            Instant::now() < deadline,
            "the journal never saw {journal_id} run"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.signal(rustix::process::Signal::KILL);
    served.wait_exit(Duration::from_secs(20));
    assert!(
        wait_gone(worker, Duration::from_secs(20)).is_some(),
        "worker {worker} outlived its SIGKILLed host"
    );
    drop(served);
    let mut next = Served::start(&home, &[], &[]);
    let line = next.wait_stderr("interrupted:");
    assert!(line.contains(&journal_id), "{line}");
    let (_, jobs) = call(&socket, "GET", "/api/jobs", None).await;
    assert!(
        jobs["interrupted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["id"] == journal_id.as_str()),
        "{jobs}"
    );
    next.signal(rustix::process::Signal::INT);
    assert_eq!(next.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

trait IntoJson {
    fn into_json(self) -> (u16, Value);
}

impl IntoJson for (u16, String, String) {
    fn into_json(self) -> (u16, Value) {
        (
            self.0,
            serde_json::from_str(&self.2).unwrap_or(Value::String(self.2)),
        )
    }
}
