//! Workers placed by a real Ray cluster (`ray[default]` from PyPI), through our own
//! Jobs API client, answering over pinned TLS. `cargo xtask ray-e2e` starts a head and
//! a second node on this machine (the second with 2 declared GPUs, 24000
//! `gpu_vram_mb` and the label `cjm-pool=gpu`, at 127.0.0.2), sets the variables below
//! and runs this file; without `RAY_ADDRESS` every test here passes at once, so plain
//! `cargo test` needs no Ray.
//!
//! - `RAY_ADDRESS`: the dashboard, `http://127.0.0.1:PORT`.
//! - `CJM_RAY_TOKEN`: the cluster's token (Ray's `RAY_AUTH_MODE=token`).
//! - `CJM_RAY_PLUGIN`: the plugin binary to ship (a release `cjm-echo`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cjm_interface::wire;
use cjm_proxy::ray::{
    entrypoint_command, submission_id, JobStatus, JobSubmission, Package, Placed, RayClient,
    RayError,
};
use cjm_proxy::{ClientIdentity, PinnedConnector};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

const TOKEN_ENV: &str = "CJM_RAY_TOKEN";
/// Long enough for a whole test; a worker this run leaves behind ends by itself.
const LEASE_SECS: &str = "120";

struct Cluster {
    address: String,
    ray: RayClient,
    plugin: PathBuf,
    identity: ClientIdentity,
    run: String,
}

/// The cluster the xtask started, or `None` (the test then passes: no Ray here).
fn cluster(test: &str) -> Option<Cluster> {
    let Ok(address) = std::env::var("RAY_ADDRESS") else {
        println!("RAY_ADDRESS not set: {test} needs `cargo xtask ray-e2e`; skipped");
        return None;
    };
    let plugin = PathBuf::from(std::env::var("CJM_RAY_PLUGIN").expect("CJM_RAY_PLUGIN"));
    Some(Cluster {
        ray: RayClient::with_token_env(&address, Some(TOKEN_ENV)).unwrap(),
        address,
        plugin,
        identity: ClientIdentity::shared().unwrap(),
        // Ray keeps the ids of ended jobs: every run needs its own.
        run: format!("{}-{}", std::process::id(), test),
    })
}

impl Cluster {
    /// The worker's job: the plugin from its uploaded package, on the GPU node.
    fn worker_job(&self, package: &Package, name: &str, vram_mb: f64) -> JobSubmission {
        let program = format!("./{}", self.plugin.file_name().unwrap().to_str().unwrap());
        let args = ["--listen", "0.0.0.0:0", "--lease-secs", LEASE_SECS].map(String::from);
        JobSubmission::new(entrypoint_command(&program, &args))
            .submission_id(submission_id("cjm-echo", &[&self.run, name]))
            .num_cpus(0.5)
            .num_gpus(1.0)
            .resource("gpu_vram_mb", vram_mb)
            .label("cjm-pool", "gpu")
            .working_dir(package.uri())
            .env_var(
                wire::CLIENT_CERT_SHA256_ENV,
                self.identity.fingerprint().to_string(),
            )
            .metadata("cjm_plugin", "cjm-echo")
    }

    async fn upload(&self) -> Package {
        let package = Package::executable(&self.plugin).unwrap();
        self.ray.upload(&package).await.unwrap();
        package
    }
}

/// Wait until a report of Ray's autoscaler monitor made after `since` lists a job's
/// demand for `vram_mb` of `gpu_vram_mb` among those waiting for resources: Ray has
/// seen the job and waits for room for it.
async fn ray_waits_for(cluster: &Cluster, since: SystemTime, vram_mb: f64) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let since = since.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let token = std::env::var(TOKEN_ENV).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = Request::get(format!("{}/api/cluster_status", cluster.address))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let status: Value = serde_json::from_slice(&body).unwrap();
        let report = &status["data"]["clusterStatus"];
        let waiting = report["loadMetricsReport"]["resourceDemand"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|demand| demand[0]["gpu_vram_mb"].as_f64() == Some(vram_mb));
        if report["time"].as_f64().is_some_and(|time| time > since) && waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no report of Ray waiting for {vram_mb} gpu_vram_mb after {since}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get(placed: &Placed, identity: &ClientIdentity, path: &str) -> (StatusCode, Value) {
    request(placed, identity, Method::GET, path, None).await
}

async fn request(
    placed: &Placed,
    identity: &ClientIdentity,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = PinnedConnector::new(identity, placed.handshake.server_cert_sha256)
        .unwrap()
        .client();
    let url = format!(
        "https://{}:{}{path}",
        placed.node_address, placed.handshake.port
    );
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Whether process `pid` of this machine is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn gone_within(pid: u32, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !alive(pid) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused() {
    let Some(cluster) = cluster("token") else {
        return;
    };
    let none = RayClient::new(&cluster.address, None).unwrap();
    let err = none.version().await.unwrap_err();
    assert!(matches!(err, RayError::Unauthorized { .. }), "{err:?}");
    let wrong = RayClient::new(&cluster.address, Some("0123")).unwrap();
    let err = wrong.job("anything").await.unwrap_err();
    assert!(matches!(err, RayError::Forbidden { .. }), "{err:?}");
    println!("{err}");
    let version = cluster.ray.version().await.unwrap();
    println!("Ray {}", version["ray_version"]);
}

/// Placement on the labelled GPU node, TLS, a retried submission, a job pending for
/// VRAM that starts once the first is stopped (the worker's process gone), and a
/// pending job stopped.
#[tokio::test]
async fn a_worker_placed_by_ray_answers_over_tls_and_stops() {
    let Some(cluster) = cluster("place") else {
        return;
    };
    let ray = &cluster.ray;

    let pack_started = Instant::now();
    let package = Package::executable(&cluster.plugin).unwrap();
    let pack_ms = pack_started.elapsed().as_millis();
    let upload_started = Instant::now();
    let uploaded = ray.upload(&package).await.unwrap();
    let upload_ms = upload_started.elapsed().as_millis();
    assert!(
        !ray.upload(&package).await.unwrap(),
        "the same binary is uploaded once"
    );

    // First worker: holds 16000 of the node's 24000 gpu_vram_mb.
    let first = cluster.worker_job(&package, "first", 16000.0);
    let id = first.id().unwrap().to_owned();
    let submitted = Instant::now();
    assert!(!ray.submit(&first).await.unwrap().existed);
    // Ray's own start: submission to RUNNING, seen by polling every 20 ms.
    let running_after = {
        let ray = ray.clone();
        let id = id.clone();
        tokio::spawn(async move {
            loop {
                if ray.job(&id).await.unwrap().status != JobStatus::Pending {
                    return submitted.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let placed = ray
        .wait_for_handshake(&id, Duration::from_secs(120))
        .await
        .unwrap();
    let (status, health) = get(&placed, &cluster.identity, "/health").await;
    let ready_ms = submitted.elapsed().as_millis();
    let running_ms = running_after.await.unwrap().as_millis();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["pid"], placed.handshake.pid);
    assert_eq!(placed.node_address, "127.0.0.2", "the labelled node");
    let (status, answer) = request(
        &placed,
        &cluster.identity,
        Method::POST,
        "/execute",
        Some(json!({"args": ["placed by ray"], "kwargs": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["result"], "placed by ray");
    assert_eq!(answer["processed_by_pid"], placed.handshake.pid);

    // The same submission again finds the job.
    assert!(ray.submit(&first).await.unwrap().existed);

    // A second worker needing 16000 more does not fit: it pends.
    let second = cluster.worker_job(&package, "second", 16000.0);
    let second_id = second.id().unwrap().to_owned();
    let second_submitted = SystemTime::now();
    ray.submit(&second).await.unwrap();
    ray_waits_for(&cluster, second_submitted, 16000.0).await;
    assert_eq!(
        ray.job(&second_id).await.unwrap().status,
        JobStatus::Pending
    );

    // Unloading the first stops its job; its process goes.
    let stop_started = Instant::now();
    let stopped = ray
        .stop_until_gone(&id, Duration::from_secs(60))
        .await
        .unwrap();
    let stop_ms = stop_started.elapsed().as_millis();
    assert_eq!(stopped.status, JobStatus::Stopped);
    let gone = gone_within(placed.handshake.pid, Duration::from_secs(10)).await;
    assert!(gone.is_some(), "worker {} still runs", placed.handshake.pid);

    // The VRAM is free: the second starts and answers.
    let placed_second = ray
        .wait_for_handshake(&second_id, Duration::from_secs(120))
        .await
        .unwrap();
    let (status, _) = get(&placed_second, &cluster.identity, "/health").await;
    assert_eq!(status, StatusCode::OK);

    // A third pends behind the second; a stop while it pends is not the end of it:
    // stop_until_gone stops it again once it starts.
    let third = cluster.worker_job(&package, "third", 16000.0);
    let third_id = third.id().unwrap().to_owned();
    let third_submitted = SystemTime::now();
    ray.submit(&third).await.unwrap();
    ray_waits_for(&cluster, third_submitted, 16000.0).await;
    assert_eq!(ray.job(&third_id).await.unwrap().status, JobStatus::Pending);
    let stopped_at = SystemTime::now();
    assert!(ray.stop(&third_id).await.unwrap(), "Ray passes the stop on");
    // A report made after the stop still has Ray waiting to place it.
    ray_waits_for(&cluster, stopped_at, 16000.0).await;
    assert_eq!(
        ray.job(&third_id).await.unwrap().status,
        JobStatus::Pending,
        "a stop does not cancel a pending job"
    );
    let stopping_third = {
        let ray = ray.clone();
        let third_id = third_id.clone();
        tokio::spawn(async move {
            ray.stop_until_gone(&third_id, Duration::from_secs(120))
                .await
        })
    };
    ray.stop_until_gone(&second_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        gone_within(placed_second.handshake.pid, Duration::from_secs(10))
            .await
            .is_some()
    );
    let third_end = stopping_third.await.unwrap().unwrap();
    assert_eq!(third_end.status, JobStatus::Stopped);
    let third_logs = ray.logs(&third_id).await.unwrap();

    println!(
        "{}",
        json!({
            "ray_place_ready_ms": ready_ms,
            "ray_job_running_ms": running_ms,
            "package_bytes": package.bytes().len(),
            "package_zip_ms": pack_ms,
            "package_upload_ms": upload_ms,
            "package_uploaded_now": uploaded,
            "ray_stop_ms": stop_ms,
            "third_job_started_before_its_stop": third_logs.contains("\"cjm_worker\""),
        })
    );
}

/// A `CJM_HOME` with two manifests placed by Ray on the labelled GPU node, each
/// asking for 16000 of its 24000 `gpu_vram_mb`.
fn ray_home(cluster: &Cluster, home: &std::path::Path) -> cjm_manager::PluginManager {
    let home = cjm_manager::CjmHome::at(home);
    std::fs::create_dir_all(home.plugins_dir()).unwrap();
    for name in ["echo-ray-a", "echo-ray-b"] {
        let manifest = json!({
            "name": name,
            "version": "1.0.0",
            "command": cluster.plugin,
            "resources": {"requires_gpu": true, "min_gpu_vram_mb": 16000},
            "placement": {"ray": {
                "address": cluster.address,
                "token_env": TOKEN_ENV,
                "label_selector": {"cjm-pool": "gpu"},
                "lease_secs": 20,
            }},
        });
        std::fs::write(home.manifest_path(name), manifest.to_string()).unwrap();
    }
    let mut options = cjm_manager::ManagerOptions::with_home(home);
    // A worker whose job ended is started again (the restart policy applies).
    options.fault_policy = cjm_manager::FaultPolicy::default().with_restart(
        cjm_manager::RestartPolicy::up_to(3, Duration::from_millis(100)),
    );
    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();
    manager
}

/// The manager places plugins through Ray from their manifests alone: executes over
/// TLS; a second GPU plugin whose job pends for VRAM has the idle first one stopped
/// (its job stopped, its process gone), and a call to the first starts it again the
/// same way; a worker whose job ends is started again on the next call; unloading
/// stops the job.
#[tokio::test]
async fn the_manager_places_plugins_by_ray_from_their_manifests() {
    let Some(cluster) = cluster("manager") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let manager = ray_home(&cluster, home.path());
    let run = |name: &'static str, text: &'static str| {
        let manager = manager.clone();
        async move {
            manager
                .execute_plugin(name, cjm_manager::CallArgs::new().arg(text))
                .await
                .unwrap()
        }
    };

    let loading = Instant::now();
    manager
        .load_plugin("echo-ray-a", Some(serde_json::Map::new()))
        .await
        .unwrap();
    let answer = run("echo-ray-a", "via the manager").await;
    let manager_place_ready_ms = loading.elapsed().as_millis();
    assert_eq!(answer["result"], "via the manager");
    let first = manager.worker_info("echo-ray-a").unwrap();
    assert!(!first.local);
    assert!(
        first.location.starts_with("ray job ") && first.location.ends_with(" on 127.0.0.2"),
        "{}",
        first.location
    );
    assert_eq!(answer["processed_by_pid"], first.pid);
    assert!(alive(first.pid));

    // The second needs VRAM the node no longer has: while its job pends, the idle
    // first is stopped (it stays loaded, stopped, with its configuration).
    let evicting = Instant::now();
    manager
        .load_plugin("echo-ray-b", Some(serde_json::Map::new()))
        .await
        .unwrap();
    let evict_and_place_ms = evicting.elapsed().as_millis();
    assert!(
        gone_within(first.pid, Duration::from_secs(10))
            .await
            .is_some(),
        "the first plugin's job was stopped"
    );
    let status = manager.plugin_status("echo-ray-a").unwrap();
    assert_eq!(
        status.state,
        cjm_manager::PluginState::Stopped,
        "{status:?}"
    );
    assert!(
        status
            .last_failure
            .as_deref()
            .unwrap_or("")
            .contains("echo-ray-b"),
        "{status:?}"
    );
    assert_eq!(run("echo-ray-b", "second").await["result"], "second");
    let second = manager.worker_info("echo-ray-b").unwrap();

    // A call to the first places it again, the idle second making way.
    assert_eq!(run("echo-ray-a", "again").await["result"], "again");
    assert!(gone_within(second.pid, Duration::from_secs(10))
        .await
        .is_some());
    let again = manager.worker_info("echo-ray-a").unwrap();
    assert_ne!(again.location, first.location, "a new job");

    // Its job ended by someone else: the next call starts it again (the restart
    // policy allows it).
    let job = again.location["ray job ".len()..]
        .split_once(' ')
        .unwrap()
        .0
        .to_owned();
    cluster
        .ray
        .stop_until_gone(&job, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(gone_within(again.pid, Duration::from_secs(10))
        .await
        .is_some());
    // The host saw the job end (it polls it): the plugin's worker is dead.
    let deadline = Instant::now() + Duration::from_secs(30);
    while manager.plugin_status("echo-ray-a").unwrap().state != cjm_manager::PluginState::Dead {
        assert!(Instant::now() < deadline, "the ended job was not noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run("echo-ray-a", "revived").await["result"], "revived");
    let revived = manager.worker_info("echo-ray-a").unwrap();
    assert_ne!(revived.location, again.location);

    manager.unload_plugin("echo-ray-a").await.unwrap();
    assert!(
        gone_within(revived.pid, Duration::from_secs(10))
            .await
            .is_some(),
        "unloading stops the job and its worker"
    );
    manager.unload_plugin("echo-ray-b").await.unwrap();
    println!(
        "{}",
        json!({
            "manager_ray_place_ready_ms": manager_place_ready_ms,
            "manager_ray_evict_and_place_ms": evict_and_place_ms,
        })
    );
}

/// A Python plugin of the original placed by Ray: its job installs the original and
/// the plugin (`runtime_env.pip`) and runs the Python worker behind `cjm-relay`, which
/// serves the host over pinned TLS; unloading stops the job and both processes.
#[tokio::test]
async fn a_python_plugin_is_placed_by_ray_behind_the_relay() {
    let Some(cluster) = cluster("python") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let cjm_home = cjm_manager::CjmHome::at(home.path());
    std::fs::create_dir_all(cjm_home.plugins_dir()).unwrap();
    let package =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python/cjm-echo-py");
    let manifest = json!({
        "name": "echo-py-ray",
        "version": "0.1.0",
        // This host's interpreter: not used on the node.
        "python_path": "/nonexistent/python",
        "module": "cjm_echo_py.plugin",
        "class": "EchoPlugin",
        "cjm_plugin_system_version": "0.0.20",
        "placement": {"ray": {
            "address": cluster.address,
            "token_env": TOKEN_ENV,
            "lease_secs": 20,
            "pip": ["cjm_plugin_system==0.0.20", package],
        }},
    });
    std::fs::write(cjm_home.manifest_path("echo-py-ray"), manifest.to_string()).unwrap();
    let mut options = cjm_manager::ManagerOptions::with_home(cjm_home);
    options.relay_program = Some(PathBuf::from(env!("CARGO_BIN_EXE_e2e-relay")));
    let manager = cjm_manager::PluginManager::new(options);
    manager.discover_manifests();
    let loading = Instant::now();
    manager
        .load_plugin("echo-py-ray", Some(serde_json::Map::new()))
        .await
        .unwrap();
    let answer = manager
        .execute_plugin(
            "echo-py-ray",
            cjm_manager::CallArgs::new().arg("from python on ray"),
        )
        .await
        .unwrap();
    let ready_ms = loading.elapsed().as_millis();
    assert_eq!(answer["result"], "from python on ray", "{answer}");
    let worker = manager.worker_info("echo-py-ray").unwrap();
    assert!(
        worker.location.starts_with("ray job "),
        "{}",
        worker.location
    );
    assert!(
        alive(worker.pid),
        "the Python worker runs on this machine's node"
    );
    manager.unload_plugin("echo-py-ray").await.unwrap();
    assert!(
        gone_within(worker.pid, Duration::from_secs(10))
            .await
            .is_some(),
        "the Python worker went with its job"
    );
    println!("{}", json!({"ray_python_place_ready_ms": ready_ms}));
}

/// A manifest placing its worker through a dashboard the host would have to trust
/// blindly is refused at load, before any connection, saying how to fix it: plain
/// http:// off loopback without `insecure_http`, https:// with nothing to trust it
/// by. Runs without Ray (192.0.2.1 is TEST-NET-1: nothing is ever sent there).
#[tokio::test]
async fn an_untrusted_dashboard_is_refused_at_load_before_any_connection() {
    let home = tempfile::tempdir().unwrap();
    let cjm_home = cjm_manager::CjmHome::at(home.path());
    std::fs::create_dir_all(cjm_home.plugins_dir()).unwrap();
    let manifest = |name: &str, ray: Value| {
        let manifest = json!({
            "name": name,
            "version": "1.0.0",
            "command": env!("CARGO_BIN_EXE_e2e-relay"),
            "placement": {"ray": ray},
        });
        std::fs::write(cjm_home.manifest_path(name), manifest.to_string()).unwrap();
    };
    manifest("plain", json!({"address": "http://192.0.2.1:8265"}));
    manifest("no-trust", json!({"address": "https://192.0.2.1:8265"}));
    manifest(
        "ca-missing",
        json!({"address": "https://192.0.2.1:8265", "ca_file": "no-such-ca.pem"}),
    );
    manifest(
        "pinned-plain",
        json!({"address": "http://127.0.0.1:8265", "dashboard_fingerprint": "ab".repeat(32)}),
    );
    let manager =
        cjm_manager::PluginManager::new(cjm_manager::ManagerOptions::with_home(cjm_home.clone()));
    manager.discover_manifests();
    let refusal = |name: &'static str| {
        let manager = manager.clone();
        async move {
            let err = manager
                .load_plugin(name, Some(serde_json::Map::new()))
                .await
                .unwrap_err();
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    };
    let plain = refusal("plain").await;
    for expected in [
        "refusing plain http:// to the Ray dashboard at http://192.0.2.1:8265",
        "\"ca_file\"",
        "\"dashboard_fingerprint\"",
        "\"insecure_http\": true",
    ] {
        assert!(plain.contains(expected), "{plain} should say {expected}");
    }
    let no_trust = refusal("no-trust").await;
    assert!(
        no_trust.contains("nothing says which certificate to trust"),
        "{no_trust}"
    );
    // A relative CA file is the manifest folder's.
    let missing = refusal("ca-missing").await;
    let expected = format!(
        "cannot read the CA file {}",
        cjm_home.plugins_dir().join("no-such-ca.pem").display()
    );
    assert!(
        missing.contains(&expected),
        "{missing} should say {expected}"
    );
    let pinned_plain = refusal("pinned-plain").await;
    assert!(
        pinned_plain.contains("need an https:// address"),
        "{pinned_plain}"
    );
}

/// The raylet of the worker's node SIGKILLed: the worker goes within 10 s. Run last
/// (the xtask orders it): the node is gone afterwards.
#[tokio::test]
async fn zz_a_worker_goes_with_its_nodes_raylet() {
    let Some(cluster) = cluster("raylet") else {
        return;
    };
    let package = cluster.upload().await;
    let job = cluster.worker_job(&package, "raylet", 4000.0);
    let id = job.id().unwrap().to_owned();
    cluster.ray.submit(&job).await.unwrap();
    let placed = cluster
        .ray
        .wait_for_handshake(&id, Duration::from_secs(120))
        .await
        .unwrap();
    let (status, _) = get(&placed, &cluster.identity, "/health").await;
    assert_eq!(status, StatusCode::OK);

    let raylet = raylet_of("127.0.0.2").expect("the GPU node's raylet");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(raylet).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let gone = gone_within(placed.handshake.pid, Duration::from_secs(10)).await;
    println!(
        "{}",
        json!({"worker_gone_after_raylet_kill_ms": gone.map(|d| d.as_millis())})
    );
    assert!(
        gone.is_some(),
        "worker {} outlived its raylet by 10 s",
        placed.handshake.pid
    );
}

/// The pid of the raylet serving node `ip`, from /proc.
fn raylet_of(ip: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|word| String::from_utf8_lossy(word).into_owned())
            .collect();
        let is_raylet = words
            .first()
            .is_some_and(|program| program.ends_with("/raylet"));
        if is_raylet
            && words
                .iter()
                .any(|word| word == &format!("--node_ip_address={ip}"))
        {
            return Some(pid);
        }
    }
    None
}
