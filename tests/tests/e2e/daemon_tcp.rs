//! `cjm-ctl serve --listen` as a child process, and a small HTTP/1.1 client for it
//! over TCP (plain on loopback, or TLS with the printed fingerprint pinned): what
//! `daemon_auth` and `daemon_soak` share. The child is killed on drop, so that a
//! failing test leaves no daemon behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::common::*;

/// A `cjm-ctl serve --listen ...` child and what it printed at start.
pub struct TcpServed {
    pub child: Child,
    pub addr: SocketAddr,
    pub tls: bool,
    pub ready: String,
    /// `login: URL`'s URL.
    pub login: String,
    /// `tls-sha256:`'s fingerprint, over TLS.
    pub fingerprint: Option<String>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl TcpServed {
    /// Start it with `args` (which include `--listen`) and `RUST_LOG` set to `log`;
    /// returns once it printed its login line.
    pub fn start(home: &TestHome, args: &[&str], log: &str) -> TcpServed {
        let mut command = Command::new(CTL);
        command
            .arg("serve")
            .args(args)
            .env("CJM_HOME", home.path())
            .env("RUST_LOG", log)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    stderr.lock().unwrap().push(line);
                }
            });
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (send, receive) = mpsc::channel();
        {
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    stdout.lock().unwrap().push(line.clone());
                    let _ = send.send(line);
                }
            });
        }
        let mut served = TcpServed {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            ready: String::new(),
            login: String::new(),
            fingerprint: None,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = receive
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "no login line; stdout {:?}, stderr {:?}",
                        served.stdout.lock().unwrap(),
                        served.stderr()
                    )
                });
            if let Some(rest) = line.strip_prefix("ready: serving on ") {
                served.ready = line.clone();
                let (scheme, rest) = rest.split_once("://").unwrap();
                served.tls = scheme == "https";
                served.addr = rest.split(' ').next().unwrap().parse().unwrap();
            } else if let Some(rest) = line.strip_prefix("tls-sha256: ") {
                served.fingerprint = Some(rest.to_owned());
            } else if let Some(rest) = line.strip_prefix("login: ") {
                served.login = rest.to_owned();
                return served;
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where a client connects: loopback on the listener's port.
    pub fn connect_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request on a connection of its own: status, headers, body text.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (u16, hyper::HeaderMap, String) {
        let response = self.send(method, path, headers, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// The response, its body unread (an event stream).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let stream = TcpStream::connect(self.connect_addr()).await.unwrap();
        match (&self.fingerprint, self.tls) {
            (Some(fingerprint), true) => {
                let stream = pinned_tls(stream, fingerprint).await.unwrap();
                exchange(stream, self.host(), method, path, headers, body).await
            }
            _ => exchange(stream, self.host(), method, path, headers, body).await,
        }
    }

    /// The Host header a browser would send.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The daemon's own origin.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The bearer token, as the daemon keeps it.
    pub fn token(home: &TestHome) -> String {
        std::fs::read_to_string(home.path().join("daemon.token"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for TcpServed {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TLS client that accepts only the certificate with this SHA-256 fingerprint.
pub async fn pinned_tls(
    stream: TcpStream,
    fingerprint: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = cjm_tls::PinnedServer::new(fingerprint.parse().unwrap(), Arc::clone(&provider));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, stream).await
}

async fn exchange<S>(
    stream: S,
    host: String,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> hyper::Response<hyper::body::Incoming>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    sender.send_request(request).await.unwrap()
}

impl TcpServed {
    /// SIGTERM, then its exit status (within 60 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit: {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
