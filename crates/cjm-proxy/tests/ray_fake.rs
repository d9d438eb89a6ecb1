//! The Ray Jobs client against an in-process fake of Ray 2.60's dashboard: a small
//! hyper server on a loopback port (plain, or TLS with a certificate of the test's
//! own) answering with the shapes, statuses and bodies the real one was measured to
//! give (see the repository's notes on Ray), its nodes' resources included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::remote::{Fingerprint, Handshake};
use cjm_proxy::ray::{DashboardTrust, JobStatus, JobSubmission, Package, RayClient, RayError};
use cjm_proxy::{
    ClientIdentity, LaunchSpec, ProxyError, RayOptions, RayPlacement, Shortfall, WaitingHook,
};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

const TOKEN: &str = "0f32752f169c559fc19d4f4dc8b4746619a0b23c631412d6f7c5eba25fd0f5b1";
/// The fake's one GPU node, at this address, has these resources; every job runs
/// there.
const GPU_NODE: &str = "127.0.0.2";
const GPU_NODE_ID: &str = "c97f235ce0e3bbd8f1296ced822c5df502cfa0d3602b9a9e40eaac90";
const GPU_NODE_TOTAL: [(&str, f64); 4] = [
    ("CPU", 2.0),
    ("GPU", 4.0),
    ("gpu_vram_mb", 24000.0),
    ("memory", 17134949172.0),
];
const NODE_AGENT: &str = "http://127.0.0.2:52366";

#[derive(Debug, Clone)]
struct FakeJob {
    status: JobStatus,
    entrypoint: String,
    logs: String,
    /// What it reserves while it runs, by Ray's resource names.
    demand: BTreeMap<String, f64>,
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
    /// What any job without a print of its own prints once it runs.
    prints_otherwise: Option<String>,
    /// HTTP requests received (any path, any token).
    requests: usize,
    /// `GET /api/jobs/{id}` by id.
    looked_at: BTreeMap<String, usize>,
    /// `GET /api/cluster_status` so far.
    status_asked: usize,
    /// Bytes of job logs sent.
    log_bytes_sent: usize,
    /// The autoscaler monitor's last report of the GPU node's usage: Ray's is a few
    /// seconds old, so the test says when a new one is made (see
    /// [`Fake::report_usage`]), unless `live_report`.
    report: Option<BTreeMap<String, f64>>,
    live_report: bool,
    /// Start no pending job, whatever is free (Ray's scheduler takes its time).
    hold_pending: bool,
}

impl FakeRay {
    fn used(&self) -> BTreeMap<String, f64> {
        let mut used = BTreeMap::new();
        for job in self
            .jobs
            .values()
            .filter(|job| job.status == JobStatus::Running)
        {
            for (name, amount) in &job.demand {
                *used.entry(name.clone()).or_insert(0.0) += amount;
            }
        }
        used
    }

    /// Start pending jobs whose resources are free now, as Ray does when others end.
    fn schedule(&mut self) {
        if self.hold_pending {
            return;
        }
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            let used = self.used();
            let job = self.jobs.get_mut(&id).unwrap();
            let fits = job.demand.iter().all(|(name, amount)| {
                let total = GPU_NODE_TOTAL
                    .iter()
                    .find(|(known, _)| known == name)
                    .map_or(0.0, |(_, total)| *total);
                used.get(name).copied().unwrap_or(0.0) + amount <= total
            });
            if job.status == JobStatus::Pending && fits {
                job.status = JobStatus::Running;
                let prints = self
                    .prints
                    .get(&id)
                    .or(self.prints_otherwise.as_ref())
                    .cloned()
                    .unwrap_or_default();
                job.logs = format!(
                    "Running entrypoint for job {id}: {}\n{prints}",
                    job.entrypoint
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
            "driver_node_id": if running_or_done { json!(GPU_NODE_ID) } else { Value::Null },
            "driver_exit_code": null,
        })
    }

    /// `GET /api/v0/nodes?detail=1`, as Ray 2.60 answers it.
    fn nodes(&self) -> Value {
        let total: BTreeMap<&str, f64> = GPU_NODE_TOTAL.into_iter().collect();
        json!({"result": true, "msg": "", "data": {"result": {
            "total": 2, "num_after_truncation": 2, "num_filtered": 2,
            "result": [
                {"node_id": "54d4ae7da438f8cd8c71c9622fea14eff6d91634a1731d3cb196f2bb",
                 "node_ip": "127.0.0.1", "is_head_node": true, "state": "ALIVE",
                 "state_message": null, "node_name": "127.0.0.1",
                 "resources_total": {"CPU": 2.0, "memory": 17171887309.0,
                                     "node:127.0.0.1": 1.0, "node:__internal_head__": 1.0,
                                     "object_store_memory": 7359380275.0},
                 "labels": {"cjm-pool": "cpu"}, "start_time_ms": 1796604565650u64,
                 "end_time_ms": 0},
                {"node_id": GPU_NODE_ID, "node_ip": GPU_NODE, "is_head_node": false,
                 "state": "ALIVE", "state_message": null, "node_name": GPU_NODE,
                 "resources_total": total, "labels": {"cjm-pool": "gpu"},
                 "start_time_ms": 1796604569032u64, "end_time_ms": 0}
            ],
            "partial_failure_warning": "", "warnings": null}}})
    }

    /// `GET /api/cluster_status`, as Ray 2.60 answers it: keys camel-cased by the
    /// dashboard (`gpuVramMb`), `[used, total]` per resource and node.
    fn cluster_status(&mut self) -> Value {
        if self.live_report {
            self.report = Some(self.used());
        }
        let Some(used) = &self.report else {
            return json!({"result": true, "msg": "Got cluster status.", "data": {
                "autoscalingStatus": null, "autoscalingError": null, "clusterStatus": null}});
        };
        let camel = |name: &str| match name {
            "gpu_vram_mb" => String::from("gpuVramMb"),
            other => other.to_owned(),
        };
        let gpu_node: serde_json::Map<String, Value> = GPU_NODE_TOTAL
            .iter()
            .map(|(name, total)| {
                (
                    camel(name),
                    json!([used.get(*name).copied().unwrap_or(0.0), total]),
                )
            })
            .collect();
        json!({"result": true, "msg": "Got cluster status.", "data": {
        "autoscalingStatus": "Cluster status: 0 nodes", "autoscalingError": null,
        "clusterStatus": {"time": 1796604582.23, "monitorPid": 18543,
            "autoscalerReport": {"legacy": true},
            "loadMetricsReport": {
                "usage": {},
                "resourceDemand": [],
                "usageByNode": {
                    "54d4ae7da438f8cd8c71c9622fea14eff6d91634a1731d3cb196f2bb":
                        {"CPU": [0.0, 2.0], "node:InternalHead": [0.0, 1.0]},
                    GPU_NODE_ID: gpu_node,
                }}}}})
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

/// What a submission reserves, by Ray's names (Ray's default entrypoint CPUs are 0).
fn demand_of(submission: &Value) -> BTreeMap<String, f64> {
    let mut demand = BTreeMap::new();
    for (field, name) in [
        ("entrypoint_num_cpus", "CPU"),
        ("entrypoint_num_gpus", "GPU"),
        ("entrypoint_memory", "memory"),
    ] {
        if let Some(amount) = submission[field].as_f64() {
            demand.insert(name.to_owned(), amount);
        }
    }
    if let Some(resources) = submission["entrypoint_resources"].as_object() {
        for (name, amount) in resources {
            demand.insert(name.clone(), amount.as_f64().unwrap());
        }
    }
    demand
}

async fn answer(
    state: Arc<Mutex<FakeRay>>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    state.lock().requests += 1;
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
        (Method::GET, ["api", "v0", "nodes"]) => json_answer(ray.nodes()),
        (Method::GET, ["api", "cluster_status"]) => {
            ray.status_asked += 1;
            json_answer(ray.cluster_status())
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
            ray.jobs.insert(
                id.clone(),
                FakeJob {
                    status: JobStatus::Pending,
                    entrypoint,
                    logs: String::new(),
                    demand: demand_of(&submission),
                    submission,
                },
            );
            ray.schedule();
            json_answer(json!({"job_id": id, "submission_id": id}))
        }
        (Method::GET, ["api", "jobs", id]) => match ray.jobs.contains_key(*id) {
            true => {
                *ray.looked_at.entry((*id).to_owned()).or_default() += 1;
                json_answer(ray.details(id))
            }
            false => text(StatusCode::NOT_FOUND, format!("Job {id} does not exist")),
        },
        (Method::GET, ["api", "jobs", id, "logs"]) => match ray.jobs.get(*id) {
            Some(job) => {
                let logs = job.logs.clone();
                ray.log_bytes_sent += logs.len();
                json_answer(json!({ "logs": logs }))
            }
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

#[derive(Clone)]
struct Fake {
    address: String,
    state: Arc<Mutex<FakeRay>>,
}

impl Fake {
    /// The fake on plain HTTP at `127.0.0.1`.
    async fn start() -> Fake {
        Fake::serve(None, "127.0.0.1").await
    }

    /// The fake behind TLS with `cert` (its chain) and `key`, its address naming
    /// `host` (which must resolve to 127.0.0.1).
    async fn start_tls(
        cert: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        host: &str,
    ) -> Fake {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert, key)
        .unwrap();
        Fake::serve(
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            host,
        )
        .await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, host: &str) -> Fake {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let port = listener.local_addr().unwrap().port();
        let address = format!("{scheme}://{host}:{port}");
        let state = Arc::new(Mutex::new(FakeRay::default()));
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = Arc::clone(&served);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(state, request).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        // A client that refuses the certificate ends here, before HTTP.
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                    };
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

    /// The autoscaler monitor reports the usage of now.
    fn report_usage(&self) {
        let mut ray = self.state.lock();
        ray.report = Some(ray.used());
    }
}

/// Wait until `condition` holds, for at most 10 s.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
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
    // Looked at twice (after two before it), stopped once by it: it saw the job
    // pending, and a pending job is not gone.
    until("stop_until_gone looked at the waiter twice", || {
        fake.state.lock().looked_at["waiter"] >= 4
    })
    .await;
    assert!(fake.state.lock().stops["waiter"] >= 2);
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
    until("the wait looked at the pending job twice", || {
        fake.state
            .lock()
            .looked_at
            .get("placed")
            .copied()
            .unwrap_or(0)
            >= 2
    })
    .await;
    assert!(!waiting.is_finished(), "pending: no handshake yet");
    assert_eq!(
        fake.state.lock().log_bytes_sent,
        0,
        "no logs read while pending"
    );
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

// ---- The dashboard over TLS, and plain HTTP only to loopback ----

/// `der` as PEM (base64 in 64-column lines), as a CA file holds it.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A CA (as PEM) and a server certificate it issued for `names`, with its key.
fn issued_by_a_ca(names: &[&str]) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cjm test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let mut params = rcgen::CertificateParams::new(
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (
        pem("CERTIFICATE", ca.der()),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A self-signed certificate for `localhost`, with its key.
fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap();
    (
        certified.cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        )),
    )
}

fn trusting(address: &str, trust: DashboardTrust) -> RayClient {
    RayClient::builder(address)
        .token(TOKEN)
        .trust(trust)
        .build()
        .unwrap()
}

/// A plugin "program" to ship, a spec for it, and the folder holding both.
fn plugin_spec() -> (LaunchSpec, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let folder = tempfile::tempdir().unwrap();
    let program = folder.path().join("cjm-echo");
    std::fs::write(&program, b"\x7fELF not really").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = LaunchSpec::new("echo", &program, folder.path().join("echo.log"));
    (spec, folder)
}

fn handshake_line() -> String {
    Handshake::new(
        40123,
        cjm_proxy::certificate_fingerprint(b"worker cert"),
        4242,
    )
    .to_line()
}

/// A GPU plugin's job, as the manager asks it: 1 GPU, `vram_mb` of `gpu_vram_mb`, on
/// the GPU pool, the pending job looked at every 20 ms.
fn gpu_options(vram_mb: f64) -> RayOptions {
    let mut options = RayOptions::new();
    options.num_gpus = 1.0;
    options
        .resources
        .insert(String::from("gpu_vram_mb"), vram_mb);
    options
        .label_selector
        .insert(String::from("cjm-pool"), String::from("gpu"));
    options.pending_check = Duration::from_millis(20);
    options.place_timeout = Duration::from_secs(20);
    options
}

async fn place_through(client: RayClient, spec: &mut LaunchSpec) -> Result<String, ProxyError> {
    spec.placement = Arc::new(RayPlacement::new(
        client,
        ClientIdentity::shared().unwrap(),
        gpu_options(4000.0),
    ));
    spec.placement
        .place(spec)
        .await
        .map(|placed| format!("{placed:?}"))
}

fn ray_error(err: &ProxyError) -> &RayError {
    use std::error::Error;
    err.source()
        .and_then(|placement| placement.source())
        .and_then(|ray| ray.downcast_ref::<RayError>())
        .unwrap_or_else(|| panic!("not a Ray error: {err:?}"))
}

#[tokio::test]
async fn https_with_the_dashboards_ca_works_end_to_end() {
    let (ca, cert, key) = issued_by_a_ca(&["localhost", "127.0.0.1"]);
    let fake = Fake::start_tls(vec![cert], key, "localhost").await;
    let folder = tempfile::tempdir().unwrap();
    let ca_file = folder.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    fake.state.lock().prints_otherwise = Some(format!("{}\n", handshake_line()));

    // By name and by IP address (the certificate names both).
    let port = fake.address.rsplit(':').next().unwrap();
    let by_ip = trusting(
        &format!("https://127.0.0.1:{port}"),
        DashboardTrust::CaFile(ca_file.clone()),
    );
    assert_eq!(by_ip.version().await.unwrap()["ray_version"], "2.60.0");

    let client = trusting(&fake.address, DashboardTrust::CaFile(ca_file));
    let (mut spec, _program) = plugin_spec();
    let placed = place_through(client.clone(), &mut spec).await.unwrap();
    assert!(placed.contains("127.0.0.2"), "{placed}");
    let ray = fake.state.lock();
    assert_eq!(ray.uploads, 1, "the binary went over TLS");
    let job = ray.jobs.values().next().unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(
        job.submission["runtime_env"]["env_vars"]["CJM_CLIENT_CERT_SHA256"],
        json!(ClientIdentity::shared().unwrap().fingerprint().to_string())
    );
}

#[tokio::test]
async fn https_with_a_pinned_certificate_works_end_to_end() {
    let (cert, key) = self_signed();
    let pinned = cjm_proxy::certificate_fingerprint(&cert);
    let fake = Fake::start_tls(vec![cert], key, "localhost").await;
    fake.state.lock().prints_otherwise = Some(format!("{}\n", handshake_line()));
    let client = trusting(&fake.address, DashboardTrust::Pinned(pinned));
    let (mut spec, _program) = plugin_spec();
    let placed = place_through(client.clone(), &mut spec).await.unwrap();
    assert!(placed.contains("127.0.0.2"), "{placed}");
    let id = fake.state.lock().jobs.keys().next().unwrap().clone();
    assert_eq!(
        client
            .stop_until_gone(&id, Duration::from_secs(10))
            .await
            .unwrap()
            .status,
        JobStatus::Stopped
    );
}

#[tokio::test]
async fn a_wrong_pin_or_ca_is_refused_before_anything_is_sent() {
    let (cert, key) = self_signed();
    let presented = cjm_proxy::certificate_fingerprint(&cert);
    let fake = Fake::start_tls(vec![cert], key, "localhost").await;
    let folder = tempfile::tempdir().unwrap();

    // Another certificate pinned.
    let other: Fingerprint = cjm_proxy::certificate_fingerprint(b"another dashboard");
    let (mut spec, _program) = plugin_spec();
    let err = place_through(
        trusting(&fake.address, DashboardTrust::Pinned(other)),
        &mut spec,
    )
    .await
    .unwrap_err();
    let RayError::Untrusted { reason, .. } = ray_error(&err) else {
        panic!("{err:?}")
    };
    assert_eq!(
        reason,
        &format!("it presented a certificate with SHA-256 {presented}, not the pinned {other}")
    );
    assert_eq!(err.category(), Some(cjm_interface::ErrorCategory::Fatal));

    // A CA that did not issue it.
    let (unrelated_ca, _, _) = issued_by_a_ca(&["localhost"]);
    let unrelated = folder.path().join("unrelated.pem");
    std::fs::write(&unrelated, unrelated_ca).unwrap();
    let err = place_through(
        trusting(&fake.address, DashboardTrust::CaFile(unrelated.clone())),
        &mut spec,
    )
    .await
    .unwrap_err();
    let untrusted = ray_error(&err);
    assert!(
        matches!(untrusted, RayError::Untrusted { .. }),
        "{untrusted:?}"
    );
    let text = untrusted.to_string();
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(text.contains(&fake.address), "{text}");
    assert!(text.contains("nothing was sent to it"), "{text}");

    // The right CA, a certificate for another name.
    let (ca, cert, key) = issued_by_a_ca(&["ray-head.example"]);
    let misnamed = Fake::start_tls(vec![cert], key, "localhost").await;
    let ca_file = folder.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let err = place_through(
        trusting(&misnamed.address, DashboardTrust::CaFile(ca_file)),
        &mut spec,
    )
    .await
    .unwrap_err();
    let text = ray_error(&err).to_string();
    assert!(
        text.contains("certificate not valid for name \"localhost\""),
        "{text}"
    );

    for fake in [&fake, &misnamed] {
        let ray = fake.state.lock();
        assert_eq!(
            ray.requests, 0,
            "no request reached a dashboard not trusted"
        );
        assert_eq!(ray.uploads, 0);
        assert!(ray.jobs.is_empty());
    }
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_before_any_connection() {
    // TEST-NET-1: never reached; the refusal is made before any socket exists.
    let err = RayClient::new("http://192.0.2.1:8265", Some(TOKEN)).unwrap_err();
    assert!(matches!(err, RayError::PlainHttpRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("refusing plain http:// to the Ray dashboard at http://192.0.2.1:8265"),
        "{text}"
    );
    assert!(
        text.contains("https://") && text.contains("insecure_http"),
        "{text}"
    );
    // A name is not resolved to decide: only loopback addresses and localhost pass.
    assert!(matches!(
        RayClient::new("http://ray-head:8265", Some(TOKEN)),
        Err(RayError::PlainHttpRefused { .. })
    ));
    // Said in so many words, the client is made (and not used here).
    RayClient::builder("http://192.0.2.1:8265")
        .token(TOKEN)
        .insecure_http(true)
        .build()
        .unwrap();
}

#[tokio::test]
async fn plain_http_on_loopback_still_works() {
    let fake = Fake::start().await;
    fake.state.lock().prints_otherwise = Some(format!("{}\n", handshake_line()));
    let port = fake.address.rsplit(':').next().unwrap();
    for address in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let client = RayClient::new(&address, Some(TOKEN)).unwrap();
        assert_eq!(client.version().await.unwrap()["ray_version"], "2.60.0");
    }
    let (mut spec, _program) = plugin_spec();
    place_through(fake.client(), &mut spec).await.unwrap();
}

// ---- While a job pends: stop a worker only for GPU memory it frees ----

/// A job of the fake that holds `cpus` CPUs, a GPU and `vram_mb` on the GPU node.
fn holder(id: &str, cpus: f64, vram_mb: f64) -> JobSubmission {
    worker_job(id, vram_mb).num_cpus(cpus)
}

/// A hook that stops, at each call, the next of `victims` (their jobs, as the manager
/// would by stopping their workers) and records what it was called with.
fn stopping_hook(fake: &Fake, victims: &[&str]) -> (WaitingHook, Arc<Mutex<Vec<Shortfall>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let victims = Arc::new(Mutex::new(
        victims
            .iter()
            .rev()
            .map(|id| (*id).to_owned())
            .collect::<Vec<_>>(),
    ));
    let hook = {
        let fake = fake.clone();
        let calls = Arc::clone(&calls);
        WaitingHook::new(move |shortfall| {
            calls.lock().push(shortfall);
            let victim = victims.lock().pop();
            if let Some(victim) = &victim {
                fake.set_status(victim, JobStatus::Stopped);
            }
            Box::pin(async move { victim })
        })
    };
    (hook, calls)
}

fn placement(fake: &Fake, options: RayOptions) -> Arc<RayPlacement> {
    Arc::new(RayPlacement::new(
        fake.client(),
        ClientIdentity::shared().unwrap(),
        options,
    ))
}

#[tokio::test]
async fn a_job_pending_for_cpu_stops_no_gpu_worker() {
    let fake = Fake::start().await;
    fake.state.lock().live_report = true;
    // An idle GPU worker holds 1.5 of the node's 2 CPUs and 8000 of its 24000 VRAM.
    fake.client()
        .submit(&holder("idle-gpu-worker", 1.5, 8000.0))
        .await
        .unwrap();
    // The new one needs 1 CPU: VRAM is there, CPUs are not.
    let mut options = gpu_options(8000.0);
    options.num_cpus = 1.0;
    let (hook, calls) = stopping_hook(&fake, &["idle-gpu-worker"]);
    let (mut spec, _program) = plugin_spec();
    spec.on_waiting = Some(hook);
    spec.placement = placement(&fake, options);
    let placing = tokio::spawn(async move { spec.placement.place(&spec).await.map(|_| ()) });
    // The placement looked at the cluster's resources several times, and saw it pend.
    until("the pending job was assessed five times", || {
        fake.state.lock().status_asked >= 5
    })
    .await;
    assert!(calls.lock().is_empty(), "{:?}", calls.lock());
    assert_eq!(
        fake.state.lock().jobs["idle-gpu-worker"].status,
        JobStatus::Running
    );
    assert!(!placing.is_finished());
    placing.abort();
}

#[tokio::test]
async fn a_job_pending_for_gpu_memory_stops_one_worker_per_shortfall() {
    let fake = Fake::start().await;
    // Three idle GPU workers of 8000 each: all the node's 24000.
    for id in ["idle-a", "idle-b", "idle-c"] {
        fake.client()
            .submit(&holder(id, 0.5, 8000.0))
            .await
            .unwrap();
    }
    fake.report_usage();
    fake.state.lock().prints_otherwise = Some(format!("{}\n", handshake_line()));
    let (hook, calls) = stopping_hook(&fake, &["idle-a", "idle-b", "idle-c"]);
    let (mut spec, _program) = plugin_spec();
    spec.on_waiting = Some(hook);
    // The new one needs 16000: two of them must go, one at a time.
    spec.placement = placement(&fake, gpu_options(16000.0));
    let placing = tokio::spawn(async move { spec.placement.place(&spec).await.map(|_| ()) });

    until("a first worker stopped", || calls.lock().len() == 1).await;
    let missing = |vram: f64| {
        BTreeMap::from([(
            String::from(GPU_NODE),
            BTreeMap::from([(String::from("gpu_vram_mb"), vram)]),
        )])
    };
    assert_eq!(calls.lock()[0].nodes, missing(16000.0));
    // Ray's report still shows the first one's memory taken (the monitor reports
    // every few seconds): the job pends, and nothing more is stopped meanwhile.
    let asked = fake.state.lock().status_asked;
    until(
        "five more looks at a report that shows nothing freed",
        || fake.state.lock().status_asked >= asked + 5,
    )
    .await;
    assert_eq!(calls.lock().len(), 1, "{:?}", calls.lock());
    assert!(!placing.is_finished());

    // The report shows the first one's 8000 freed: 8000 are still missing, and one
    // more goes; the job then starts.
    fake.report_usage();
    placing.await.unwrap().unwrap();
    let calls = calls.lock();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].nodes, missing(8000.0));
    let ray = fake.state.lock();
    assert_eq!(
        ray.jobs["idle-c"].status,
        JobStatus::Running,
        "the third stays"
    );
    assert_eq!(ray.jobs["idle-a"].status, JobStatus::Stopped);
    assert_eq!(ray.jobs["idle-b"].status, JobStatus::Stopped);
}

#[tokio::test]
async fn a_cluster_that_cannot_tell_what_is_free_stops_nothing() {
    let fake = Fake::start().await;
    fake.client()
        .submit(&holder("idle-gpu-worker", 0.5, 24000.0))
        .await
        .unwrap();
    // No monitor report: clusterStatus is null.
    let (hook, calls) = stopping_hook(&fake, &["idle-gpu-worker"]);
    let (mut spec, _program) = plugin_spec();
    spec.on_waiting = Some(hook);
    spec.placement = placement(&fake, gpu_options(8000.0));
    let placing = tokio::spawn(async move { spec.placement.place(&spec).await.map(|_| ()) });
    until("five looks at the cluster's status", || {
        fake.state.lock().status_asked >= 5
    })
    .await;
    assert!(calls.lock().is_empty());
    placing.abort();
}

#[tokio::test]
async fn a_worker_printing_too_much_before_its_handshake_is_given_up_on() {
    let fake = Fake::start().await;
    // 2 MiB of output and no handshake.
    let chatter = "x".repeat(1023) + "\n";
    fake.state
        .lock()
        .prints
        .insert(String::from("chatty"), chatter.repeat(2048));
    let ray = fake.client();
    ray.submit(&worker_job("chatty", 1000.0)).await.unwrap();
    let err = ray
        .wait_for_handshake("chatty", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RayError::NoHandshakeInOutput { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Ray job chatty printed over 1048576 bytes without a worker handshake"
    );
    // Given up on at the first look, not polled until the time was up.
    assert!(fake.state.lock().log_bytes_sent <= 3 * 1024 * 1024);
}

#[tokio::test]
async fn memory_seen_freed_for_a_job_that_still_pends_stops_no_second_worker() {
    let fake = Fake::start().await;
    for id in ["idle-a", "idle-b", "idle-c"] {
        fake.client()
            .submit(&holder(id, 0.5, 8000.0))
            .await
            .unwrap();
    }
    fake.report_usage();
    // Ray takes its time to start the job once its memory is free.
    fake.state.lock().hold_pending = true;
    let (hook, calls) = stopping_hook(&fake, &["idle-a", "idle-b", "idle-c"]);
    let (mut spec, _program) = plugin_spec();
    spec.on_waiting = Some(hook);
    spec.placement = placement(&fake, gpu_options(8000.0));
    let placing = tokio::spawn(async move { spec.placement.place(&spec).await.map(|_| ()) });
    until("one worker stopped", || calls.lock().len() == 1).await;
    // The report shows its 8000 free: the job fits and only waits for Ray.
    fake.report_usage();
    let asked = fake.state.lock().status_asked;
    until("five more looks at the report", || {
        fake.state.lock().status_asked >= asked + 5
    })
    .await;
    assert_eq!(calls.lock().len(), 1, "{:?}", calls.lock());
    assert_eq!(fake.state.lock().jobs["idle-b"].status, JobStatus::Running);
    placing.abort();
}
