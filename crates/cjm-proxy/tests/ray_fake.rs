//! The Ray Jobs client against an in-process fake of Ray 2.60's dashboard: a small
//! hyper server on a loopback port answering with the shapes, statuses and bodies the
//! real one was measured to give (see the repository's notes on Ray).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cjm_interface::remote::Handshake;
use cjm_proxy::ray::{JobStatus, JobSubmission, Package, RayClient, RayError};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};

const TOKEN: &str = "0f32752f169c559fc19d4f4dc8b4746619a0b23c631412d6f7c5eba25fd0f5b1";
/// The fake's one "GPU node" has this much of the custom resource.
const VRAM_MB: f64 = 24000.0;
const NODE_AGENT: &str = "http://127.0.0.2:52366";

#[derive(Debug, Clone)]
struct FakeJob {
    status: JobStatus,
    entrypoint: String,
    logs: String,
    vram: f64,
    submission: Value,
}

#[derive(Debug, Default)]
struct FakeRay {
    jobs: BTreeMap<String, FakeJob>,
    packages: BTreeMap<String, usize>,
    uploads: usize,
    stops: BTreeMap<String, usize>,
    /// Logs a job prints once it runs (by submission id).
    prints: BTreeMap<String, String>,
}

impl FakeRay {
    fn vram_in_use(&self) -> f64 {
        self.jobs
            .values()
            .filter(|job| job.status == JobStatus::Running)
            .map(|job| job.vram)
            .sum()
    }

    /// Start pending jobs whose resources are free now, as Ray does when others end.
    fn schedule(&mut self) {
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            let free = VRAM_MB - self.vram_in_use();
            let job = self.jobs.get_mut(&id).unwrap();
            if job.status == JobStatus::Pending && job.vram <= free {
                job.status = JobStatus::Running;
                job.logs = format!(
                    "Running entrypoint for job {id}: {}\n{}",
                    job.entrypoint,
                    self.prints.get(&id).cloned().unwrap_or_default()
                );
            }
        }
    }

    fn details(&self, id: &str) -> Value {
        let job = &self.jobs[id];
        let running_or_done = job.status != JobStatus::Pending;
        json!({
            "type": "SUBMISSION", "job_id": null, "submission_id": id, "driver_info": null,
            "status": job.status, "entrypoint": job.entrypoint,
            "message": match job.status {
                JobStatus::Pending => "Job has not started yet. It may be waiting for resources (CPUs, GPUs, memory, custom resources) to become available.",
                JobStatus::Running => "Job is currently running.",
                JobStatus::Stopped => "Job was intentionally stopped.",
                JobStatus::Failed => "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\nno binary",
                _ => "Job finished successfully.",
            },
            "error_type": null, "start_time": 1796295717230u64, "end_time": null,
            "metadata": job.submission.get("metadata").cloned().unwrap_or(Value::Null),
            "runtime_env": job.submission.get("runtime_env").cloned().unwrap_or(Value::Null),
            "driver_agent_http_address": if running_or_done { json!(NODE_AGENT) } else { Value::Null },
            "driver_node_id": if running_or_done { json!("a7e765a1c22d4d99") } else { Value::Null },
            "driver_exit_code": null,
        })
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.into())))
        .unwrap()
}

fn json_answer(value: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

fn traceback(exception: &str) -> String {
    format!(
        "Traceback (most recent call last):\n  File \"/ray/dashboard/modules/job/job_head.py\", line 419, in submit_job\n{exception}\n"
    )
}

async fn answer(
    state: Arc<Mutex<FakeRay>>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    // Ray's token middleware: 401 without a token, 403 with another.
    match request
        .headers()
        .get("authorization")
        .map(|value| value.to_str().unwrap_or(""))
    {
        None => {
            return text(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: Missing authentication token",
            )
        }
        Some(value) if value != format!("Bearer {TOKEN}") => {
            return text(
                StatusCode::FORBIDDEN,
                "Forbidden: Invalid authentication token",
            )
        }
        Some(_) => {}
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut ray = state.lock();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["api", "version"]) => {
            json_answer(json!({"version": "4", "ray_version": "2.60.0"}))
        }
        (Method::POST, ["api", "jobs", ""]) => {
            let Ok(submission) = serde_json::from_slice::<Value>(&body) else {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error\n\nServer got itself in trouble",
                );
            };
            let known = [
                "entrypoint",
                "submission_id",
                "job_id",
                "runtime_env",
                "metadata",
                "entrypoint_num_cpus",
                "entrypoint_num_gpus",
                "entrypoint_memory",
                "entrypoint_resources",
                "entrypoint_label_selector",
            ];
            if let Some(unknown) = submission
                .as_object()
                .unwrap()
                .keys()
                .find(|key| !known.contains(&key.as_str()))
            {
                return text(StatusCode::BAD_REQUEST, traceback(&format!("TypeError: JobSubmitRequest.__init__() got an unexpected keyword argument '{unknown}'")));
            }
            let entrypoint = submission["entrypoint"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(cpus) = submission["entrypoint_num_cpus"]
                .as_f64()
                .filter(|cpus| *cpus < 0.0)
            {
                return text(
                    StatusCode::BAD_REQUEST,
                    traceback(&format!(
                    "ValueError: entrypoint_num_cpus must be a non-negative number, got {cpus:?}"
                )),
                );
            }
            if entrypoint == "crash the dashboard" {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    traceback(
                        "RuntimeError: No available agent to submit job, please try again later.",
                    ),
                );
            }
            let id = submission["submission_id"].as_str().unwrap().to_owned();
            if ray.jobs.contains_key(&id) {
                // Ray 2.60: the agent's 400 wrapped in the dashboard's 500.
                return text(StatusCode::INTERNAL_SERVER_ERROR, traceback(&format!(
                    "RuntimeError: Request failed with status code 400: Traceback (most recent call last):\nValueError: Job with submission_id {id} already exists. Please use a different submission_id.\n."
                )));
            }
            let vram = submission["entrypoint_resources"]["gpu_vram_mb"]
                .as_f64()
                .unwrap_or(0.0);
            ray.jobs.insert(
                id.clone(),
                FakeJob {
                    status: JobStatus::Pending,
                    entrypoint,
                    logs: String::new(),
                    vram,
                    submission,
                },
            );
            ray.schedule();
            json_answer(json!({"job_id": id, "submission_id": id}))
        }
        (Method::GET, ["api", "jobs", id]) => match ray.jobs.contains_key(*id) {
            true => json_answer(ray.details(id)),
            false => text(StatusCode::NOT_FOUND, format!("Job {id} does not exist")),
        },
        (Method::GET, ["api", "jobs", id, "logs"]) => match ray.jobs.get(*id) {
            Some(job) => json_answer(json!({"logs": job.logs})),
            None => text(StatusCode::NOT_FOUND, format!("Job {id} does not exist")),
        },
        (Method::POST, ["api", "jobs", id, "stop"]) => {
            let id = id.to_string();
            *ray.stops.entry(id.clone()).or_default() += 1;
            let Some(job) = ray.jobs.get_mut(&id) else {
                return text(StatusCode::NOT_FOUND, format!("Job {id} does not exist"));
            };
            match job.status {
                // The supervisor exists, so Ray says stopped: true, but the job stays
                // PENDING and starts when resources free up.
                JobStatus::Pending => json_answer(json!({"stopped": true})),
                JobStatus::Running => {
                    job.status = JobStatus::Stopped;
                    ray.schedule();
                    json_answer(json!({"stopped": true}))
                }
                _ => json_answer(json!({"stopped": false})),
            }
        }
        (Method::GET, ["api", "packages", "gcs", name]) => match ray.packages.contains_key(*name) {
            true => text(StatusCode::OK, ""),
            false => text(
                StatusCode::NOT_FOUND,
                format!("Package gcs://{name} does not exist"),
            ),
        },
        (Method::PUT, ["api", "packages", "gcs", name]) => {
            let name = name.to_string();
            ray.packages.insert(name, body.len());
            ray.uploads += 1;
            text(StatusCode::OK, "")
        }
        _ => text(StatusCode::NOT_FOUND, "404: Not Found"),
    }
}

struct Fake {
    address: String,
    state: Arc<Mutex<FakeRay>>,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(FakeRay::default()));
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { address, state }
    }

    fn client(&self) -> RayClient {
        RayClient::new(&self.address, Some(TOKEN)).unwrap()
    }

    fn set_status(&self, id: &str, status: JobStatus) {
        let mut ray = self.state.lock();
        ray.jobs.get_mut(id).unwrap().status = status;
        ray.schedule();
    }
}

fn worker_job(id: &str, vram: f64) -> JobSubmission {
    JobSubmission::new("exec ./cjm-echo --listen 0.0.0.0:0")
        .submission_id(id)
        .num_gpus(1.0)
        .resource("gpu_vram_mb", vram)
        .label("cjm-pool", "gpu")
        .working_dir("gcs://_ray_pkg_00.zip")
        .env_var("CJM_CLIENT_CERT_SHA256", "ab".repeat(32))
        .metadata("cjm_plugin", "echo")
}

#[tokio::test]
async fn a_retried_submission_finds_its_job() {
    let fake = Fake::start().await;
    let ray = fake.client();
    let first = ray.submit(&worker_job("cjm-echo-1", 4000.0)).await.unwrap();
    assert_eq!(first.submission_id, "cjm-echo-1");
    assert!(!first.existed);
    let again = ray.submit(&worker_job("cjm-echo-1", 4000.0)).await.unwrap();
    assert!(again.existed, "{again:?}");
    assert_eq!(fake.state.lock().jobs.len(), 1);
    // What Ray received is what the API documents, nothing more.
    let sent = fake.state.lock().jobs["cjm-echo-1"].submission.clone();
    assert_eq!(
        sent["entrypoint_label_selector"],
        json!({"cjm-pool": "gpu"})
    );
    assert_eq!(sent["entrypoint_resources"], json!({"gpu_vram_mb": 4000.0}));
    assert_eq!(
        sent["runtime_env"]["working_dir"],
        json!("gcs://_ray_pkg_00.zip")
    );
    let job = ray.job("cjm-echo-1").await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.node_address().as_deref(), Some("127.0.0.2"));
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_by_name() {
    let fake = Fake::start().await;
    let no_token = RayClient::new(&fake.address, None).unwrap();
    let err = no_token.job("x").await.unwrap_err();
    assert!(matches!(err, RayError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "Ray at {} refused job x: it needs a token and none was given (401)",
            fake.address
        )
    );
    let wrong = RayClient::new(&fake.address, Some("not-the-token")).unwrap();
    let err = wrong.submit(&worker_job("j", 1.0)).await.unwrap_err();
    assert!(matches!(err, RayError::Forbidden { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "Ray at {} refused submitting job j: the token is wrong (403)",
            fake.address
        )
    );
}

#[tokio::test]
async fn an_unknown_job_is_not_found() {
    let fake = Fake::start().await;
    let ray = fake.client();
    for err in [
        ray.job("nope").await.unwrap_err(),
        ray.logs("nope").await.unwrap_err(),
        ray.stop("nope").await.unwrap_err(),
    ] {
        assert!(matches!(err, RayError::NotFound { .. }), "{err:?}");
        assert!(
            err.to_string().ends_with("(404): Job nope does not exist"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn ray_failures_name_the_exception() {
    let fake = Fake::start().await;
    let ray = fake.client();
    let err = ray
        .submit(&JobSubmission::new("crash the dashboard").submission_id("c"))
        .await
        .unwrap_err();
    match &err {
        RayError::Server {
            status,
            summary,
            body,
            ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(
                summary,
                "RuntimeError: No available agent to submit job, please try again later."
            );
            assert!(body.starts_with("Traceback"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("Ray at {} failed on submitting job c (500): RuntimeError: No available agent to submit job, please try again later.", fake.address)
    );
}

#[tokio::test]
async fn an_invalid_request_is_a_bad_request() {
    let fake = Fake::start().await;
    let err = fake
        .client()
        .submit(
            &JobSubmission::new("invalid")
                .submission_id("b")
                .num_cpus(-1.0),
        )
        .await
        .unwrap_err();
    match &err {
        RayError::BadRequest { summary, body, .. } => {
            assert_eq!(
                summary,
                "ValueError: entrypoint_num_cpus must be a non-negative number, got -1.0"
            );
            assert!(body.starts_with("Traceback"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "Ray at {} refused submitting job b as invalid (400): ValueError: entrypoint_num_cpus must be a non-negative number, got -1.0",
            fake.address
        )
    );
}

#[tokio::test]
async fn stop_until_gone_stops_a_pending_job_again_once_it_starts() {
    let fake = Fake::start().await;
    let ray = fake.client();
    ray.submit(&worker_job("holder", 20000.0)).await.unwrap();
    ray.submit(&worker_job("waiter", 20000.0)).await.unwrap();
    assert_eq!(ray.job("waiter").await.unwrap().status, JobStatus::Pending);
    // A plain stop leaves it pending.
    assert!(ray.stop("waiter").await.unwrap());
    assert_eq!(ray.job("waiter").await.unwrap().status, JobStatus::Pending);

    let stopping = {
        let ray = ray.clone();
        tokio::spawn(async move { ray.stop_until_gone("waiter", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!stopping.is_finished(), "still pending, so not gone");
    // The holder ends; the waiter starts, and is stopped again.
    fake.set_status("holder", JobStatus::Succeeded);
    let job = stopping.await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Stopped);
    assert!(
        fake.state.lock().stops["waiter"] >= 3,
        "{:?}",
        fake.state.lock().stops
    );
    // A job that has ended is gone already.
    assert!(!ray.stop("waiter").await.unwrap());
    assert_eq!(
        ray.stop_until_gone("waiter", Duration::from_secs(1))
            .await
            .unwrap()
            .status,
        JobStatus::Stopped
    );
}

#[tokio::test]
async fn stop_until_gone_gives_up_by_name() {
    let fake = Fake::start().await;
    let ray = fake.client();
    ray.submit(&worker_job("holder", 20000.0)).await.unwrap();
    ray.submit(&worker_job("stuck", 20000.0)).await.unwrap();
    let err = ray
        .stop_until_gone("stuck", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Ray job stuck is still PENDING after 300ms of stopping it"
    );
}

#[tokio::test]
async fn a_package_is_uploaded_once() {
    let fake = Fake::start().await;
    let ray = fake.client();
    let package = Package::from_entries(&[("cjm-echo", b"\x7fELF", 0o755)]).unwrap();
    assert!(!ray.package_exists(&package).await.unwrap());
    assert!(ray.upload(&package).await.unwrap());
    assert!(!ray.upload(&package).await.unwrap(), "there already");
    assert!(ray.package_exists(&package).await.unwrap());
    let ray_side = fake.state.lock();
    assert_eq!(ray_side.uploads, 1);
    assert_eq!(ray_side.packages[package.name()], package.bytes().len());
}

#[tokio::test]
async fn the_handshake_is_read_from_the_jobs_logs() {
    let fake = Fake::start().await;
    let ray = fake.client();
    let line = Handshake::new(
        40123,
        cjm_proxy::certificate_fingerprint(b"worker cert"),
        4242,
    )
    .to_line();
    fake.state
        .lock()
        .prints
        .insert(String::from("placed"), format!("INFO starting\n{line}\n"));
    ray.submit(&worker_job("blocker", 24000.0)).await.unwrap();
    ray.submit(&worker_job("placed", 4000.0)).await.unwrap();
    let waiting = {
        let ray = ray.clone();
        tokio::spawn(async move {
            ray.wait_for_handshake("placed", Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "pending: no handshake yet");
    fake.set_status("blocker", JobStatus::Stopped);
    let placed = waiting.await.unwrap().unwrap();
    assert_eq!(placed.handshake.port, 40123);
    assert_eq!(placed.handshake.pid, 4242);
    assert_eq!(placed.node_address, "127.0.0.2");
    assert_eq!(placed.job.status, JobStatus::Running);
}

#[tokio::test]
async fn a_job_that_ends_without_a_handshake_says_so() {
    let fake = Fake::start().await;
    let ray = fake.client();
    ray.submit(&worker_job("broken", 1000.0)).await.unwrap();
    fake.set_status("broken", JobStatus::Failed);
    let err = ray
        .wait_for_handshake("broken", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "Ray job broken ended (FAILED) before its worker printed a handshake: Job entrypoint command failed"
        ),
        "{err}"
    );
    ray.submit(&worker_job("quiet", 1000.0)).await.unwrap();
    let err = ray
        .wait_for_handshake("quiet", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Ray job quiet printed no handshake within 300ms (it is RUNNING)"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_named() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ray = RayClient::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN)).unwrap();
    let err = ray.version().await.unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot reach Ray at http://127.0.0.1:{port} for its version: "
        )),
        "{err}"
    );
}
