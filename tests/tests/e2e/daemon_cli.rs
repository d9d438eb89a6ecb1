//! The command line through a daemon: with `cjm-ctl serve` running on a home, `exec`,
//! `task`, `list`, `stats`, `logs` and `jobs` go through its socket, and answer as
//! they do in-process (`--local`); the worker stays loaded between two execs, a job
//! submitted from one terminal is seen by another's `jobs --follow`, Ctrl-C cancels
//! the daemon's job, and a socket nobody serves falls back to in-process. Every step
//! waits for a condition with a deadline, never for a fixed time.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A `cjm-ctl serve` child on `home`; killed on drop if it still runs.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(home: &TestHome) -> Daemon {
        let mut child = Command::new(CTL)
            .arg("serve")
            .env("CJM_HOME", home.path())
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (send, receive) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let daemon = Daemon { child };
        let ready = receive.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(ready.starts_with("ready: serving on unix:"), "{ready}");
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ctl(home: &TestHome) -> Command {
    let mut command = Command::new(CTL);
    command
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

fn run(home: &TestHome, args: &[&str]) -> Output {
    ctl(home).args(args).output().unwrap()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn home_with_plugins() -> TestHome {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    home
}

/// The newest job of the journal, as `cjm-ctl jobs --json --local` shows it.
fn newest_job(home: &TestHome) -> Value {
    let listed = json_of(&run(home, &["jobs", "--json", "-n", "1"]));
    listed["jobs"][0].clone()
}

/// The worker pid of `plugin` in the daemon, from `cjm-ctl list --json`.
fn daemon_worker(home: &TestHome, plugin: &str) -> Option<u64> {
    let listed = json_of(&run(home, &["list", "--json"]));
    listed["daemon"]["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|loaded| loaded["name"] == plugin)
        .and_then(|loaded| loaded["pid"].as_u64())
}

/// How a command's output is compared between the daemon and `--local`.
#[derive(Debug, Clone, Copy)]
enum Compare {
    /// stdout, byte for byte.
    Same,
    /// stdout as JSON, equal.
    Json,
    /// stdout as JSON, only this key's value equal (the daemon adds others).
    JsonKey(&'static str),
    /// stdout as JSON, the same keys (live figures differ between two readings).
    JsonKeys,
    /// The exit status only.
    Status,
}

/// Whether the command ran a job, which then lands in the journal under the host
/// that ran it: the daemon's pid, or the command's own.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Journals {
    Yes,
    No,
}

#[test]
fn the_commands_answer_the_same_through_the_daemon_and_in_process() {
    let home = home_with_plugins();
    let daemon = Daemon::start(&home);
    let cases: &[(&[&str], i32, Compare, Journals)] = &[
        (
            &["exec", "faulty", "--args", r#"["steps", 3, 1]"#],
            0,
            Compare::Json,
            Journals::Yes,
        ),
        (
            &["exec", "faulty", "--args", r#"["nonsense"]"#],
            65,
            Compare::Same,
            Journals::Yes,
        ),
        (
            &["exec", "faulty", "--args", r#"["resource"]"#],
            69,
            Compare::Same,
            Journals::Yes,
        ),
        (
            &["exec", "faulty", "--args", r#"["panic"]"#],
            70,
            Compare::Same,
            Journals::Yes,
        ),
        (
            &["exec", "faulty", "--args", r#"["transient"]"#],
            75,
            Compare::Same,
            Journals::Yes,
        ),
        (&["exec", "no-such-plugin"], 65, Compare::Same, Journals::No),
        // Two chunks, then the stream breaks: the same lines and the same status.
        (
            &["exec", "faulty", "--stream", "--args", "[2]"],
            70,
            Compare::Same,
            Journals::Yes,
        ),
        (
            &[
                "task",
                "cjm-wordcount",
                "text-statistics",
                "count_text",
                "--kwargs",
                r#"{"text": "x y z"}"#,
            ],
            0,
            Compare::Json,
            Journals::Yes,
        ),
        (
            &["task", "cjm-wordcount", "nope", "count_text"],
            65,
            Compare::Same,
            Journals::Yes,
        ),
        (
            &["list", "--json"],
            0,
            Compare::JsonKey("plugins"),
            Journals::No,
        ),
        (&["stats", "--json"], 0, Compare::JsonKeys, Journals::No),
        (
            &["logs", "faulty", "-n", "3"],
            0,
            Compare::Same,
            Journals::No,
        ),
        (&["logs", "no-such-plugin"], 1, Compare::Same, Journals::No),
        (&["jobs", "--json"], 0, Compare::Json, Journals::No),
        (&["jobs", "cancel", "999"], 1, Compare::Status, Journals::No),
    ];
    for (args, code, compare, journals) in cases {
        let before = newest_job(&home)["id"].clone();
        let through = run(&home, args);
        let journalled = newest_job(&home);
        if *journals == Journals::Yes {
            assert_ne!(journalled["id"], before, "{args:?}: no job journalled");
            assert_eq!(
                journalled["host_pid"],
                daemon.pid(),
                "{args:?}: not run by the daemon: {journalled}"
            );
        }
        let mut local_args = args.to_vec();
        // `--local` is `jobs`'s own, before its subcommand; the others' at the end.
        match args[..2] {
            ["jobs", "cancel"] => local_args.insert(1, "--local"),
            _ => local_args.push("--local"),
        }
        let local = run(&home, &local_args);
        if *journals == Journals::Yes {
            let journalled = newest_job(&home);
            assert_ne!(
                journalled["host_pid"],
                daemon.pid(),
                "{args:?} --local ran in the daemon: {journalled}"
            );
        }
        let explain =
            || format!("{args:?}\nthrough the daemon: {through:?}\nin-process: {local:?}",);
        assert_eq!(through.status.code(), Some(*code), "{}", explain());
        assert_eq!(local.status.code(), Some(*code), "{}", explain());
        match compare {
            Compare::Same => assert_eq!(through.stdout, local.stdout, "{}", explain()),
            Compare::Json => assert_eq!(json_of(&through), json_of(&local), "{}", explain()),
            Compare::JsonKey(key) => {
                let (through, local) = (json_of(&through), json_of(&local));
                assert_eq!(through[key], local[key]);
                assert!(through["daemon"]["loaded"].is_array(), "{through}");
                assert!(local.get("daemon").is_none(), "{local}");
            }
            Compare::JsonKeys => {
                let keys = |value: Value| {
                    value
                        .as_object()
                        .unwrap()
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                };
                let (through, local) = (keys(json_of(&through)), keys(json_of(&local)));
                assert!(
                    through.contains(&String::from("memory_total_mb")),
                    "{through:?}"
                );
                assert_eq!(through, local);
            }
            Compare::Status => {}
        }
        if *code != 0 {
            let stderr = String::from_utf8_lossy(&through.stderr);
            assert!(stderr.starts_with("cjm-ctl: "), "{}", explain());
        }
    }
}

#[test]
fn a_plugin_stays_loaded_in_the_daemon_between_two_execs() {
    let home = home_with_plugins();
    let _daemon = Daemon::start(&home);
    assert_eq!(daemon_worker(&home, "faulty"), None);
    let first = run(&home, &["exec", "faulty", "--args", r#"["steps", 2, 1]"#]);
    assert!(first.status.success(), "{first:?}");
    let pid = daemon_worker(&home, "faulty").expect("loaded by the first exec");
    assert!(alive(pid as u32));
    let second = run(&home, &["exec", "faulty", "--args", r#"["steps", 2, 1]"#]);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(json_of(&first), json_of(&second));
    assert_eq!(
        daemon_worker(&home, "faulty"),
        Some(pid),
        "the worker changed"
    );
}

/// A child whose stdout and stderr lines are read as they come.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    seen: Vec<String>,
}

impl Watched {
    fn start(mut command: Command) -> Watched {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        for (is_stdout, reader) in [
            (
                true,
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            ),
            (false, Box::new(child.stderr.take().unwrap())),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    if send.send((is_stdout, line)).is_err() {
                        return;
                    }
                }
            });
        }
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (of stdout when `stdout`, else stderr) that `wanted` accepts.
    fn wait_for(&mut self, stdout: bool, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((is_stdout, line)) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if is_stdout == stdout && wanted(&line) {
                    return line;
                }
            }
        }
        panic!("no such line within 30 s: {:?}", self.seen);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit: {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_job_from_one_terminal_shows_in_anothers_follow() {
    let home = home_with_plugins();
    let daemon = Daemon::start(&home);
    let mut follow = ctl(&home);
    follow.args(["jobs", "--follow", "--json"]);
    let mut follow = Watched::start(follow);
    follow.wait_for(false, |line| {
        line.contains("following the jobs of the daemon")
    });
    let exec = run(&home, &["exec", "faulty", "--args", r#"["steps", 3, 5]"#]);
    assert!(exec.status.success(), "{exec:?}");
    let journalled = newest_job(&home);
    assert_eq!(journalled["host_pid"], daemon.pid());
    let id = journalled["id"].as_str().unwrap().to_owned();
    let line = follow.wait_for(true, |line| {
        serde_json::from_str::<Value>(line)
            .is_ok_and(|change| change["id"] == id.as_str() && change["state"] == "succeeded")
    });
    let change: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(change["plugin"], "faulty");
    // Its progress came through too, before it ended.
    assert!(
        follow
            .seen
            .iter()
            .any(|seen| seen.contains("\"progress\"") && seen.contains(&id)),
        "{:?}",
        follow.seen
    );
    // Ctrl-C ends a follow quietly.
    follow.signal(rustix::process::Signal::INT);
    assert_eq!(follow.exit_code(), Some(0));
}

#[test]
fn ctrl_c_cancels_the_daemons_job_and_exits_130() {
    let home = home_with_plugins();
    let daemon = Daemon::start(&home);
    let mut exec = ctl(&home);
    exec.args(["exec", "faulty", "--args", r#"["steps", 100000, 20]"#]);
    let mut exec = Watched::start(exec);
    exec.wait_for(false, |line| line.starts_with("progress:"));
    let worker = daemon_worker(&home, "faulty").expect("loaded in the daemon");
    exec.signal(rustix::process::Signal::INT);
    assert_eq!(exec.exit_code(), Some(130), "{:?}", exec.seen);
    // What the daemon said of the job's end: asked, and it stopped (no note of force).
    exec.wait_for(false, |line| line == "cjm-ctl: cancelled");
    assert!(
        exec.seen.iter().any(|line| line.contains("cancelling")),
        "{:?}",
        exec.seen
    );
    assert!(
        !exec.seen.iter().any(|line| line.contains("forced")),
        "{:?}",
        exec.seen
    );
    let journalled = newest_job(&home);
    assert_eq!(journalled["host_pid"], daemon.pid());
    assert_eq!(journalled["state"], "cancelled", "{journalled}");
    assert_eq!(journalled["cancellation"], "cooperative", "{journalled}");
    // Cooperative: the plugin stopped its call, its worker lives on in the daemon.
    assert_eq!(daemon_worker(&home, "faulty"), Some(worker));
}

#[test]
fn a_socket_nobody_serves_falls_back_to_in_process() {
    let home = home_with_plugins();
    // A killed daemon's leftover: the file, and nobody listening on it.
    drop(UnixListener::bind(home.path().join("daemon.sock")).unwrap());
    assert!(home.path().join("daemon.sock").exists());
    let output = ctl(&home)
        .args(["exec", "faulty", "--args", r#"["steps", 2, 1]"#])
        .env("RUST_LOG", "cjm_ctl=debug")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("running in-process"), "{stderr}");
    let journalled = newest_job(&home);
    assert_eq!(journalled["state"], "succeeded");
    assert_ne!(journalled["host_pid"], Value::Null);
    // Quietly by default: nothing said about the socket.
    let quiet = run(&home, &["exec", "faulty", "--args", r#"["steps", 2, 1]"#]);
    assert!(quiet.status.success(), "{quiet:?}");
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(!stderr.contains("daemon"), "{stderr}");
}

#[test]
fn stats_through_the_daemon_says_who_waits_for_what() {
    let home = home_with_plugins();
    let _daemon = Daemon::start(&home);
    let long = r#"["steps", 100000, 20]"#;
    let mut first = ctl(&home);
    first.args(["exec", "faulty", "--args", long]);
    let mut first = Watched::start(first);
    first.wait_for(false, |line| line.starts_with("progress:"));
    // One job of a plugin at a time (the default): the second waits for the first.
    let mut second = ctl(&home);
    second.args(["exec", "faulty", "--args", long]);
    let mut second = Watched::start(second);
    second.wait_for(false, |line| {
        line.starts_with("cjm-ctl: waiting: its plugin runs 1")
    });
    let stats = run(&home, &["stats"]);
    assert!(stats.status.success(), "{stats:?}");
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        text.contains("admission  1 queued, 0 admitted, 1 running"),
        "{text}"
    );
    assert!(
        text.lines().any(|line| line
            .contains("(faulty, queued): its plugin runs 1 job(s) already, its limit is 1")),
        "{text}"
    );
    for exec in [&mut second, &mut first] {
        exec.signal(rustix::process::Signal::INT);
        assert_eq!(exec.exit_code(), Some(130), "{:?}", exec.seen);
    }
}

#[test]
fn jobs_cancel_from_another_terminal_ends_the_exec() {
    let home = home_with_plugins();
    let daemon = Daemon::start(&home);
    let mut exec = ctl(&home);
    exec.args(["exec", "faulty", "--args", r#"["steps", 100000, 20]"#]);
    let mut exec = Watched::start(exec);
    exec.wait_for(false, |line| line.starts_with("progress:"));
    let running = newest_job(&home);
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["host_pid"], daemon.pid());
    let id = running["id"].as_str().unwrap();
    let cancel = run(&home, &["jobs", "cancel", id]);
    assert!(cancel.status.success(), "{cancel:?}");
    assert_eq!(
        String::from_utf8_lossy(&cancel.stdout),
        format!("{id}: cancelling\n")
    );
    // The exec waiting on it hears of its end from the daemon.
    assert_eq!(exec.exit_code(), Some(130), "{:?}", exec.seen);
    assert_eq!(newest_job(&home)["state"], "cancelled");
    // Again: it has ended.
    let again = run(&home, &["jobs", "cancel", id]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        format!("{id}: had ended already\n")
    );
    // Without a daemon there is nothing to ask.
    let local = run(&home, &["jobs", "--local", "cancel", id]);
    assert_eq!(local.status.code(), Some(1), "{local:?}");
    assert!(String::from_utf8_lossy(&local.stderr).contains("no daemon serves"));
}

#[test]
fn logs_follow_through_the_daemon_prints_what_is_appended() {
    let home = home_with_plugins();
    let _daemon = Daemon::start(&home);
    let log = home.path().join("logs").join("faulty.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "first\nsecond\n").unwrap();
    let mut follow = ctl(&home);
    follow.args(["logs", "faulty", "-n", "1", "--follow"]);
    let mut follow = Watched::start(follow);
    follow.wait_for(true, |line| line == "second");
    // Written in two pieces: a line is printed once it is whole.
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, b"third, half").unwrap();
    std::io::Write::write_all(&mut file, b" and whole\n").unwrap();
    follow.wait_for(true, |line| line == "third, half and whole");
    assert!(
        !follow.seen.iter().any(|line| line == "first"),
        "{:?}",
        follow.seen
    );
    follow.signal(rustix::process::Signal::INT);
    assert_eq!(follow.exit_code(), Some(0));
}

/// One request to the daemon on `home`'s socket: the status and the JSON body.
fn request(home: &TestHome, method: &str, path: &str) -> (u16, Value) {
    use http_body_util::{BodyExt, Empty};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::UnixStream::connect(home.path().join("daemon.sock"))
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "daemon")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    })
}

#[test]
fn the_system_and_log_routes_refuse_bad_input_with_json_errors() {
    let home = home_with_plugins();
    let _daemon = Daemon::start(&home);
    let (status, system) = request(&home, "GET", "/api/system");
    assert_eq!(status, 200, "{system}");
    assert!(
        system["memory"]["total_mb"].as_f64().unwrap() > 0.0,
        "{system}"
    );
    assert_eq!(
        system["stats"]["memory_total_mb"],
        system["memory"]["total_mb"]
    );
    assert_eq!(system["admission"]["waiting"], serde_json::json!([]));
    for (method, path, want, error) in [
        ("POST", "/api/system", 405, "method_not_allowed"),
        (
            "GET",
            "/api/plugins/faulty/logs?tail=many",
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/plugins/faulty/logs?follow=maybe",
            400,
            "invalid_query",
        ),
        ("GET", "/api/plugins/no%20such/logs", 400, "invalid_name"),
        ("GET", "/api/plugins/faulty/logs", 404, "no_log"),
        (
            "DELETE",
            "/api/plugins/faulty/logs",
            405,
            "method_not_allowed",
        ),
    ] {
        let (status, body) = request(&home, method, path);
        assert_eq!(status, want, "{method} {path}: {body}");
        assert_eq!(body["error"], error, "{method} {path}: {body}");
        assert_eq!(body["category"], "user_input", "{body}");
    }
    let log = home.path().join("logs").join("faulty.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "a\nb\nc\n").unwrap();
    let (status, body) = request(&home, "GET", "/api/plugins/faulty/logs?tail=2");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"lines": ["b", "c"]}));
    // The daemon serves on after all of it.
    assert_eq!(request(&home, "GET", "/api/health").0, 200);
}

/// `cjm-ctl exec .. --stream | head -2` through the daemon: the chunks come as the
/// worker yields them; once the reader has gone, cjm-ctl exits as a tool whose pipe
/// closed does (141), and closing its stream cancelled the daemon's job, whose
/// worker serves on.
#[test]
fn a_stream_through_the_daemon_comes_as_it_is_made_and_a_reader_gone_cancels_it() {
    let home = home_with_plugins();
    let _daemon = Daemon::start(&home);
    let endless = json!({"progress_file": home.path().join("produced"), "interval_ms": 1});
    let mut child = ctl(&home)
        .args([
            "exec",
            "faulty",
            "--stream",
            "--kwargs",
            &endless.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for expected in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let chunk: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(chunk["chunk"], expected, "{line}");
    }
    let worker = daemon_worker(&home, "faulty").expect("loaded in the daemon");
    drop(stdout);
    let status = exit_within(&mut child);
    assert_eq!(status.code(), Some(141), "{status:?}");
    // The daemon's job ends cancelled, and its worker is the same one, serving.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = newest_job(&home);
        if job["state"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not end: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon_worker(&home, "faulty"), Some(worker));
    let again = run(&home, &["exec", "faulty", "--args", r#"["steps", 1, 1]"#]);
    assert!(again.status.success(), "{again:?}");
}
