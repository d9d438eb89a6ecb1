//! The Ray Jobs client against an in-process fake of Ray 2.60's dashboard (see
//! `fake/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;

use std::time::Duration;

use cjm_interface::remote::Handshake;
use cjm_ray::{JobStatus, JobSubmission, Package, RayClient, RayError};

use fake::*;

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
    let line = Handshake::new(40123, fingerprint(b"worker cert"), 4242).to_line();
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
