//! `cjm-ctl exec` for long-running calls, as a user runs it: progress on stderr,
//! Ctrl-C to cancel (twice to force), an exit status per outcome.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// `cjm-ctl exec ARGS..` under `home`, stderr read line by line as it comes.
struct Exec {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Exec {
    fn start(home: &TestHome, args: &[&str]) -> Exec {
        let mut child = Command::new(CTL)
            .arg("exec")
            .args(args)
            .env("CJM_HOME", home.path())
            .current_dir(home.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Exec {
            child,
            stderr: receive,
            seen: Vec::new(),
        }
    }

    /// Wait for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(text);
                self.seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("no {text:?} on stderr within 20 s: {:?}", self.seen);
    }

    fn interrupt(&self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            rustix::process::Signal::INT,
        )
        .unwrap();
    }

    /// Its exit status, stdout and the whole of stderr.
    fn finish(mut self) -> (i32, String, Vec<String>) {
        let output = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            self.seen,
        )
    }
}

fn faulty_home() -> TestHome {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    home
}

/// The worker's pid, from the plugin's log header (`host pid`, then the worker's own
/// lines) is not at hand: every e2e-faulty process under this home is its worker.
fn workers_of(home: &TestHome) -> Vec<u32> {
    let marker = home.path().to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("e2e-faulty")
            && String::from_utf8_lossy(&environ).contains(&marker)
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn progress_goes_to_stderr_as_plain_lines_and_the_result_to_stdout() {
    let home = faulty_home();
    let (code, stdout, stderr) =
        Exec::start(&home, &["faulty", "--args", r#"["steps", 5, 10]"#]).finish();
    assert_eq!(code, 0, "{stderr:?}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["steps"], 5);
    let percents: Vec<u32> = stderr
        .iter()
        .filter_map(|line| line.strip_prefix("progress: "))
        .map(|rest| rest.split('%').next().unwrap().parse().unwrap())
        .collect();
    assert!(!percents.is_empty(), "{stderr:?}");
    assert!(
        percents.windows(2).all(|pair| pair[0] < pair[1]),
        "{percents:?}"
    );
    assert!(
        stderr.iter().all(|line| !line.contains('\u{1b}')),
        "{stderr:?}"
    );
}

/// On a terminal (a pseudo-terminal here, as a user's shell gives), progress is a bar
/// redrawn in place, not a line per report, and it is cleared at the end; the result
/// still goes to stdout alone.
#[test]
fn on_a_terminal_progress_is_a_bar_drawn_in_place_and_cleared() {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::io::Read;

    let home = faulty_home();
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    // A narrow terminal: the bar must fit it, never wrap.
    const COLUMNS: usize = 44;
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 24,
            ws_col: COLUMNS as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ptsname(&master, Vec::new()).unwrap().to_str().unwrap())
        .unwrap();
    let child = Command::new(CTL)
        .args(["exec", "faulty", "--args", r#"["steps", 40, 25]"#])
        .args(["--kwargs", r#"{"then_done_ms": 300}"#])
        .env("CJM_HOME", home.path())
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .current_dir(home.path())
        .stdout(Stdio::piped())
        .stderr(terminal)
        .spawn()
        .unwrap();
    // The terminal's screen: read until the last writer has gone (the read fails).
    let mut screen = std::fs::File::from(master);
    let reader = std::thread::spawn(move || {
        let mut drawn = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(read @ 1..) = screen.read(&mut buf) {
            drawn.extend_from_slice(&buf[..read]);
        }
        String::from_utf8_lossy(&drawn).into_owned()
    });
    let output = child.wait_with_output().unwrap();
    let drawn = reader.join().unwrap();
    assert!(output.status.success(), "{drawn}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["steps"], 40);
    assert!(
        !drawn.contains("progress: "),
        "plain lines on a terminal: {drawn:?}"
    );
    assert!(drawn.contains("% step "), "no bar drawn: {drawn:?}");
    assert!(drawn.contains("[="), "no bar drawn: {drawn:?}");
    // Drawn once it has something to say: no empty first frame.
    let first_frame = drawn.split('\r').next().unwrap();
    assert!(first_frame.contains("step 0"), "{drawn:?}");
    // Every frame fits the terminal (the message cut, not wrapped), and none says
    // 100% while the call has not answered, though the plugin reported 1.0.
    for frame in drawn.split(['\r', '\n']) {
        let visible = strip_escapes(frame);
        assert!(
            visible.chars().count() <= COLUMNS,
            "{visible:?} is wider than {COLUMNS}: {drawn:?}"
        );
        assert!(!visible.contains("100%"), "{visible:?}");
    }
    // Redrawn in place: the cursor goes back to the start of the line (escape
    // sequences erase it) rather than a new line per report.
    assert!(drawn.contains('\u{1b}'), "{drawn:?}");
    assert!(drawn.matches('\n').count() <= 2, "{drawn:?}");
    // Cleared at the end: the line erased, nothing left of the bar.
    assert!(
        drawn.trim_end_matches('\n').ends_with("\r\u{1b}[2K"),
        "{drawn:?}"
    );
}

#[test]
fn ctrl_c_cancels_a_running_call_and_leaves_no_worker() {
    let home = faulty_home();
    let mut exec = Exec::start(&home, &["faulty", "--args", r#"["steps", 100000, 20]"#]);
    exec.wait_for("progress: ");
    assert_eq!(workers_of(&home).len(), 1);
    exec.interrupt();
    let (code, stdout, stderr) = exec.finish();
    assert_eq!(code, 130, "{stderr:?}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.iter().any(|line| line == "cjm-ctl: cancelled"),
        "{stderr:?}"
    );
    assert!(workers_of(&home).is_empty());
}

#[test]
fn a_second_ctrl_c_forces_a_call_that_ignores_the_first() {
    let home = faulty_home();
    let started = home.path().join("started");
    let kwargs = serde_json::json!({"started_file": started}).to_string();
    let mut exec = Exec::start(
        &home,
        &[
            "faulty",
            "--args",
            r#"["sleep", 60000]"#,
            "--kwargs",
            &kwargs,
        ],
    );
    // Interrupted once the call is in the plugin (deaf to the cancel from then on).
    wait_for_file(&started);
    exec.interrupt();
    exec.wait_for("Ctrl-C again to force");
    let asked = Instant::now();
    exec.interrupt();
    let (code, _, stderr) = exec.finish();
    assert_eq!(code, 130, "{stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|line| line.starts_with("cjm-ctl: cancelled (forced")),
        "{stderr:?}"
    );
    // Not the 5 s the first cancel would have waited before forcing by itself.
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    assert!(workers_of(&home).is_empty());
}

#[test]
fn each_error_category_has_its_exit_status() {
    let home = faulty_home();
    for (args, code) in [
        (r#"["nonsense"]"#, 65),
        (r#"["resource"]"#, 69),
        (r#"["panic"]"#, 70),
        (r#"["transient"]"#, 75),
    ] {
        let (got, _, stderr) = Exec::start(&home, &["faulty", "--args", args]).finish();
        assert_eq!(got, code, "{args}: {stderr:?}");
        assert!(
            stderr.iter().any(|line| line.starts_with("cjm-ctl: ")),
            "{stderr:?}"
        );
    }
    // No such plugin, or a configuration it refuses: the user's input too.
    let (got, _, stderr) = Exec::start(&home, &["no-such-plugin"]).finish();
    assert_eq!(got, 65, "{stderr:?}");
    let (got, _, stderr) =
        Exec::start(&home, &["faulty", "--config", r#"{"refuse": true}"#]).finish();
    assert_eq!(got, 65, "{stderr:?}");
    // A manifest whose program is gone is a broken installation: 1, as the README's
    // table says, naming the program.
    home.write_manifest(
        "gone",
        serde_json::json!({"name": "gone", "version": "0.1.0", "command": "/nonexistent/bin/gone"}),
    );
    let (got, _, stderr) = Exec::start(&home, &["gone"]).finish();
    assert_eq!(got, 1, "{stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("/nonexistent/bin/gone")),
        "{stderr:?}"
    );
}

/// `text` without its ANSI escape sequences (`ESC [ params letter`).
fn strip_escapes(text: &str) -> String {
    let mut visible = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        visible.push(c);
    }
    visible
}

/// `cjm-ctl exec .. --stream | head -2`: once its reader has gone, cjm-ctl cancels the
/// call and exits as a Unix tool whose pipe closed does (141, 128 + SIGPIPE), saying
/// nothing, and leaves no worker behind.
#[test]
fn a_stream_whose_reader_goes_away_is_cancelled_and_ends_quietly() {
    let home = faulty_home();
    let endless = serde_json::json!({
        "progress_file": home.path().join("produced"),
        "interval_ms": 1,
    });
    let mut child = Command::new(CTL)
        .args([
            "exec",
            "faulty",
            "--stream",
            "--kwargs",
            &endless.to_string(),
        ])
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
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
    drop(stdout);
    let status = exit_within(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(141), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    // Told to stop before its worker was stopped, and nothing left running.
    let log = std::fs::read_to_string(home.path().join("logs/faulty.log")).unwrap();
    assert!(log.contains("asked 1 call(s) to stop"), "{log}");
    assert!(workers_of(&home).is_empty());
}

/// Whatever the command, a stdout already closed when it prints is a quiet exit.
#[test]
fn every_command_exits_quietly_on_a_closed_stdout() {
    let home = faulty_home();
    for args in [&["--version"][..], &["list"], &["validate"], &["jobs"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(CTL)
            .args(args)
            .env("CJM_HOME", home.path())
            .current_dir(home.path())
            .env_remove("RUST_LOG")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
