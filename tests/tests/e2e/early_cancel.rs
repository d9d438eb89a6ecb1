//! A cancel that overtakes its call (the host sends `/cancel` and `/execute` on
//! separate connections, so either may arrive first), and call ids used twice: on a
//! real worker, raw and through the host's proxy.

use std::time::{Duration, Instant};

use cjm_interface::wire;
use cjm_manager::jobs::{Cancellation, JobOptions, JobState, Jobs};
use cjm_manager::{CallArgs, ProxyError};
use serde_json::{json, Value};

use crate::common::*;

fn post(port: u16, path: &str, headers: &str, body: &str) -> (u16, String) {
    let (status, text) = exchange(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_ne!(status, 0, "no answer to {path}: {text:?}");
    (status, text)
}

fn cancel(port: u16, id: &str) -> (u16, Value) {
    let (status, text) = post(port, "/cancel", "", &json!({"call_id": id}).to_string());
    (status, body(&text))
}

fn execute(port: u16, id: &str, args: Value) -> (u16, Value) {
    let (status, text) = post(
        port,
        "/execute",
        &format!("{}: {id}\r\n", wire::CALL_ID_HEADER),
        &json!({"args": args}).to_string(),
    );
    (status, body(&text))
}

fn body(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {answer}"))
}

/// The answer of a call refused because its cancel came first: the one a call
/// cancelled while running gets.
fn assert_refused_as_cancelled(status: u16, answer: &Value) {
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["kind"], "cancelled", "{answer}");
    let job_error = &answer["_job_error"];
    assert!(
        job_error["original_exc_repr"]
            .as_str()
            .is_some_and(|repr| repr.starts_with("PluginCancelledError")),
        "{answer}"
    );
    assert_eq!(job_error["retriable"], false, "{answer}");
}

#[test]
fn a_call_whose_cancel_came_first_is_refused_the_moment_it_arrives() {
    let worker = HandStartedWorker::start(FAULTY, &[]);
    let (status, answer) = cancel(worker.port, "job-7-early");
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["kind"], wire::KIND_UNKNOWN_CALL, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("no call job-7-early is known") && detail.contains("remembered"),
        "{detail}"
    );
    // A call deaf to cancellation for a minute: only a refusal answers at once.
    let asked = Instant::now();
    let (status, answer) = execute(worker.port, "job-7-early", json!(["sleep", 60_000]));
    assert_refused_as_cancelled(status, &answer);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    // Refused once: the cancel is used up.
    let (status, answer) = execute(worker.port, "job-7-early", json!(["pid"]));
    assert_eq!((status, &answer["pid"]), (200, &json!(worker.child.id())));
    // That call has ended now: a late cancel is no news, and not remembered.
    let (status, answer) = cancel(worker.port, "job-7-early");
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("error")),
        "{answer}"
    );
    assert!(
        answer["detail"].as_str().unwrap().contains("already ended"),
        "{answer}"
    );
    let (status, _) = execute(worker.port, "job-7-early", json!(["pid"]));
    assert_eq!(status, 200);
}

#[test]
fn early_cancels_are_bounded_the_oldest_forgotten_first() {
    let worker = HandStartedWorker::start(FAULTY, &[]);
    for n in 0..=1024 {
        let (status, answer) = cancel(worker.port, &format!("early-{n}"));
        assert_eq!(status, 404, "{answer}");
    }
    // 1025 remembered at most 1024: the first made way for the last.
    let (status, answer) = execute(worker.port, "early-0", json!(["pid"]));
    assert_eq!(status, 200, "the oldest early cancel was kept: {answer}");
    for n in [1, 512, 1024] {
        let (status, answer) = execute(worker.port, &format!("early-{n}"), json!(["pid"]));
        assert_refused_as_cancelled(status, &answer);
    }
}

#[test]
fn a_second_call_under_an_id_in_flight_is_refused_and_the_first_stays_reachable() {
    let worker = HandStartedWorker::start(FAULTY, &[]);
    let port = worker.port;
    // Cooperative and long: it ends when cancelled, and only then.
    let first = std::thread::spawn(move || execute(port, "twice", json!(["steps", 1_000_000, 20])));
    // Running once it reported its first step.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = exchange(
            port,
            b"GET /progress?call=twice HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let report = body(&text);
        if status == 200 && report["seq"].as_u64().is_some_and(|seq| seq > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first call never ran: {report}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, answer) = execute(port, "twice", json!(["pid"]));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("call id twice is already in use")),
        "{answer}"
    );
    assert_eq!(answer["_job_error"]["category"], "user_input", "{answer}");
    // The refused call took nothing from the first: its cancel still reaches it.
    let (status, answer) = cancel(port, "twice");
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("cancelled")),
        "{answer}"
    );
    let (status, answer) = first.join().unwrap();
    assert_refused_as_cancelled(status, &answer);
}

/// The host's side: a cancel for a call the worker has not seen is taken ("asked"),
/// and the call is then refused as cancelled; the host need not force anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reads_an_early_cancel_as_asked_and_the_call_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let spec = cjm_proxy::LaunchSpec::new("faulty", FAULTY, dir.path().join("faulty.log"));
    let proxy = cjm_proxy::RemotePluginProxy::start(spec).await.unwrap();
    let answer = proxy.cancel(Some("job-9-attempt-1")).await.unwrap();
    assert_eq!(answer.status, wire::CANCEL_STATUS_REMEMBERED, "{answer:?}");
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        proxy.execute_as(
            CallArgs::new().arg("sleep").arg(60_000),
            Some("job-9-attempt-1"),
        ),
    )
    .await
    .expect("refused at once, not run");
    match refused {
        Err(ProxyError::Cancelled { detail, .. }) => {
            assert!(detail.contains("before it reached the worker"), "{detail}");
        }
        other => panic!("not refused as cancelled: {other:?}"),
    }
    proxy.shutdown().await;
}

/// The original 0.0.20 runs a call on its event loop: it answers nothing, `/cancel`
/// included, until the call ends. The host's ask must not wait for that answer
/// forever: the job is forced after its cancel timeout like any call that ignores
/// its cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_worker_too_busy_to_answer_its_cancel_is_forced_all_the_same() {
    use std::os::unix::fs::OpenOptionsExt;

    let home = TestHome::new();
    home.write_manifest(
        "cjm-echo-py",
        json!({
            "name": "cjm-echo-py",
            "version": "0.1.0",
            "category": "test",
            "python_path": crate::python_env::python(),
            "module": "cjm_echo_py.plugin",
            "class": "EchoPlugin",
            "env_vars": {"PYTHONPATH": crate::python_env::fixture_dir().join("cjm-echo-py")},
        }),
    );
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("cjm-echo-py", None).await.unwrap();
    // The echo reads the file it is given: a pipe nobody writes holds it there.
    let fifo = home.path().join("held.fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    let jobs = Jobs::new(
        manager.clone(),
        JobOptions::default().cancel_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let job = jobs
        .submit(
            "cjm-echo-py",
            CallArgs::new().kwarg("file_path", fifo.to_str().unwrap()),
            0,
        )
        .unwrap();
    // The call is in the plugin once the pipe has a reader: only then can a writer
    // open it without blocking. Held open, it keeps the plugin reading.
    let deadline = Instant::now() + Duration::from_secs(60);
    let _writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(writer) => break writer,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "the call never opened the pipe: {err}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let asked = Instant::now();
    assert!(jobs.cancel(job).unwrap());
    let ended = tokio::time::timeout(Duration::from_secs(60), jobs.wait(job))
        .await
        .expect("the cancel waited for a worker that cannot answer")
        .unwrap();
    assert_eq!(ended.status.state, JobState::Cancelled);
    assert_eq!(ended.status.cancelled, Some(Cancellation::Forced));
    // The ask's bound (5 s) and the cancel timeout (1 s), with the kill's grace.
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "{:?}",
        asked.elapsed()
    );
    jobs.shutdown().await;
    manager.shutdown().await;
}
