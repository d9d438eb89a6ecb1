//! `cjm-relay`: a remote worker's front for a worker that cannot serve one itself.
//!
//! The original's Python worker serves plain HTTP and pins no client, so it cannot be
//! reached safely from another machine. The relay starts it as its child, then
//! serves exactly what a native worker with `--listen` serves: TLS 1.3 with the
//! host's client certificate pinned, one handshake line on stdout, a lease; every
//! request is passed to the child as it is, answers (streams included) passed back as
//! they come. The child goes with the relay: on the lease's end, on SIGTERM (a Ray
//! job's stop), and by the parent-death signal if the relay is killed outright.
//!
//! The child is given its socket as the host gives a 0.0.46 worker its own: a Unix
//! socket in a fresh folder only this user can enter, handed over as descriptor 3
//! (`--fd 3`). No port to race for, and nobody else on the node can call the child
//! past the relay's TLS. Releases before 0.0.46 know only `--port`: with
//! `--child-port` (or `CJM_RELAY_CHILD_LISTEN=port`, which the host sets for them) the
//! child binds a free loopback port itself, which any local user can call; that is
//! theirs to accept. Either way the child is ready only once `/health` answers as the
//! original's worker does (200, `{"status": "running", "pid", ...}`) with a pid of the
//! child's own process group: anyone else answering on its port is refused.
//!
//! `cjm-relay --listen ADDR:PORT [--lease-secs N] [--child-port] -- PROGRAM [ARGS..]`;
//! the child gets `--fd 3 --ppid RELAY` (or `--port P --ppid RELAY`) appended, as a
//! host would append them.
//!
//! The TLS, the handshake line and the lease are a native remote worker's own
//! (`cjm-tls`); a plugin built on `cjm-worker` never links the relay.
#![warn(missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::remote::Fingerprint;
use cjm_interface::wire;
use cjm_interface::ErrorChain;
use cjm_tls::{Lease, PendingHandshakes, ServerTls, MAX_PENDING_HANDSHAKES};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long the child may take to answer `/health` (a Python worker imports a model
/// library or two first).
const CHILD_READY_LIMIT: Duration = Duration::from_secs(300);

/// Set to `port` for a child that takes only `--port` (the original before 0.0.46);
/// `fd`, the default, hands it a Unix socket with `--fd 3`.
pub const CHILD_LISTEN_ENV: &str = "CJM_RELAY_CHILD_LISTEN";

/// The descriptor number the child's socket gets.
const CHILD_LISTEN_FD: RawFd = 3;

/// The longest socket path the kernel takes (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

type Body = BoxBody<Bytes, hyper::Error>;

/// Where the child serves.
#[derive(Debug, Clone)]
enum Upstream {
    /// A Unix socket in the relay's private folder.
    Unix(PathBuf),
    /// A loopback port the child bound itself.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
            Upstream::Tcp(address) => write!(f, "http://{address}"),
        }
    }
}

struct Relay {
    upstream: Upstream,
    lease: Lease,
}

/// The relay's `main`: runs until its lease ends, it is told to stop, or its child
/// ends; the exit status says which went wrong.
pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("cjm-relay: {err}");
            ExitCode::FAILURE
        }
    }
}

struct RelayArgs {
    listen: SocketAddr,
    lease: Option<Duration>,
    /// The child binds a loopback port itself (`--port`), for releases without `--fd`.
    child_port: bool,
    program: String,
    args: Vec<String>,
}

fn parse(args: Vec<String>) -> Result<RelayArgs, String> {
    let usage = "usage: cjm-relay --listen ADDR:PORT [--lease-secs N] [--child-port] -- \
                 PROGRAM [ARGS..]";
    let split = args
        .iter()
        .position(|arg| arg == "--")
        .ok_or_else(|| format!("no -- before the program; {usage}"))?;
    let (own, child) = args.split_at(split);
    let mut listen = None;
    let mut lease = None;
    let mut child_port = None;
    let mut own = own.iter();
    while let Some(arg) = own.next() {
        let mut value = || {
            own.next()
                .ok_or_else(|| format!("{arg} needs a value; {usage}"))
        };
        match arg.as_str() {
            "--listen" => {
                let text = value()?;
                listen = Some(
                    text.parse()
                        .map_err(|_| format!("--listen {text:?} is not ADDR:PORT"))?,
                );
            }
            "--lease-secs" => {
                let text = value()?;
                let secs: u64 = text
                    .parse()
                    .map_err(|_| format!("--lease-secs {text:?} is not a number"))?;
                if secs == 0 {
                    return Err(String::from("--lease-secs must be at least 1"));
                }
                lease = Some(Duration::from_secs(secs));
            }
            "--child-port" => child_port = Some(true),
            other => return Err(format!("unknown option {other}; {usage}")),
        }
    }
    let child_port = match child_port {
        Some(port) => port,
        None => match std::env::var(CHILD_LISTEN_ENV).as_deref() {
            Err(_) | Ok("" | "fd") => false,
            Ok("port") => true,
            Ok(other) => {
                return Err(format!(
                    "{CHILD_LISTEN_ENV}={other:?}: \"fd\" (the default) or \"port\""
                ))
            }
        },
    };
    let mut child = child[1..].iter().cloned();
    Ok(RelayArgs {
        listen: listen.ok_or_else(|| format!("--listen is required; {usage}"))?,
        lease,
        child_port,
        program: child
            .next()
            .ok_or_else(|| format!("no program after --; {usage}"))?,
        args: child.collect(),
    })
}

fn run(args: Vec<String>) -> Result<(), String> {
    let args = parse(args)?;
    let client_cert: Fingerprint = std::env::var(wire::CLIENT_CERT_SHA256_ENV)
        .map_err(|_| {
            format!(
                "{} is not set: the host's certificate fingerprint",
                wire::CLIENT_CERT_SHA256_ENV
            )
        })?
        .parse()
        .map_err(|err| format!("{}: {err}", wire::CLIENT_CERT_SHA256_ENV))?;
    // Made before the runtime's threads: nothing else runs yet to inherit it.
    let child_socket = if args.child_port {
        None
    } else {
        Some(ChildSocket::new().map_err(|err| format!("cannot make the worker's socket: {err}"))?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?;
    runtime.block_on(relay(args, client_cert, child_socket))
}

/// The child's Unix socket, in a fresh folder (mode 0700) that goes with the relay.
struct ChildSocket {
    folder: PathBuf,
    path: PathBuf,
    listener: Option<OwnedFd>,
}

impl ChildSocket {
    fn new() -> std::io::Result<ChildSocket> {
        use std::os::unix::fs::DirBuilderExt;
        let mut parent = std::env::temp_dir();
        // `cjm-relay-` + 16 hex digits + `/worker.sock`.
        if parent.as_os_str().len() + 40 > MAX_SOCKET_PATH {
            parent = PathBuf::from("/tmp");
        }
        let mut attempts = 0;
        loop {
            let name = cjm_interface::random_hex(8)?;
            let folder = parent.join(format!("cjm-relay-{name}"));
            // A fresh folder, never one that was there: whoever made it could see in.
            match std::fs::DirBuilder::new().mode(0o700).create(&folder) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                    continue;
                }
                Err(err) => {
                    return Err(std::io::Error::new(
                        err.kind(),
                        format!("{}: {err}", folder.display()),
                    ))
                }
            }
            let path = folder.join("worker.sock");
            let mut socket = ChildSocket {
                folder,
                path,
                listener: None,
            };
            let listener = std::os::unix::net::UnixListener::bind(&socket.path).map_err(|err| {
                std::io::Error::new(err.kind(), format!("{}: {err}", socket.path.display()))
            })?;
            socket.listener = Some(listener.into());
            return Ok(socket);
        }
    }
}

impl Drop for ChildSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

async fn relay(
    args: RelayArgs,
    client_cert: Fingerprint,
    mut child_socket: Option<ChildSocket>,
) -> Result<(), String> {
    let relay_pid = std::process::id();
    let mut command = tokio::process::Command::new(&args.program);
    command.args(&args.args);
    let upstream = match &child_socket {
        Some(socket) => {
            command.arg("--fd").arg(CHILD_LISTEN_FD.to_string());
            Upstream::Unix(socket.path.clone())
        }
        None => {
            // The original before 0.0.46 binds its own port: free now, and a moment
            // later perhaps someone else's. `/health` tells the two apart.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|err| format!("cannot find a free loopback port: {err}"))?
                .port();
            command.arg("--port").arg(port.to_string());
            Upstream::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
        }
    };
    command
        .arg("--ppid")
        .arg(relay_pid.to_string())
        .process_group(0)
        .kill_on_drop(true);
    let inherited = child_socket
        .as_ref()
        .and_then(|socket| socket.listener.as_ref())
        .map(AsRawFd::as_raw_fd);
    // SAFETY: only async-signal-safe calls between fork and exec (fcntl, dup2, prctl),
    // and nothing allocated.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = inherited {
                // The child's copy without close-on-exec, on the number it is told;
                // the relay's own stays close-on-exec.
                let result = if fd == CHILD_LISTEN_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, CHILD_LISTEN_FD)
                };
                if result < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", args.program))?;
    // Only the child may hold the socket now: if it dies, a connection fails at once.
    if let Some(socket) = child_socket.as_mut() {
        socket.listener = None;
    }
    let child_pid = child.id().unwrap_or_default();
    let kill_group = move || {
        if let Some(group) = rustix::process::Pid::from_raw(child_pid as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    };

    let relay = Arc::new(Relay {
        upstream,
        lease: Lease::new(args.lease),
    });
    let hint = if args.child_port {
        ""
    } else {
        " (it was given --fd 3: a release of the original before 0.0.46 needs --child-port)"
    };
    let ready = tokio::select! {
        ready = wait_ready(&relay.upstream, child_pid, CHILD_READY_LIMIT) => ready,
        status = child.wait() => Err(format!(
            "{} ended before it was ready: {status:?}{hint}",
            args.program
        )),
    };
    if let Err(err) = ready {
        kill_group();
        return Err(err);
    }

    let tls = ServerTls::new(client_cert).map_err(|err| ErrorChain(&err).to_string())?;
    let acceptor = tls.acceptor();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let listening = listener.local_addr().map_err(|err| err.to_string())?.port();
    // The lease runs from the handshake: the child's start took its own time.
    relay.lease.touch();
    cjm_tls::announce(listening, tls.fingerprint())
        .map_err(|err| format!("cannot print the handshake: {err}"))?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| err.to_string())?;
    // As a native remote worker: handshakes bounded apart, a silent one dropped first.
    let handshakes = Arc::new(PendingHandshakes::new(MAX_PENDING_HANDSHAKES));
    let outcome = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let relay = Arc::clone(&relay);
                handshakes.accept(&acceptor, stream, peer.to_string(), move |stream| async move {
                    let service = hyper::service::service_fn(move |request| {
                        let relay = Arc::clone(&relay);
                        async move { Ok::<_, Infallible>(relay.forward(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            status = child.wait() => break Err(format!("{} ended: {status:?}", args.program)),
            () = relay.lease.expired() => {
                tracing::warn!(
                    "no word from the host for {:?}: the lease is over",
                    relay.lease.limit().unwrap_or_default()
                );
                break Ok(());
            }
            _ = terminate.recv() => break Ok(()),
        }
    };
    kill_group();
    drop(child_socket);
    outcome
}

/// Until the child answers `/health` as the original's worker does, with a pid of
/// its own process group (led by `child`), or `limit` passes. An answer from anyone
/// else is an error at once: some other process holds the child's port.
async fn wait_ready(upstream: &Upstream, child: u32, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let request = Request::get(wire::PATH_HEALTH)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        match send(upstream, request).await {
            Ok(response) => {
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes);
                match (status, body) {
                    (StatusCode::OK, Ok(body)) => {
                        let health = serde_json::from_slice::<wire::HealthResponse>(&body)
                            .ok()
                            .filter(|health| health.status == "running");
                        let Some(health) = health else {
                            return Err(format!(
                                "{upstream} answers /health, but not as a worker does \
                                 ({{\"status\": \"running\", \"pid\": ..}})"
                            ));
                        };
                        if !in_process_group(health.pid, child) {
                            return Err(format!(
                                "{upstream} answers /health as pid {}, which is not the \
                                 worker (pid {child}) nor of its process group: another \
                                 process holds its port",
                                health.pid
                            ));
                        }
                        return Ok(());
                    }
                    (status, _) => last = format!("/health answered {status}"),
                }
            }
            Err(err) => last = err,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the worker did not answer /health on {upstream} within {limit:?} ({last})"
    ))
}

/// Whether `pid` is the child `leader` or runs in its process group (a child started
/// through a wrapper answers with its own child's pid).
fn in_process_group(pid: u32, leader: u32) -> bool {
    use procfs_core::FromRead;
    if pid == leader {
        return true;
    }
    procfs_core::process::Stat::from_file(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| u32::try_from(stat.pgrp) == Ok(leader))
}

/// One request to the child on a connection of its own: a Unix socket or loopback,
/// nothing to save by pooling, and no idle connection left to go stale.
async fn send<B>(upstream: &Upstream, request: Request<B>) -> Result<Response<Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let unreachable = |err: std::io::Error| format!("cannot reach {upstream}: {err}");
    match upstream {
        Upstream::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(unreachable)?;
            send_over(stream, request).await
        }
        Upstream::Tcp(address) => {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(unreachable)?;
            let _ = stream.set_nodelay(true);
            send_over(stream, request).await
        }
    }
}

async fn send_over<S, B>(stream: S, request: Request<B>) -> Result<Response<Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    // Runs until the answer's body has been read.
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("connection to the worker ended: {err}");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())
}

impl Relay {
    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        self.lease.touch();
        if Lease::is_renewal(&request) {
            return json(
                StatusCode::OK,
                &serde_json::to_value(self.lease.renewed()).unwrap_or_default(),
            );
        }
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        parts.uri = match path.parse() {
            Ok(uri) => uri,
            Err(err) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"detail": err.to_string()}),
                )
            }
        };
        parts.headers.insert(
            hyper::header::HOST,
            hyper::header::HeaderValue::from_static("localhost"),
        );
        match send(&self.upstream, Request::from_parts(parts, body)).await {
            Ok(response) => response.map(|body| body.boxed()),
            Err(err) => json(
                StatusCode::BAD_GATEWAY,
                &serde_json::json!({"detail": format!("the worker behind the relay: {err}")}),
            ),
        }
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(wire::CONTENT_TYPE_JSON),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_say_what_is_wrong() {
        let parse = |words: &[&str]| parse(words.iter().map(|word| word.to_string()).collect());
        let ok = parse(&[
            "--listen",
            "0.0.0.0:0",
            "--lease-secs",
            "5",
            "--",
            "python",
            "-m",
            "w",
        ])
        .unwrap();
        assert_eq!(ok.program, "python");
        assert_eq!(ok.args, ["-m", "w"]);
        assert_eq!(ok.lease, Some(Duration::from_secs(5)));
        let legacy = parse(&["--listen", "0.0.0.0:0", "--child-port", "--", "python"]).unwrap();
        assert!(legacy.child_port);
        for (words, expected) in [
            (vec!["--listen", "x", "--", "p"], "not ADDR:PORT"),
            (vec!["--listen", "0.0.0.0:0", "p"], "no -- before"),
            (vec!["--listen", "0.0.0.0:0", "--"], "no program"),
            (vec!["--", "p"], "--listen is required"),
            (
                vec!["--listen", "0.0.0.0:0", "--lease-secs", "0", "--", "p"],
                "at least 1",
            ),
        ] {
            let err = parse(&words).err().unwrap();
            assert!(err.contains(expected), "{err}");
        }
    }
}
