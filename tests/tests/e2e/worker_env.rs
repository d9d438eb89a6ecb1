//! What a worker finds in its environment: the original's folders and session id, a
//! plugin's declared variables, and secrets set with `cjm-ctl secrets set`, which
//! reach the worker and nothing else (not its command line, its log, or the CLI's
//! output).

use std::io::Write;
use std::process::{Command, Stdio};

use cjm_manager::CallArgs;
use serde_json::{json, Value};

use crate::common::*;

const TOKEN: &str = "tok-5ecret-value";

fn env_home() -> TestHome {
    let home = TestHome::new();
    home.write_manifest(
        "faulty",
        json!({
            "name": "faulty",
            "version": "0.1.0",
            "command": FAULTY,
            "worker_env": [
                {"name": "CJM_TEST_CACHE", "default": "${PLUGIN_DATA_DIR}/cache"},
                {"name": "CJM_TEST_TOKEN", "secret": true, "required": true,
                 "description": "the service's API token"},
            ],
        }),
    );
    home
}

fn ctl(home: &TestHome, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(CTL)
        .args(args)
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading its input: the
    // write then finds the pipe closed, which is no failure of the test.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn env_of(manager: &cjm_manager::PluginManager, name: &str) -> Value {
    manager
        .execute_plugin("faulty", CallArgs::new().arg("env").arg(name))
        .await
        .unwrap()["value"]
        .clone()
}

#[tokio::test]
async fn a_worker_gets_its_folders_declared_variables_and_secrets_and_nothing_leaks() {
    let home = env_home();
    let manager = home.manager();
    manager.discover_manifests();

    // The required secret is missing: the load says which and how to set it.
    let err = manager.load_plugin("faulty", None).await.unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("needs CJM_TEST_TOKEN")
            && text.contains("cjm-ctl secrets set faulty CJM_TEST_TOKEN"),
        "{text}"
    );

    let (ok, stdout, stderr) = ctl(
        &home,
        &["secrets", "set", "faulty", "CJM_TEST_TOKEN"],
        &format!("{TOKEN}\n"),
    );
    assert!(ok, "{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    let (ok, listed, _) = ctl(&home, &["secrets", "list"], "");
    assert!(ok);
    assert_eq!(listed, "faulty CJM_TEST_TOKEN\n");

    manager.load_plugin("faulty", None).await.unwrap();
    assert_eq!(env_of(&manager, "CJM_TEST_TOKEN").await, TOKEN);
    let data = home.path().join("plugin_data/faulty");
    assert!(data.is_dir());
    assert_eq!(
        env_of(&manager, "PLUGIN_DATA_DIR").await,
        data.to_str().unwrap()
    );
    assert_eq!(
        env_of(&manager, "CJM_PLUGIN_DATA_DIR").await,
        home.path().join("plugin_data").to_str().unwrap()
    );
    assert_eq!(
        env_of(&manager, "CJM_TEST_CACHE").await,
        data.join("cache").to_str().unwrap()
    );
    assert_eq!(
        env_of(&manager, "CJM_MODELS_DIR").await,
        home.path().join("models").to_str().unwrap()
    );
    let session = env_of(&manager, "CJM_WORKER_SESSION_ID").await;
    assert!(session.as_str().is_some_and(|id| !id.is_empty()));

    // The secret is in the worker's environment only.
    let pid = manager.worker_info("faulty").unwrap().pid;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));
    let log = std::fs::read_to_string(home.path().join("logs/faulty.log")).unwrap();
    assert!(!log.contains(TOKEN), "{log}");

    // A new start is a new session.
    manager.reload_plugin("faulty", None).await.unwrap();
    assert_ne!(env_of(&manager, "CJM_WORKER_SESSION_ID").await, session);
    manager.shutdown().await;

    let (ok, _, stderr) = ctl(
        &home,
        &["secrets", "remove", "faulty", "CJM_TEST_TOKEN"],
        "",
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = ctl(
        &home,
        &["secrets", "remove", "faulty", "CJM_TEST_TOKEN"],
        "",
    );
    assert!(
        !ok && stderr.contains("has no secret CJM_TEST_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn a_secret_is_never_taken_from_the_command_line_and_an_empty_or_misnamed_one_is_refused() {
    let home = env_home();
    let (ok, _, stderr) = ctl(
        &home,
        &["secrets", "set", "faulty", "CJM_TEST_TOKEN", TOKEN],
        "",
    );
    assert!(!ok, "a value on the command line is refused: {stderr}");
    let (ok, _, stderr) = ctl(&home, &["secrets", "set", "faulty", "CJM_TEST_TOKEN"], "");
    assert!(!ok && stderr.contains("no value given"), "{stderr}");
    // A name no worker could be given is refused before the value is read.
    for bad in ["bad name", "1KEY"] {
        let (ok, _, stderr) = ctl(&home, &["secrets", "set", "faulty", bad], TOKEN);
        assert!(!ok && stderr.contains("not a variable name"), "{stderr}");
        assert!(!stderr.contains(TOKEN), "{stderr}");
    }
    assert!(!home.path().join("secrets.json").exists());
}
