//! Ray placement against an in-process fake of Ray 2.60's dashboard (cjm-ray's
//! `tests/fake/`): a worker shipped, submitted and reached through a dashboard over
//! TLS or loopback HTTP, and, while a job pends, a worker stopped only for GPU memory
//! it frees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../cjm-ray/tests/fake/mod.rs"]
mod fake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::remote::Fingerprint;
use cjm_proxy::ray::{DashboardTrust, JobStatus, RayClient, RayError};
use cjm_proxy::{
    ClientIdentity, LaunchSpec, ProxyError, RayOptions, RayPlacement, Shortfall, WaitingHook,
};
use parking_lot::Mutex;

use fake::*;

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
    let pinned = fingerprint(&cert);
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
    let presented = fingerprint(&cert);
    let fake = Fake::start_tls(vec![cert], key, "localhost").await;
    let folder = tempfile::tempdir().unwrap();

    // Another certificate pinned.
    let other: Fingerprint = fingerprint(b"another dashboard");
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
