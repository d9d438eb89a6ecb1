//! One live daemon (loopback TCP, with its token) under abuse and load: a thousand bad
//! requests of many kinds and a few slowloris connections, 200 event streams at once,
//! 10 000 jobs. Every bad request gets its JSON error (or, for what is not HTTP,
//! a bare 400 or a close); the daemon goes on serving; its open files come back to
//! where they were and its memory stays within a stated bound; every client sees the
//! same events in order; 10 000 jobs end and the journal says so.
//!
//! Bounds (asserted): after the bad requests, RSS within +24 MiB of the warmed-up
//! figure and open fds within +8; after the 200 streams close, fds within +8 again;
//! after the jobs, RSS within +160 MiB (10 000 ended jobs are kept in memory by
//! design: `keep_finished`). `CJM_SOAK_JOBS` sets the number of jobs (default
//! 10 000, about 30 s on two busy cores, as long as the slowloris connections take to
//! be closed). The figures are printed (`-- --nocapture`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::common::*;
use crate::daemon_tcp::TcpServed;

/// What a bad request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and a JSON error body with this `error`.
    Json(u16, &'static str),
    /// Not HTTP the router could see: hyper's bare 4xx, or the connection closed.
    BareOrClosed,
}

/// A bad request of kind `kind`, as bytes, and what it must get.
fn bad_request(kind: usize, host: &str, token: &str) -> (Vec<u8>, Expect) {
    let auth = format!("authorization: Bearer {token}\r\n");
    let post = |path: &str, body: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\n{auth}{extra}connection: close\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n")
            .into_bytes()
    };
    match kind % 16 {
        0 => (
            post("/api/jobs", "{\"plugin\": \"faulty\",", ""),
            Expect::Json(400, "invalid_json"),
        ),
        1 => (
            post("/api/jobs", "{\"plugin\": 5}", ""),
            Expect::Json(400, "invalid_request"),
        ),
        2 => (
            post(
                "/api/jobs",
                "{\"plugin\": \"faulty\", \"args\": [], \"surprise\": 1}",
                "",
            ),
            Expect::Json(400, "invalid_request"),
        ),
        3 => {
            // Declared past the bound: refused before a byte of it is read.
            let head = format!(
                "POST /api/jobs HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\
                 content-length: {}\r\n\r\n",
                4 << 20
            );
            let mut bytes = head.into_bytes();
            bytes.extend(std::iter::repeat_n(b'a', 64 << 10));
            (bytes, Expect::Json(413, "body_too_large"))
        }
        4 => {
            // Chunked, no length said: refused once past the bound.
            let mut bytes = format!(
                "POST /api/jobs HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\
                 transfer-encoding: chunked\r\n\r\n"
            )
            .into_bytes();
            let chunk = vec![b'['; 256 << 10];
            for _ in 0..6 {
                bytes.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
                bytes.extend(&chunk);
                bytes.extend(b"\r\n");
            }
            bytes.extend(b"0\r\n\r\n");
            (bytes, Expect::Json(413, "body_too_large"))
        }
        5 => (
            format!("DELETE /api/jobs HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n")
                .into_bytes(),
            Expect::Json(405, "method_not_allowed"),
        ),
        6 => (
            get("/api/nothing/here", &auth),
            Expect::Json(404, "no_such_route"),
        ),
        7 => (get("/api/jobs", ""), Expect::Json(401, "unauthorized")),
        8 => (
            get("/api/jobs", "authorization: Bearer 0123456789abcdef\r\n"),
            Expect::Json(401, "unauthorized"),
        ),
        9 => (
            get("/api/jobs", "cookie: cjm_session=forged\r\n"),
            Expect::Json(401, "unauthorized"),
        ),
        10 => (
            get("/api/jobs/not-a-number", &auth),
            Expect::Json(400, "invalid_job_id"),
        ),
        11 => (
            post("/api/jobs/987654321/cancel", "", ""),
            Expect::Json(404, "unknown_job"),
        ),
        12 => (
            post("/api/jobs", "{\"plugin\": \"nobody\", \"args\": []}", ""),
            Expect::Json(404, "unknown_plugin"),
        ),
        13 => (
            post(
                "/api/jobs",
                "{\"plugin\": \"faulty\", \"args\": []}",
                "origin: http://evil.example\r\n",
            ),
            Expect::Json(403, "cross_origin"),
        ),
        // Truncated: fewer bytes than said, then the write side closed.
        14 => {
            let mut bytes = format!(
                "POST /api/jobs HTTP/1.1\r\nhost: {host}\r\n{auth}content-length: 100\r\n\r\n"
            )
            .into_bytes();
            bytes.extend(b"{\"plug");
            (bytes, Expect::BareOrClosed)
        }
        // Not HTTP at all, or a head cut short.
        _ => match kind % 3 {
            0 => (b"HELLO THERE\r\n\r\n".to_vec(), Expect::BareOrClosed),
            1 => (b"GET /api/health HTT".to_vec(), Expect::BareOrClosed),
            _ => (
                vec![0u8, 159, 146, 150, 13, 10, 13, 10],
                Expect::BareOrClosed,
            ),
        },
    }
}

/// Send `bytes`, read the answer (or the close). A request cut short is followed by
/// closing our write side (else the daemon would wait for the rest, as it should, up
/// to its header limit); a whole one is not, since a server may take a half-close for
/// a client gone.
fn exchange_raw(addr: SocketAddr, bytes: Vec<u8>, expect: Expect) -> Option<(u16, String)> {
    let half_close = matches!(expect, Expect::BareOrClosed);
    let mut stream = StdTcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Its own thread: the daemon may answer (413) and close before taking it all.
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
        if half_close {
            let _ = writer.shutdown(std::net::Shutdown::Write);
        }
    });
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("no answer and no close within 20 s: {err}"),
    }
    writing.join().unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

fn check_bad(kind: usize, expect: Expect, answer: Option<(u16, String)>) {
    match (expect, answer) {
        (Expect::Json(status, error), Some((got, body))) => {
            let value: Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("kind {kind}: not JSON: {got} {body:?}"));
            assert_eq!(
                (got, value["error"].as_str()),
                (status, Some(error)),
                "kind {kind}: {value}"
            );
            assert!(
                value["category"].is_string() && value["detail"].is_string(),
                "{value}"
            );
        }
        (Expect::Json(status, error), None) => {
            panic!("kind {kind}: closed without its {status} {error}")
        }
        (Expect::BareOrClosed, Some((got, _))) => {
            assert!((400..500).contains(&got), "kind {kind}: {got}")
        }
        (Expect::BareOrClosed, None) => {}
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Wait until the daemon's open fds are at most `bound`.
async fn fds_back_to(pid: u32, bound: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds(pid) > bound {
        assert!(
            Instant::now() < deadline,
            "{what}: {} fds open, bound {bound}",
            open_fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection kept alive for many requests.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Conn {
    async fn open(served: &TcpServed, token: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(served.connect_addr())
            .await
            .unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Conn {
            sender,
            host: served.host(),
            auth: format!("Bearer {token}"),
        }
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.sender.ready().await.unwrap();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.auth)
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// One SSE client: the `job` events of job `job` (known once submitted, which may be
/// after its first events came), in the order they came, until it succeeded.
async fn job_events(
    mut body: hyper::body::Incoming,
    job: Arc<std::sync::OnceLock<u64>>,
) -> Vec<(u64, Value)> {
    let mut buffer = String::new();
    let mut all: Vec<(u64, Value)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut is_job, mut data) = (None, false, None);
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("id: ") {
                    id = rest.rsplit(':').next().and_then(|n| n.parse::<u64>().ok());
                } else if let Some(rest) = line.strip_prefix("event: ") {
                    is_job = rest == "job";
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data = serde_json::from_str::<Value>(rest).ok();
                }
            }
            if let (Some(id), Some(data), true) = (id, data, is_job) {
                all.push((id, data));
            }
        }
        if let Some(&wanted) = job.get() {
            let mine: Vec<(u64, Value)> = all
                .iter()
                .filter(|(_, data)| data["job"] == wanted)
                .cloned()
                .collect();
            if mine.iter().any(|(_, data)| data["state"] == "succeeded") {
                return mine;
            }
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the job's events within 40 s")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

// The figures are the point of a soak: said on stderr, which cargo test shows.
#[allow(clippy::print_stderr)]
async fn soak(jobs: usize) {
    let started = Instant::now();
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let mut served = TcpServed::start(
        &home,
        &["--listen", "127.0.0.1:0", "--load", "faulty"],
        "warn",
    );
    let pid = served.pid();
    let token = TcpServed::token(&home);
    let addr = served.connect_addr();
    let host = served.host();
    let mut conn = Conn::open(&served, &token).await;

    // Slowloris: a few connections dribbling a header a byte at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut stream = StdTcpStream::connect(addr).unwrap();
                let began = Instant::now();
                let _ = stream.write_all(b"GET /api/health HTTP/1.1\r\nx-slow: ");
                stream
                    .set_read_timeout(Some(Duration::from_millis(250)))
                    .unwrap();
                let mut byte = [0u8; 512];
                while !stop.load(Ordering::SeqCst) {
                    if stream.write_all(b"a").is_err() {
                        return Some(began.elapsed());
                    }
                    match stream.read(&mut byte) {
                        Ok(_) => return Some(began.elapsed()),
                        Err(err)
                            if matches!(
                                err.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return Some(began.elapsed()),
                    }
                }
                None
            })
        })
        .collect();

    // Warm up (the first requests allocate what every later one reuses), then the
    // figures to hold to.
    for kind in 0..32 {
        let (bytes, expect) = bad_request(kind, &host, &token);
        check_bad(kind, expect, exchange_raw(addr, bytes, expect));
    }
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));

    // A thousand bad requests, eight at a time.
    let bad_started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (host, token) = (host.clone(), token.clone());
            std::thread::spawn(move || {
                for kind in (worker..1000).step_by(8) {
                    let (bytes, expect) = bad_request(kind, &host, &token);
                    check_bad(kind, expect, exchange_raw(addr, bytes, expect));
                }
            })
        })
        .collect();
    // Serving all the while.
    while workers.iter().any(|worker| !worker.is_finished()) {
        let (status, health) = conn.call("GET", "/api/health", None).await;
        assert_eq!(status, 200, "{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let bad_took = bad_started.elapsed();
    fds_back_to(pid, fds_before + 8, "after the bad requests").await;
    let rss_after_bad = rss_kib(pid);
    assert!(
        rss_after_bad <= rss_before + 24 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after_bad} KiB over 1000 bad requests"
    );

    // 200 event streams at once, the same events of one job in order on each.
    let job = Arc::new(std::sync::OnceLock::new());
    let mut streams = Vec::new();
    for _ in 0..200 {
        let response = served
            .send(
                "GET",
                "/api/events",
                &[("authorization", &format!("Bearer {token}"))],
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        streams.push(tokio::spawn(job_events(
            response.into_body(),
            Arc::clone(&job),
        )));
    }
    let (status, body) = conn
        .call(
            "POST",
            "/api/jobs",
            Some(json!({"plugin": "faulty", "args": ["steps", 5, 10]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    job.set(body["id"].as_u64().unwrap()).unwrap();
    let mut first: Option<Vec<(u64, Value)>> = None;
    for stream in streams {
        let seen = stream.await.unwrap();
        assert!(
            seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{seen:?}"
        );
        // Progress reports may be coalesced under load; the states are all there.
        let states: Vec<&Value> = seen
            .iter()
            .filter(|(_, data)| data["change"] == "state")
            .map(|(_, data)| &data["state"])
            .collect();
        assert_eq!(
            states,
            ["queued", "admitted", "running", "succeeded"],
            "{seen:?}"
        );
        match &first {
            None => first = Some(seen),
            Some(first) => assert_eq!(&seen, first),
        }
    }
    fds_back_to(pid, fds_before + 8, "after the 200 streams").await;

    // The jobs: submitted over 8 kept-alive connections, each then waited for.
    let jobs_started = Instant::now();
    let mut submitters = Vec::new();
    for lane in 0..8 {
        let mut conn = Conn::open(&served, &token).await;
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (lane..jobs).step_by(8) {
                let (status, body) = conn
                    .call(
                        "POST",
                        "/api/jobs",
                        Some(json!({"plugin": "faulty", "args": ["pid"]})),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
                ids.push(body["id"].as_u64().unwrap());
            }
            for id in ids {
                let (status, body) = conn
                    .call(
                        "GET",
                        &format!("/api/jobs/{id}/wait?timeout_ms=60000"),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["job"]["state"], "succeeded", "{body}");
            }
        }));
    }
    for submitter in submitters {
        submitter.await.unwrap();
    }
    let jobs_took = jobs_started.elapsed();
    let rss_after_jobs = rss_kib(pid);
    // A new connection: the first one may have been idle past the daemon's 30 s
    // header limit, which closes idle keep-alive connections too.
    drop(conn);
    let mut conn = Conn::open(&served, &token).await;
    let (status, _) = conn.call("GET", "/api/health", None).await;
    assert_eq!(status, 200);
    drop(conn);

    // The slowloris connections: closed by the daemon (its 30 s header limit).
    let deadline = Instant::now() + Duration::from_secs(45);
    while slow.iter().any(|thread| !thread.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let slow_closed: Vec<Option<Duration>> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        slow_closed
            .iter()
            .all(|closed| closed.is_some_and(|after| after < Duration::from_secs(40))),
        "slowloris connections left open: {slow_closed:?}"
    );

    assert_eq!(served.stop().code(), Some(0), "{:?}", served.stderr());
    let counts = cjm_manager::jobs::job_counts(&home.path().join("jobs.sqlite3")).unwrap();
    assert_eq!(
        counts.get("succeeded"),
        Some(&(jobs as i64 + 1)),
        "{counts:?}"
    );
    assert_eq!(counts.values().sum::<i64>(), jobs as i64 + 1, "{counts:?}");
    assert!(
        rss_after_jobs <= rss_before + 160 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after_jobs} KiB over {jobs} jobs"
    );
    eprintln!(
        "soak: 1000 bad requests in {:.2}s; RSS {rss_before} KiB -> {rss_after_bad} KiB after \
         them, {rss_after_jobs} KiB after {jobs} jobs; fds {fds_before}; {jobs} jobs in {:.2}s \
         ({:.0} jobs/s); slowloris closed after {:?}; total {:.1}s",
        bad_took.as_secs_f64(),
        jobs_took.as_secs_f64(),
        jobs as f64 / jobs_took.as_secs_f64(),
        slow_closed,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_soak_bad_requests_many_streams_and_many_jobs() {
    let jobs = std::env::var("CJM_SOAK_JOBS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(10_000);
    soak(jobs).await;
}
