//! The daemon's TCP security, as a client meets it: the bearer token, the one-time
//! login link and its cookie, the Origin check on state changes, TLS beyond loopback
//! with a pinned self-signed certificate; the Unix socket needs none of it; no secret
//! in the daemon's log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;
use crate::daemon_tcp::{pinned_tls, TcpServed};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

/// The path and query of a login URL.
fn login_path(url: &str) -> String {
    let after_scheme = url.split_once("://").unwrap().1;
    format!("/{}", after_scheme.split_once('/').unwrap().1)
}

fn assert_refused(status: u16, body: &str, want: u16, error: &str) -> Value {
    let body = json_of(body);
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["category"], "user_input", "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_tcp_needs_the_token_or_the_login_cookie_and_checks_origins() {
    let home = TestHome::new();
    home.native_manifest("faulty", FAULTY, &[]);

    // The Unix socket: no token asked; the token is made at the first start.
    let socket = home.path().join("daemon.sock");
    let mut unix = Command::new(CTL);
    unix.arg("serve")
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped());
    let mut unix_child = unix.spawn().unwrap();
    wait_for_file(&socket);
    let (status, body) = unix_get(&socket, "/api/jobs");
    assert_eq!(status, 200, "{body}");
    let token_file = home.path().join("daemon.token");
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(home.path()), 0o700);
    let token = TcpServed::token(&home);
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(unix_child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(unix_child.wait().unwrap().code(), Some(0));

    let mut served = TcpServed::start(
        &home,
        &["--listen", "127.0.0.1:0", "--load", "faulty"],
        "debug",
    );
    assert!(!served.tls);
    assert_eq!(
        TcpServed::token(&home),
        token,
        "the token is kept across starts"
    );
    let bearer = format!("Bearer {token}");
    let bearer = ("authorization", bearer.as_str());
    assert!(served
        .login
        .starts_with(&format!("http://127.0.0.1:{}/login?token=", served.port())));

    // Health is open; everything else needs the token, unknown routes included.
    let (status, _, body) = served.request("GET", "/api/health", &[], None).await;
    assert_eq!(status, 200, "{body}");
    for (method, path) in [
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", "/nowhere"),
        ("GET", "/metrics"),
    ] {
        let (status, headers, body) = served.request(method, path, &[], None).await;
        assert_refused(status, &body, 401, "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let wrong = (
        "authorization",
        "Bearer 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let (status, _, body) = served.request("GET", "/api/jobs", &[wrong], None).await;
    assert_refused(status, &body, 401, "unauthorized");
    let (status, _, body) = served.request("GET", "/api/jobs", &[bearer], None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = served.request("GET", "/nowhere", &[bearer], None).await;
    assert_refused(status, &body, 404, "no_such_route");

    // State changes: another site's Origin is refused; ours, or none (bearer), pass.
    let job = json!({"plugin": "faulty", "args": ["pid"]}).to_string();
    let evil = ("origin", "http://evil.example:8080");
    let (status, _, body) = served
        .request("POST", "/api/jobs", &[bearer, evil], Some(job.clone()))
        .await;
    let refused = assert_refused(status, &body, 403, "cross_origin");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("http://evil.example:8080"),
        "{refused}"
    );
    let own = served.origin();
    let ours = ("origin", own.as_str());
    let (status, _, body) = served
        .request("POST", "/api/jobs", &[bearer, ours], Some(job.clone()))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = served
        .request("POST", "/api/jobs", &[bearer], Some(job.clone()))
        .await;
    assert_eq!(status, 202, "{body}");

    // The login link: a wrong token sets nothing; the right one, once, a cookie.
    let path = login_path(&served.login);
    let (status, headers, body) = served.request("GET", "/login?token=00", &[], None).await;
    assert_eq!(status, 403, "{body}");
    assert!(headers.get("set-cookie").is_none());
    let (status, _, body) = served.request("POST", &path, &[], None).await;
    assert_eq!(status, 405, "{body}");
    let (status, headers, body) = served.request("GET", &path, &[], None).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(headers["location"], "/");
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("cjm_session="), "{cookie}");
    assert_eq!(
        &attributes[1..],
        ["HttpOnly", "SameSite=Strict", "Path=/"],
        "{cookie}"
    );
    let session = attributes[0].to_owned();
    let (status, headers, body) = served.request("GET", &path, &[], None).await;
    assert_refused(status, &body, 403, "login_refused");
    assert!(
        headers.get("set-cookie").is_none(),
        "a used link set a cookie"
    );

    let with_cookie = ("cookie", session.as_str());
    let (status, _, body) = served
        .request("GET", "/api/jobs", &[with_cookie], None)
        .await;
    assert_eq!(status, 200, "{body}");
    let two_cookies = format!("theme=dark; {session}");
    let (status, _, body) = served
        .request(
            "GET",
            "/api/jobs",
            &[("cookie", two_cookies.as_str())],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A browser's state change carries Origin: without one, or another, refused.
    let (status, _, body) = served
        .request("POST", "/api/jobs", &[with_cookie], Some(job.clone()))
        .await;
    assert_refused(status, &body, 403, "cross_origin");
    let (status, _, body) = served
        .request("POST", "/api/jobs", &[with_cookie, evil], Some(job.clone()))
        .await;
    assert_refused(status, &body, 403, "cross_origin");
    let (status, _, body) = served
        .request("POST", "/api/jobs", &[with_cookie, ours], Some(job.clone()))
        .await;
    assert_eq!(status, 202, "{body}");
    let forged = ("cookie", "cjm_session=0000");
    let (status, _, body) = served.request("GET", "/api/jobs", &[forged], None).await;
    assert_refused(status, &body, 401, "unauthorized");

    // No secret in the log (debug level, every refusal logged).
    let one_time = served.login.rsplit('=').next().unwrap().to_owned();
    let session_value = session.split_once('=').unwrap().1.to_owned();
    assert_eq!(served.stop().code(), Some(0));
    let log = served.stderr().join("\n");
    assert!(log.contains("(auth)"), "the refusals are logged: {log}");
    for secret in [&token, &one_time, &session_value] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret in the log:\n{log}"
        );
    }
    let printed = served.stdout.lock().unwrap().clone();
    let showing: Vec<&String> = printed
        .iter()
        .filter(|line| line.contains(&one_time))
        .collect();
    assert_eq!(showing.len(), 1, "{printed:?}");
    assert!(showing[0].starts_with("login: "));
    drop(served);

    // A restart logs browsers out; the token stays.
    let served = TcpServed::start(&home, &["--listen", "127.0.0.1:0"], "info");
    let (status, _, body) = served
        .request("GET", "/api/jobs", &[with_cookie], None)
        .await;
    assert_refused(status, &body, 401, "unauthorized");
    let (status, _, body) = served.request("GET", "/api/jobs", &[bearer], None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_only_tls_serves_with_a_pinned_certificate_and_the_token() {
    let home = TestHome::new();
    let refused = |args: &[&str]| {
        let out = Command::new(CTL)
            .arg("serve")
            .args(args)
            .env("CJM_HOME", home.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = refused(&["--listen", "0.0.0.0:0"]);
    assert!(
        said.contains("TLS") && said.contains("--tls-cert"),
        "{said}"
    );
    let said = refused(&["--listen", "0.0.0.0:0", "--tls-cert", "/nonexistent.pem"]);
    assert!(said.contains("--tls-key"), "{said}");
    let said = refused(&[
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(said.contains("/nonexistent/cert.pem"), "{said}");

    let mut served = TcpServed::start(
        &home,
        &["--listen", "0.0.0.0:0", "--tls-self-signed"],
        "debug",
    );
    assert!(served.tls, "{}", served.ready);
    assert!(
        served
            .ready
            .starts_with("ready: serving on https://0.0.0.0:"),
        "{}",
        served.ready
    );
    let fingerprint = served.fingerprint.clone().expect("a tls-sha256 line");
    assert!(served
        .login
        .starts_with(&format!("https://127.0.0.1:{}/login?token=", served.port())));
    let folder = home.path().join("daemon-tls");
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("key.pem")), 0o600);
    let token = TcpServed::token(&home);
    let bearer = format!("Bearer {token}");
    let bearer = ("authorization", bearer.as_str());

    let (status, _, body) = served.request("GET", "/api/health", &[], None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = served.request("GET", "/api/jobs", &[], None).await;
    assert_refused(status, &body, 401, "unauthorized");
    let (status, _, body) = served.request("GET", "/api/jobs", &[bearer], None).await;
    assert_eq!(status, 200, "{body}");
    // Over TLS the cookie is Secure, and the daemon's origin is https.
    let (status, headers, body) = served
        .request("GET", &login_path(&served.login), &[], None)
        .await;
    assert_eq!(status, 303, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"),
        "{cookie}"
    );
    let plain_origin = format!("http://{}", served.host());
    let (status, _, body) = served
        .request(
            "POST",
            "/api/jobs",
            &[bearer, ("origin", plain_origin.as_str())],
            Some("{}".into()),
        )
        .await;
    assert_refused(status, &body, 403, "cross_origin");

    // Another certificate's pin fails; plain HTTP gets no HTTP answer.
    let stream = tokio::net::TcpStream::connect(served.connect_addr())
        .await
        .unwrap();
    let other = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert!(pinned_tls(stream, other).await.is_err());
    let plain = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(served.connect_addr()).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let _ = stream.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(!plain.contains("HTTP/1.1 200"), "{plain:?}");
    let (status, _, _) = served.request("GET", "/api/health", &[], None).await;
    assert_eq!(status, 200, "still serving");
    assert_eq!(served.stop().code(), Some(0));
    let log = served.stderr().join("\n");
    assert!(!log.contains(&token), "the token in the log:\n{log}");
    drop(served);

    // The same certificate at the next start (the pin holds), and as --tls-cert files.
    let cert = folder.join("cert.pem");
    let key = folder.join("key.pem");
    let served = TcpServed::start(
        &home,
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "info",
    );
    assert_eq!(served.fingerprint.as_deref(), Some(fingerprint.as_str()));
    let (status, _, body) = served.request("GET", "/api/jobs", &[bearer], None).await;
    assert_eq!(status, 200, "{body}");
}

/// A GET over the Unix socket, no token.
fn unix_get(socket: &Path, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: daemon\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    (status, answer)
}
