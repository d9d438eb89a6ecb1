//! Who may talk to a worker: only the host that started it.

use std::os::unix::fs::PermissionsExt;

use cjm_manager::{CallArgs, Endpoint};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_only_requests_carrying_its_hosts_secret() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("faulty", None).await.unwrap();
    let worker = manager.worker_info("faulty").unwrap();
    let (endpoint, pid) = (worker.endpoint.clone(), worker.pid);
    // A worker of our host listens on a Unix socket in a folder only this user enters.
    let Endpoint::Unix { path } = endpoint.clone() else {
        panic!("expected a Unix socket, got {endpoint}");
    };
    let folder = path.parent().unwrap();
    let mode = std::fs::metadata(folder).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", folder.display());

    let secret = initial_env_var(pid, "CJM_WORKER_TOKEN").expect("worker got a secret");
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&secret),
        "secret on the command line"
    );

    let answers = tokio::task::spawn_blocking(move || {
        let request = |auth: &str| {
            exchange_at(
                &endpoint,
                format!("GET /health HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
        };
        // Differs from the secret in its last digit only, whatever that digit is.
        let last = if secret.ends_with('0') { '1' } else { '0' };
        let wrong = format!("{}{last}", &secret[..63]);
        [
            request(""),
            request(&format!("Authorization: Bearer {wrong}\r\n")),
            request(&format!("Authorization: {secret}\r\n")),
            request(&format!("Authorization: Bearer {secret}\r\n")),
        ]
    })
    .await
    .unwrap();
    for (status, text) in &answers[..3] {
        assert_eq!(*status, 401, "{text}");
        assert!(text.contains("missing or wrong access token"), "{text}");
    }
    assert_eq!(answers[3].0, 200, "{}", answers[3].1);

    // The manager's own calls carry it; what the plugin starts does not inherit it.
    let answer = manager
        .execute_plugin("faulty", CallArgs::new().arg("spawn_child"))
        .await
        .unwrap();
    let child = answer["child_pid"].as_u64().unwrap() as u32;
    assert_eq!(initial_env_var(child, "CJM_WORKER_TOKEN"), None);
    manager.shutdown().await;
    // The socket's folder goes with the worker.
    assert!(!path.exists());
    assert_eq!(
        entries(&home.socket_dir()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_gets_its_own_secret() {
    let home = TestHome::new();
    home.native_manifest("one", ECHO, &[]);
    home.native_manifest("two", ECHO, &[]);
    let manager = home.manager();
    manager.discover_manifests();
    manager.load_plugin("one", None).await.unwrap();
    manager.load_plugin("two", None).await.unwrap();
    let secret = |name: &str| {
        let pid = manager.worker_info(name).unwrap().pid;
        initial_env_var(pid, "CJM_WORKER_TOKEN").unwrap()
    };
    assert_ne!(secret("one"), secret("two"));
    manager.shutdown().await;
}
