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
    /// Paths the test asked for expecting an error status, which Chromium logs as
    /// failed resources: not problems of the page.
    probed: Vec<String>,
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
            probed: vec!["/api/system".to_owned()],
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

    /// `GET path` from inside the page (with its session): the status. An error
    /// status is expected, not a problem of the page.
    fn probe_in_page(&mut self, path: &str) -> Value {
        self.probed.push(path.to_owned());
        self.evaluate(&format!("fetch({}).then((r) => r.status)", json!(path)))
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = data_encoding::BASE64
            .decode(shot["data"].as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The JavaScript exceptions, errors logged (CSP violations are) and
    /// `console.error` calls seen so far. Failed resources the test expects are left
    /// out: the page asks for `GET /api/system` and falls back on health and metrics
    /// where the daemon answers 404, and the test's own probes (see `probe_in_page`).
    fn problems(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|event| match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => true,
                Some("Log.entryAdded") => {
                    let entry = &event["params"]["entry"];
                    let expected = entry["source"] == "network"
                        && entry["url"].as_str().is_some_and(|url| {
                            self.probed.iter().any(|path| url.ends_with(path.as_str()))
                        });
                    (entry["level"] == "error" || entry["source"] == "security") && !expected
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
    submit_to(cdp, "faulty", kwargs)
}

fn submit_to(cdp: &mut Cdp, plugin: &str, kwargs: &str) -> String {
    cdp.evaluate(&format!(
        "(() => {{ const form = document.querySelector('#submit'); \
         document.querySelector('#submitted').textContent = ''; \
         form.plugin.value = {}; form.kwargs.value = {}; \
         form.querySelector('button').click(); }})()",
        json!(plugin),
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

/// A file of `size` bytes that takes no room (a hole): input that a count reads for
/// long, reporting progress per chunk, without filling the disk.
fn sparse_file(path: &Path, size: u64) -> PathBuf {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    path.to_path_buf()
}

/// Click job `id`'s number and wait for its detail, with a timeline ending in
/// `last_step`; the steps' names, in order.
fn open_detail(cdp: &mut Cdp, id: u64, last_step: &str) -> Value {
    cdp.evaluate(&format!(
        "document.querySelector('#job-{id} button.open').click()"
    ));
    cdp.wait_for(
        &format!("job {id}'s detail ending in {last_step}"),
        &format!(
            "(() => {{ const box = document.querySelector('#detail'); \
             if (box.hidden || box.dataset.job !== '{id}') return null; \
             const steps = [...box.querySelectorAll('.timeline li strong')].map((s) => s.textContent); \
             return steps[steps.length - 1] === '{last_step}' && steps; }})()"
        ),
        Duration::from_secs(60),
    )
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
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);

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
         && row.querySelector('.pid').textContent || null; })()",
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

    // wordcount, not loaded: its Load button opens a form made from its config
    // schema (the chunk size, with its default and bounds); loaded with 1 MiB chunks.
    let wordcount = "document.querySelector('#plugins tr[data-plugin=cjm-wordcount]')";
    assert_eq!(
        cdp.evaluate(&format!("{wordcount}.querySelector('.gpu').textContent")),
        "—"
    );
    cdp.evaluate(&format!("{wordcount}.querySelector('button.load').click()"));
    let field = cdp.wait_for(
        "the config form's chunk size field",
        "(() => { const form = document.querySelector('#load-config'); \
         const input = form.querySelector('input[name=chunk_bytes]'); \
         return !form.hidden && input && `${input.type} ${input.min} ${input.max} ${input.value}`; })()",
        long,
    );
    assert_eq!(field, "number 4096 67108864 1048576");
    cdp.evaluate(
        "(() => { const form = document.querySelector('#load-config'); \
         form.querySelector('input[name=chunk_bytes]').value = '1048576'; \
         form.querySelector('button[type=submit]').click(); })()",
    );
    let where_ = cdp.wait_for(
        "wordcount shown running, local",
        &format!(
            "(() => {{ const row = {wordcount}; return row && row.querySelector('.state').textContent === 'running' \
             && document.querySelector('#load-config').hidden \
             && `${{row.querySelector('.where').textContent}} ${{row.querySelector('.restarts').textContent}}`; }})()"
        ),
        long,
    );
    assert_eq!(where_, "local 0");

    // A count over a large input (4 GiB, a hole: tens of seconds for a debug build,
    // seconds for a release one): its bar moves with each chunk.
    let size: u64 = 4 << 30;
    let large = sparse_file(&home.path().join("large.txt"), size);
    let kwargs = json!({"file_path": large}).to_string();
    let said = submit_to(&mut cdp, "cjm-wordcount", &kwargs);
    let job = job_number(&said);
    let row = format!("document.querySelector('#job-{job}')");
    let first = cdp.wait_for(
        "a first progress report on the bar",
        &format!("(() => {{ const bar = {row} && {row}.querySelector('progress'); return bar && bar.value > 0 && bar.value; }})()"),
        long,
    );
    let first = first.as_f64().unwrap();
    let moved = cdp.wait_for(
        "the progress bar moving on",
        &format!("(() => {{ const value = {row}.querySelector('progress').value; return value > Math.max({first}, 0.01) && value; }})()"),
        long,
    );
    assert!(moved.as_f64().unwrap() < 1.0, "{moved}");
    assert_eq!(cdp.evaluate(&format!("{row}.dataset.state")), "running");
    let message = cdp.evaluate(&format!("{row}.querySelector('.message').textContent"));
    assert!(
        message.as_str().unwrap().starts_with("counted ")
            && message
                .as_str()
                .unwrap()
                .ends_with(&format!(" of {size} bytes")),
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
             && row.querySelector('.result').textContent \
             && `${{row.querySelector('.category').textContent}} / ${{row.querySelector('.result').textContent}}` || null; }})()"
        ),
        long,
    );
    assert_eq!(outcome, "cooperative / cancelled (cooperative)");
    let state = cdp.evaluate(&format!(
        "fetch('/api/jobs/{job}').then((r) => r.json()).then((job) => job.state)"
    ));
    assert_eq!(state, "cancelled");
    cdp.screenshot(&shots.join("3-cancelled.png"));

    // Its detail: the arguments it was given and its timeline, from submission
    // through the progress this page saw to its end.
    let steps = open_detail(&mut cdp, job, "cancelled");
    let steps: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step.as_str().unwrap())
        .collect();
    assert_eq!(
        steps[..3],
        ["submitted", "admitted", "started"],
        "{steps:?}"
    );
    assert!(
        steps[3..steps.len() - 1]
            .iter()
            .all(|step| *step == "progress")
            && steps.len() >= 5,
        "{steps:?}"
    );
    let arguments =
        cdp.evaluate("JSON.parse(document.querySelector('#detail .arguments').textContent)");
    assert_eq!(
        arguments,
        json!({"plugin": "cjm-wordcount", "args": [], "kwargs": {"file_path": large}})
    );
    cdp.evaluate("document.querySelector('#detail').scrollIntoView()");
    cdp.screenshot(&shots.join("4-detail.png"));

    // The plugin still serves: a short count succeeds on the same worker.
    let small = home.path().join("small.txt");
    std::fs::write(&small, "a b c\n").unwrap();
    let said = submit_to(
        &mut cdp,
        "cjm-wordcount",
        &json!({"file_path": small}).to_string(),
    );
    let after = job_number(&said);
    let result = cdp.wait_for(
        "the short count's result",
        &format!(
            "(() => {{ const row = document.querySelector('#job-{after}'); \
             return row && row.dataset.state === 'succeeded' && row.querySelector('.result').textContent || null; }})()"
        ),
        long,
    );
    let result: Value = serde_json::from_str(result.as_str().unwrap()).unwrap();
    assert_eq!(result["words"], 3, "{result}");

    // A job's worker log in its detail: the lines faulty's `chatty` writes, read
    // from GET /api/jobs/{id}/diagnostics.
    let said = submit(
        &mut cdp,
        r#"{"action": "chatty", "tag": "dash", "lines": 3, "step_ms": 1}"#,
    );
    let chatty = job_number(&said);
    cdp.wait_for(
        "the chatty job done",
        &format!("(() => {{ const row = document.querySelector('#job-{chatty}'); return row && row.dataset.state === 'succeeded'; }})()"),
        long,
    );
    open_detail(&mut cdp, chatty, "succeeded");
    let log = cdp.wait_for(
        "the chatty job's log lines",
        "(() => { const log = document.querySelector('#detail .log').textContent; \
         return log.includes('dash record 2') && log; })()",
        long,
    );
    for line in 0..3 {
        assert!(
            log.as_str()
                .unwrap()
                .contains(&format!("INFO dash record {line}")),
            "{log}"
        );
    }
    // The route itself: read on after the last record there is nothing new; bad
    // input is a JSON error.
    let route = cdp.evaluate(&format!(
        "(async () => {{ const all = await (await fetch('/api/jobs/{chatty}/diagnostics')).json(); \
         const next = await (await fetch(`/api/jobs/{chatty}/diagnostics?after_seq=${{all.last_seq}}`)).json(); \
         return [all.records.length > 0, next.records.length, next.last_seq === all.last_seq]; }})()"
    ));
    assert_eq!(route, json!([true, 0, true]));
    let bad = format!("/api/jobs/{chatty}/diagnostics?after_seq=x");
    assert_eq!(cdp.probe_in_page(&bad), 400);
    let error = cdp.evaluate(&format!(
        "fetch('{bad}').then((r) => r.json()).then((e) => e.error)"
    ));
    assert_eq!(error, "invalid_query");
    assert_eq!(cdp.probe_in_page("/api/jobs/999999/diagnostics"), 404);

    // A job that ignores its cancel (faulty sleeps through it): the first press asks,
    // the button turns into a force stop, the second press kills its worker.
    let said = submit(&mut cdp, r#"{"action": "sleep", "ms": 60000}"#);
    let sleeper = job_number(&said);
    let row = format!("document.querySelector('#job-{sleeper}')");
    cdp.wait_for(
        "the sleeping job running",
        &format!("{row} && {row}.dataset.state === 'running'"),
        long,
    );
    cdp.evaluate(&format!("{row}.querySelector('button.cancel').click()"));
    cdp.wait_for(
        "the force stop button",
        &format!("{row}.querySelector('button.cancel').textContent === 'Force stop'"),
        long,
    );
    assert_eq!(cdp.evaluate(&format!("{row}.dataset.state")), "running");
    cdp.evaluate(&format!("{row}.querySelector('button.cancel').click()"));
    let category = cdp.wait_for(
        "the sleeping job forced to stop",
        &format!("{row}.dataset.state === 'cancelled' && {row}.querySelector('.category').textContent || null"),
        long,
    );
    assert_eq!(category, "forced");
    // Its worker was killed; the plugin serves on (a worker started anew).
    let said = submit(&mut cdp, r#"{"action": "steps", "steps": 2, "step_ms": 1}"#);
    let again = job_number(&said);
    cdp.wait_for(
        "a faulty job after the forced stop",
        &format!("(() => {{ const row = document.querySelector('#job-{again}'); return row && row.dataset.state === 'succeeded'; }})()"),
        long,
    );

    // The machine's chart: drawn from GET /api/system samples where the daemon
    // serves it (the cli part's route), else it says there is nothing to draw.
    let system = cdp.probe_in_page("/api/system");
    if system == 200 {
        cdp.wait_for(
            "two RAM samples on the chart",
            "document.querySelector('#chart polyline.ram').getAttribute('points').split(' ').length >= 2",
            long,
        );
    } else {
        assert_eq!(system, 404);
        cdp.wait_for(
            "the chart saying it has no source",
            "document.querySelector('#chart-note').textContent.includes('no /api/system')",
            long,
        );
        // Its drawing, fed two answers of /api/system's shape by hand (the page has
        // none of its own here): 30 s apart, at 50 % CPU, 75 % RAM and 25 % GPU
        // memory in use, then 100 %, 0 % and none (no GPU). y is 100 less the percent.
        let points = cdp.evaluate(
            "(() => { const now = Date.now() / 1000; \
             sampleSystem({cpu: {percent: 50}, memory: {available_mb: 250, total_mb: 1000}, \
                           gpus: [{used_memory_mb: 1, total_memory_mb: 8}, {used_memory_mb: 3, total_memory_mb: 8}]}, now - 30); \
             sampleSystem({cpu: {percent: 100}, memory: {available_mb: 1000, total_mb: 1000}, gpus: []}, now); \
             return ['cpu', 'ram', 'gpu'].map((s) => document.querySelector(`#chart polyline.${s}`).getAttribute('points')); })()",
        );
        assert_eq!(
            points,
            json!([
                "270.0,50.0 300.0,0.0",
                "270.0,25.0 300.0,100.0",
                "270.0,75.0"
            ])
        );
        // Gone again: the screenshots show only what the daemon said.
        cdp.evaluate("chartSamples.length = 0; drawChart(Date.now() / 1000); chartUnavailable()");
        assert_eq!(
            cdp.evaluate("document.querySelector('#chart polyline.cpu').getAttribute('points')"),
            ""
        );
    }

    // Reload: every loaded plugin has the button; it is pressed only where the
    // daemon has the route (the api part's), which answers a GET with 405.
    assert_eq!(
        cdp.evaluate(&format!(
            "{wordcount}.querySelector('button.reload') !== null"
        )),
        true
    );
    let reload = cdp.probe_in_page("/api/plugins/cjm-wordcount/reload");
    if reload == 405 {
        // A new worker: another pid on the row.
        let before = cdp.evaluate(&format!("{wordcount}.querySelector('.pid').textContent"));
        cdp.evaluate(&format!(
            "delete document.querySelector('#plugins').dataset.last; \
             {wordcount}.querySelector('button.reload').click()"
        ));
        cdp.wait_for(
            "the reload answered",
            "document.querySelector('#plugins').dataset.last || null",
            long,
        );
        assert_eq!(
            cdp.evaluate("document.querySelector('#plugins').dataset.last"),
            "reload cjm-wordcount: ok"
        );
        cdp.wait_for(
            "wordcount running with a new worker",
            &format!(
                "(() => {{ const row = {wordcount}; return row.querySelector('.state').textContent === 'running' \
                 && row.querySelector('.pid').textContent !== {before}; }})()"
            ),
            long,
        );
    } else {
        assert_eq!(reload, 404);
        eprintln!(
            "no POST /api/plugins/{{name}}/reload on this daemon: the reload button is not pressed"
        );
    }
    // The main view again, from the top.
    cdp.evaluate("document.querySelector('#detail .dismiss').click(); window.scrollTo(0, 0)");
    assert_eq!(
        cdp.evaluate("document.querySelector('#detail').hidden"),
        true
    );
    cdp.screenshot(&shots.join("5-main.png"));

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

/// One HTTP/1.1 request over the daemon's Unix socket (no token there): the status
/// and the JSON body.
fn over_socket(socket: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no header end in {text:?}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{method} {path}: a chunked answer: {head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, value)
}

#[test]
fn a_jobs_log_records_are_read_page_by_page_and_bad_cursors_are_refused() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);
    let mut serve = Command::new(CTL);
    serve
        .args(["serve", "--load", "faulty"])
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    let (daemon, lines) = Killed::start(serve);
    loop {
        if next_line(&lines, "ready line", &daemon).starts_with("ready: ") {
            break;
        }
    }
    let socket = home.path().join("daemon.sock");
    let (status, submitted) = over_socket(
        &socket,
        "POST",
        "/api/jobs",
        Some(
            json!({"plugin": "faulty", "kwargs": {"action": "chatty", "tag": "page", "lines": 3, "step_ms": 1}}),
        ),
    );
    assert_eq!(status, 202, "{submitted}");
    let id = submitted["id"].as_u64().unwrap();
    let (status, waited) = over_socket(
        &socket,
        "GET",
        &format!("/api/jobs/{id}/wait?timeout_ms=60000"),
        None,
    );
    assert_eq!(
        (status, &waited["job"]["state"]),
        (200, &json!("succeeded"))
    );
    // What it was asked, kept by the daemon for its detail.
    let (status, job) = over_socket(&socket, "GET", &format!("/api/jobs/{id}"), None);
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        job["arguments"],
        json!({"args": [], "kwargs": {"action": "chatty", "tag": "page", "lines": 3, "step_ms": 1}, "task": null})
    );

    // All of them: its three records and three printed lines, oldest first.
    let (status, all) = over_socket(&socket, "GET", &format!("/api/jobs/{id}/diagnostics"), None);
    assert_eq!(status, 200, "{all}");
    let messages: Vec<String> = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            format!(
                "{} {}",
                record["level"].as_str().unwrap(),
                record["message"].as_str().unwrap()
            )
        })
        .collect();
    for line in 0..3 {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("INFO page record {line}"))),
            "{messages:?}"
        );
        assert!(
            messages.contains(&format!("OUTPUT page printed {line}")),
            "{messages:?}"
        );
    }
    assert_eq!(
        (all["job"].as_u64(), &all["dropped"]),
        (Some(id), &json!(0))
    );
    let seqs: Vec<i64> = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    assert_eq!(all["last_seq"].as_i64(), seqs.last().copied());

    // Page by page, two at a time, with the cursor: the same records, none twice.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = over_socket(
            &socket,
            "GET",
            &format!("/api/jobs/{id}/diagnostics?limit=2{cursor}"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        let records = page["records"].as_array().unwrap();
        assert!(records.len() <= 2, "{page}");
        if records.is_empty() {
            // At the end the cursor stays where it was.
            assert_eq!(page["last_seq"].as_i64(), seqs.last().copied());
            break;
        }
        paged.extend(records.iter().map(|r| r["seq"].as_i64().unwrap()));
        cursor = format!("&after_seq={}", page["last_seq"]);
    }
    assert_eq!(paged, seqs);

    // Bad input: JSON errors naming what was wrong; the daemon serves on.
    for (path, want, error) in [
        (
            format!("/api/jobs/{id}/diagnostics?after_seq=x"),
            400,
            "invalid_query",
        ),
        (
            format!("/api/jobs/{id}/diagnostics?limit=0"),
            400,
            "invalid_query",
        ),
        (
            format!("/api/jobs/{id}/diagnostics?limit=99999"),
            400,
            "invalid_query",
        ),
        (
            "/api/jobs/seven/diagnostics".to_owned(),
            400,
            "invalid_job_id",
        ),
        (
            "/api/jobs/999999/diagnostics".to_owned(),
            404,
            "unknown_job",
        ),
    ] {
        let (status, body) = over_socket(&socket, "GET", &path, None);
        assert_eq!(
            (status, body["error"].as_str()),
            (want, Some(error)),
            "{path}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}: {body}"
        );
    }
    let (status, body) = over_socket(
        &socket,
        "POST",
        &format!("/api/jobs/{id}/diagnostics"),
        None,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    let (status, _) = over_socket(&socket, "GET", "/api/health", None);
    assert_eq!(status, 200);
    drop(daemon);
}
