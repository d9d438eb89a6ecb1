//! An in-process fake of Ray 2.60's dashboard: a small hyper server on a loopback
//! port (plain, or TLS with a certificate of the test's own) answering with the
//! shapes, statuses and bodies the real one was measured to give (see the
//! repository's notes on Ray), its nodes' resources included. Shared by cjm-ray's
//! client tests (`tests/ray_fake.rs`) and cjm-proxy's placement tests
//! (`tests/ray_placement.rs`, which include this file by path).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::remote::Handshake;
use cjm_ray::{DashboardTrust, JobStatus, JobSubmission, RayClient};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
pub use serde_json::{json, Value};

pub const TOKEN: &str = "0f32752f169c559fc19d4f4dc8b4746619a0b23c631412d6f7c5eba25fd0f5b1";
/// The fake's one GPU node, at this address, has these resources; every job runs
/// there.
pub const GPU_NODE: &str = "127.0.0.2";
pub const GPU_NODE_ID: &str = "c97f235ce0e3bbd8f1296ced822c5df502cfa0d3602b9a9e40eaac90";
pub const GPU_NODE_TOTAL: [(&str, f64); 4] = [
    ("CPU", 2.0),
    ("GPU", 4.0),
    ("gpu_vram_mb", 24000.0),
    ("memory", 17134949172.0),
];
pub const NODE_AGENT: &str = "http://127.0.0.2:52366";

#[derive(Debug, Clone)]
pub struct FakeJob {
    pub status: JobStatus,
    pub entrypoint: String,
    pub logs: String,
    /// What it reserves while it runs, by Ray's resource names.
    pub demand: BTreeMap<String, f64>,
    pub submission: Value,
}

#[derive(Debug, Default)]
pub struct FakeRay {
    pub jobs: BTreeMap<String, FakeJob>,
    pub packages: BTreeMap<String, usize>,
    pub uploads: usize,
    pub stops: BTreeMap<String, usize>,
    /// Logs a job prints once it runs (by submission id).
    pub prints: BTreeMap<String, String>,
    /// What any job without a print of its own prints once it runs.
    pub prints_otherwise: Option<String>,
    /// HTTP requests received (any path, any token).
    pub requests: usize,
    /// `GET /api/jobs/{id}` by id.
    pub looked_at: BTreeMap<String, usize>,
    /// `GET /api/cluster_status` so far.
    pub status_asked: usize,
    /// Bytes of job logs sent.
    pub log_bytes_sent: usize,
    /// The autoscaler monitor's last report of the GPU node's usage: Ray's is a few
    /// seconds old, so the test says when a new one is made (see
    /// [`Fake::report_usage`]), unless `live_report`.
    pub report: Option<BTreeMap<String, f64>>,
    pub live_report: bool,
    /// Start no pending job, whatever is free (Ray's scheduler takes its time).
    pub hold_pending: bool,
}

impl FakeRay {
    pub fn used(&self) -> BTreeMap<String, f64> {
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
    pub fn schedule(&mut self) {
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

    pub fn details(&self, id: &str) -> Value {
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
    pub fn nodes(&self) -> Value {
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
    pub fn cluster_status(&mut self) -> Value {
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

pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.into())))
        .unwrap()
}

pub fn json_answer(value: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

pub fn traceback(exception: &str) -> String {
    format!(
        "Traceback (most recent call last):\n  File \"/ray/dashboard/modules/job/job_head.py\", line 419, in submit_job\n{exception}\n"
    )
}

/// What a submission reserves, by Ray's names (Ray's default entrypoint CPUs are 0).
pub fn demand_of(submission: &Value) -> BTreeMap<String, f64> {
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

pub async fn answer(
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
pub struct Fake {
    pub address: String,
    pub state: Arc<Mutex<FakeRay>>,
}

impl Fake {
    /// The fake on plain HTTP at `127.0.0.1`.
    pub async fn start() -> Fake {
        Fake::serve(None, "127.0.0.1").await
    }

    /// The fake behind TLS with `cert` (its chain) and `key`, its address naming
    /// `host` (which must resolve to 127.0.0.1).
    pub async fn start_tls(
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

    pub async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, host: &str) -> Fake {
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

    pub fn client(&self) -> RayClient {
        RayClient::new(&self.address, Some(TOKEN)).unwrap()
    }

    pub fn set_status(&self, id: &str, status: JobStatus) {
        let mut ray = self.state.lock();
        ray.jobs.get_mut(id).unwrap().status = status;
        ray.schedule();
    }

    /// The autoscaler monitor reports the usage of now.
    pub fn report_usage(&self) {
        let mut ray = self.state.lock();
        ray.report = Some(ray.used());
    }
}

/// Wait until `condition` holds, for at most 10 s.
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn worker_job(id: &str, vram: f64) -> JobSubmission {
    JobSubmission::new("exec ./cjm-echo --listen 0.0.0.0:0")
        .submission_id(id)
        .num_gpus(1.0)
        .resource("gpu_vram_mb", vram)
        .label("cjm-pool", "gpu")
        .working_dir("gcs://_ray_pkg_00.zip")
        .env_var("CJM_CLIENT_CERT_SHA256", "ab".repeat(32))
        .metadata("cjm_plugin", "echo")
}

/// `der` as PEM (base64 in 64-column lines), as a CA file holds it.
pub fn pem(label: &str, der: &[u8]) -> String {
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
pub fn issued_by_a_ca(names: &[&str]) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
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
pub fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap();
    (
        certified.cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        )),
    )
}

pub fn trusting(address: &str, trust: DashboardTrust) -> RayClient {
    RayClient::builder(address)
        .token(TOKEN)
        .trust(trust)
        .build()
        .unwrap()
}

pub fn handshake_line() -> String {
    Handshake::new(40123, fingerprint(b"worker cert"), 4242).to_line()
}

/// A job of the fake that holds `cpus` CPUs, a GPU and `vram_mb` on the GPU node.
pub fn holder(id: &str, cpus: f64, vram_mb: f64) -> JobSubmission {
    worker_job(id, vram_mb).num_cpus(cpus)
}

pub use cjm_tls::certificate_fingerprint as fingerprint;
