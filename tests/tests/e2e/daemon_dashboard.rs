//! The dashboard in a real browser: headless Chromium, driven over the DevTools
//! protocol (one WebSocket, flat sessions), on a `cjm-ctl serve` over loopback TCP.
//! The page must show the loaded plugins, submit a job from its form, move the job's
//! progress bar as the events come, cancel it from its button, and do all that
//! without one JavaScript error or Content-Security-Policy violation.
//!
//! Chromium comes from the system (`chromium` from Debian; .ci/run installs it and
//! sets CJM_TEST_CHROMIUM, under which a missing browser fails the test). Elsewhere,
//! without one, the test says so and passes without running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::common::*;

const POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A child killed with its whole process group on drop (Chromium's renderers and
/// helpers included), if it still runs.
struct Killed {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Killed {
    /// Started in a process group of its own; stderr kept for failure messages, stdout
    /// sent line by line to the returned channel.
    fn start(mut command: Command) -> (Killed, mpsc::Receiver<String>) {
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let kept = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let (send, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        (Killed { child, output }, lines)
    }

    fn stderr(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser to drive: CJM_TEST_CHROMIUM (which must then exist), else the first
/// Chromium on PATH, else none.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CJM_TEST_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CJM_TEST_CHROMIUM={} is not a file: .ci/run installs chromium and names it there",
            path.display()
        );
        return Some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// One HTTP/1.1 GET without credentials: its status.
fn probe(origin: &str, path: &str) -> u16 {
    let address = origin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line in {text:?}"))
}

/// A DevTools protocol client on the browser's endpoint, with one page attached.
struct Cdp {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    /// Every event received so far, in order.
    events: Vec<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let address = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(&address).unwrap();
        // A browser that stops answering fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (socket, _) = tungstenite::client(url, stream).unwrap();
        let mut cdp = Cdp {
            socket,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
        };
        let target = cdp.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = cdp.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        cdp.session = attached["sessionId"].as_str().unwrap().to_owned();
        cdp
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
    }

    /// A command to the page; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let received = match self.socket.read() {
                Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
                Ok(_) => continue,
                Err(err) => panic!("{method}: the browser's socket failed: {err}"),
            };
            if received["id"] == json!(id) {
                assert!(
                    received.get("error").is_none(),
                    "{method}: {}",
                    received["error"]
                );
                return received["result"].clone();
            }
            if received.get("method").is_some() {
                self.events.push(received);
            }
        }
    }

    /// `expression`'s value in the page (promises awaited); a thrown error fails.
    fn evaluate(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            answer.get("exceptionDetails").is_none(),
            "{expression}: {}",
            answer["exceptionDetails"]
        );
        answer["result"]["value"].clone()
    }

    /// Evaluate `expression` until it gives something other than null or false;
    /// that value. Fails after `limit`, saying what was awaited and what the page
    /// showed last.
    fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.evaluate(expression);
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.evaluate("document.querySelector('main').innerText");
                panic!("no {what} within {limit:?}; the page shows:\n{}", page);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = data_encoding::BASE64
            .decode(shot["data"].as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The JavaScript exceptions, errors logged (CSP violations are) and
    /// `console.error` calls seen so far. One is expected, and left out: the page asks
    /// for `GET /api/system` and falls back on health and metrics where the daemon
    /// answers 404, which Chromium logs as a failed resource.
    fn problems(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|event| match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Log.entryAdded") => {
                    let entry = &event["params"]["entry"];
                    let system_absent = entry["source"] == "network"
                        && entry["url"]
                            .as_str()
                            .is_some_and(|url| url.ends_with("/api/system"))
                        && entry["text"]
                            .as_str()
                            .is_some_and(|text| text.contains("404"));
                    (entry["level"] == "error" || entry["source"] == "security") && !system_absent
                }
                Some("Runtime.consoleAPICalled") => event["params"]["type"] == "error",
                _ => false,
            })
            .map(|event| event["params"].to_string())
            .collect()
    }
}

/// Submit the form for faulty with `kwargs` (the textarea's text); what the form
/// says then.
fn submit(cdp: &mut Cdp, kwargs: &str) -> String {
    cdp.evaluate(&format!(
        "(() => {{ const form = document.querySelector('#submit'); \
         document.querySelector('#submitted').textContent = ''; \
         form.plugin.value = 'faulty'; form.kwargs.value = {}; \
         form.querySelector('button').click(); }})()",
        json!(kwargs)
    ));
    let said = cdp.wait_for(
        "the form's answer",
        "document.querySelector('#submitted').textContent || null",
        Duration::from_secs(60),
    );
    said.as_str().unwrap().to_owned()
}

/// N from the form's `job N submitted`.
fn job_number(said: &str) -> u64 {
    said.strip_prefix("job ")
        .and_then(|rest| rest.strip_suffix(" submitted"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the form said {said:?}, not `job N submitted`"))
}

/// The daemon's origin from its ready line: `ready: serving on URL (pid N)`.
fn origin_of(ready: &str) -> String {
    ready
        .strip_prefix("ready: serving on ")
        .and_then(|rest| rest.split(" (pid").next())
        .unwrap_or_else(|| panic!("not a ready line: {ready:?}"))
        .to_owned()
}

fn next_line(lines: &mpsc::Receiver<String>, what: &str, process: &Killed) -> String {
    lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no {what}; stderr: {:?}", process.stderr()))
}

/// Where the screenshots go: `target/dashboard/`.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_shows_plugins_runs_a_job_with_live_progress_and_cancels_it_in_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "skipped: no chromium on PATH (apt-get install chromium; CI installs it and \
             sets CJM_TEST_CHROMIUM)"
        );
        return;
    };
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    home.native_manifest("echo", ECHO, &[]);

    let mut serve = Command::new(CTL);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--load", "faulty"])
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG");
    let (daemon, daemon_lines) = Killed::start(serve);
    // Everything said before the ready line is kept: a login URL may come first.
    let mut said = Vec::new();
    let ready = loop {
        let line = next_line(&daemon_lines, "ready line", &daemon);
        if line.starts_with("ready: ") {
            break line;
        }
        said.push(line);
    };
    let origin = origin_of(&ready);
    let page = match probe(&origin, "/") {
        200 => format!("{origin}/"),
        // Over TCP with authentication: the one-time login URL the daemon prints
        // sets the session cookie and sends the browser on to the dashboard.
        401 | 403 => {
            let mut lines = said.into_iter();
            loop {
                let line = match lines.next() {
                    Some(line) => line,
                    None => next_line(&daemon_lines, "`login: <url>` line", &daemon),
                };
                if let Some(url) = line.strip_prefix("login: ") {
                    break url.trim().to_owned();
                }
            }
        }
        other => panic!("GET / without credentials: {other}"),
    };

    let profile = home.path().join("chromium");
    let mut command = Command::new(&browser);
    command.args([
        "--headless",
        "--remote-debugging-port=0",
        // As root (CI) Chromium refuses to start sandboxed; the page is our own.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--window-size=1200,860",
        "about:blank",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    let (chromium, _) = Killed::start(command);
    // Chromium writes its port and the browser endpoint's path here once it listens.
    let active = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let endpoint = loop {
        let text = std::fs::read_to_string(&active).unwrap_or_default();
        if let [port, path] = text.lines().collect::<Vec<_>>()[..] {
            break format!("ws://127.0.0.1:{port}{path}");
        }
        assert!(
            Instant::now() < deadline,
            "Chromium did not listen; stderr: {:?}",
            chromium.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut cdp = Cdp::connect(&endpoint);
    for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
        cdp.call(domain, json!({}));
    }
    // Violations as the page itself sees them, besides the console's report.
    cdp.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.violations = []; document.addEventListener(\
            'securitypolicyviolation', (e) => window.violations.push(\
            `${e.violatedDirective} ${e.blockedURI}`));"}),
    );
    cdp.call("Page.navigate", json!({"url": page}));
    let long = Duration::from_secs(60);
    let shots = screenshots();

    // The plugins: faulty loaded with a live worker, echo discovered and not loaded.
    let pid = cdp.wait_for(
        "faulty shown running with its pid",
        "(() => { const row = document.querySelector('#plugins tr[data-plugin=faulty]'); \
         return row && row.querySelector('.state').textContent === 'running' \
         && row.querySelector('.pid').textContent; })()",
        long,
    );
    let pid: u32 = pid.as_str().unwrap().parse().unwrap();
    assert!(
        alive(pid),
        "the page shows worker pid {pid}, which is not running"
    );
    assert_eq!(
        cdp.evaluate("document.querySelector('#plugins tr[data-plugin=echo] .state').textContent"),
        "unloaded"
    );
    assert_eq!(
        cdp.evaluate("location.pathname + ' ' + document.querySelector('#connection').textContent"),
        "/ live"
    );
    // The page and its files came with the policy (the browser enforces it below).
    for path in ["/", "/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
        let policy = cdp.evaluate(&format!(
            "fetch('{path}').then((r) => `${{r.status}} ${{r.headers.get('content-security-policy')}}`)"
        ));
        assert_eq!(policy, format!("200 {POLICY}"), "{path}");
    }
    cdp.screenshot(&shots.join("1-plugins.png"));

    // The form refuses kwargs that are not a JSON object, before any request.
    let refused = submit(&mut cdp, "[1, 2]");
    assert_eq!(refused, "kwargs: expected a JSON object");

    // A short job: it ends, and its row shows its result.
    let said = submit(
        &mut cdp,
        r#"{"action": "steps", "steps": 3, "step_ms": 10}"#,
    );
    let short = job_number(&said);
    let result = cdp.wait_for(
        "the short job's result",
        &format!(
            "(() => {{ const row = document.querySelector('#job-{short}'); \
             return row && row.dataset.state === 'succeeded' \
             && row.querySelector('button.cancel').hidden \
             && row.querySelector('.result').textContent || null; }})()"
        ),
        long,
    );
    assert_eq!(result, r#"{"steps":3}"#);
    assert_eq!(
        cdp.evaluate(&format!(
            "document.querySelector('#job-{short} progress').value"
        )),
        1.0
    );

    // A failing job whose error carries markup: shown as text, never made into an
    // element (and so no image load for the policy to refuse either).
    let said = submit(&mut cdp, r#"{"action": "<img src=/x id=injected>"}"#);
    let failed = job_number(&said);
    let error = cdp.wait_for(
        "the failed job's error",
        &format!(
            "(() => {{ const row = document.querySelector('#job-{failed}'); \
             return row && row.dataset.state === 'failed' \
             && row.querySelector('.result').textContent || null; }})()"
        ),
        long,
    );
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("unknown action <img src=/x id=injected>"),
        "{error}"
    );
    assert_eq!(
        cdp.evaluate("document.getElementById('injected')"),
        Value::Null
    );

    // A long job from the form: 2,000 steps of 20 ms, a progress report each.
    let said = submit(
        &mut cdp,
        r#"{"action": "steps", "steps": 2000, "step_ms": 20}"#,
    );
    let job = job_number(&said);
    let row = format!("document.querySelector('#job-{job}')");
    let first = cdp.wait_for(
        "a first progress report on the bar",
        &format!("(() => {{ const bar = {row} && {row}.querySelector('progress'); return bar && bar.value > 0 && bar.value; }})()"),
        long,
    );
    let first = first.as_f64().unwrap();
    // On, and far enough for the screenshot to show it (100 steps, 2 s).
    let moved = cdp.wait_for(
        "the progress bar moving on",
        &format!("(() => {{ const value = {row}.querySelector('progress').value; return value > Math.max({first}, 0.05) && value; }})()"),
        long,
    );
    assert!(moved.as_f64().unwrap() < 1.0, "{moved}");
    assert_eq!(cdp.evaluate(&format!("{row}.dataset.state")), "running");
    let message = cdp.evaluate(&format!("{row}.querySelector('.message').textContent"));
    assert!(
        message.as_str().unwrap().starts_with("step ")
            && message.as_str().unwrap().ends_with(" of 2000"),
        "{message}"
    );
    cdp.screenshot(&shots.join("2-running.png"));

    // Its cancel button: the job ends cancelled, the page and the API agree.
    cdp.evaluate(&format!("{row}.querySelector('button.cancel').click()"));
    let outcome = cdp.wait_for(
        "the job shown cancelled",
        &format!(
            "(() => {{ const row = {row}; return row.dataset.state === 'cancelled' \
             && row.querySelector('button.cancel').hidden \
             && row.querySelector('.result').textContent || null; }})()"
        ),
        long,
    );
    assert_eq!(outcome, "cancelled (cooperative)");
    let state = cdp.evaluate(&format!(
        "fetch('/api/jobs/{job}').then((r) => r.json()).then((job) => job.state)"
    ));
    assert_eq!(state, "cancelled");
    cdp.screenshot(&shots.join("3-cancelled.png"));

    // The load button: echo's worker starts and the row says so.
    cdp.evaluate("document.querySelector('#plugins tr[data-plugin=echo] button').click()");
    cdp.wait_for(
        "echo shown loaded",
        "document.querySelector('#plugins tr[data-plugin=echo] .state').textContent === 'running'",
        long,
    );

    // Nothing went wrong on the page.
    assert_eq!(cdp.problems(), Vec::<String>::new());
    assert_eq!(cdp.evaluate("window.violations"), json!([]));

    // And those checks do see a violation: an inline script is refused by the policy,
    // reported to the page and logged.
    cdp.evaluate(
        "(() => { const script = document.createElement('script'); \
         script.textContent = 'window.inline = true'; document.body.append(script); })()",
    );
    cdp.wait_for(
        "the violation seen by the page",
        "window.violations.length > 0",
        long,
    );
    assert_eq!(cdp.evaluate("window.inline === undefined"), true);
    let deadline = Instant::now() + long;
    while cdp.problems().is_empty() {
        assert!(Instant::now() < deadline, "the violation was not logged");
        std::thread::sleep(Duration::from_millis(50));
        // Reads the events that came meanwhile.
        cdp.evaluate("0");
    }
    drop(cdp);
    drop(chromium);
    drop(daemon);
}
