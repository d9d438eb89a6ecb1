//! `cjm-relay`: a remote worker's front for a worker that cannot serve one itself.
//!
//! The original's Python worker serves plain HTTP on loopback and pins no client, so
//! it cannot be reached safely from another machine. The relay starts it as its
//! child on a loopback port, then serves exactly what a native worker with `--listen`
//! serves: TLS 1.3 with the host's client certificate pinned, one handshake line on
//! stdout, a lease; every request is passed to the child as it is, answers (streams
//! included) passed back as they come. The child goes with the relay: on the lease's
//! end, on SIGTERM (a Ray job's stop), and by the parent-death signal if the relay is
//! killed outright.
//!
//! `cjm-relay --listen ADDR:PORT [--lease-secs N] -- PROGRAM [ARGS..]`; the child gets
//! `--port P --ppid RELAY` appended, as a host would append them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::remote::{Fingerprint, Handshake, LeaseResponse};
use cjm_interface::wire;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsAcceptor;

use crate::tls::server_tls;

/// How long the child may take to answer `/health` (a Python worker imports a model
/// library or two first).
const CHILD_READY_LIMIT: Duration = Duration::from_secs(300);
/// How long a client has to complete its TLS handshake.
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, hyper::Error>;

struct Relay {
    upstream: String,
    client: Client<HttpConnector, Incoming>,
    started: Instant,
    /// Milliseconds since `started` of the last request.
    last_request: AtomicU64,
    lease: Option<Duration>,
}

/// The relay's `main`: runs until its lease ends, it is told to stop, or its child
/// ends; the exit status says which went wrong.
pub fn relay_main() -> ExitCode {
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
    program: String,
    args: Vec<String>,
}

fn parse(args: Vec<String>) -> Result<RelayArgs, String> {
    let usage = "usage: cjm-relay --listen ADDR:PORT [--lease-secs N] -- PROGRAM [ARGS..]";
    let split = args
        .iter()
        .position(|arg| arg == "--")
        .ok_or_else(|| format!("no -- before the program; {usage}"))?;
    let (own, child) = args.split_at(split);
    let mut listen = None;
    let mut lease = None;
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
            other => return Err(format!("unknown option {other}; {usage}")),
        }
    }
    let mut child = child[1..].iter().cloned();
    Ok(RelayArgs {
        listen: listen.ok_or_else(|| format!("--listen is required; {usage}"))?,
        lease,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the runtime: {err}"))?;
    runtime.block_on(relay(args, client_cert))
}

async fn relay(args: RelayArgs, client_cert: Fingerprint) -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|err| format!("cannot find a free loopback port: {err}"))?
        .port();
    let relay_pid = std::process::id();
    let mut command = tokio::process::Command::new(&args.program);
    command
        .args(&args.args)
        .arg("--port")
        .arg(port.to_string())
        .arg("--ppid")
        .arg(relay_pid.to_string())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", args.program))?;
    let child_pid = child.id().unwrap_or_default();
    let kill_group = move || {
        if let Some(group) = rustix::process::Pid::from_raw(child_pid as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    };

    let relay = Arc::new(Relay {
        upstream: format!("127.0.0.1:{port}"),
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        started: Instant::now(),
        last_request: AtomicU64::new(0),
        lease: args.lease,
    });
    let ready = tokio::select! {
        ready = wait_ready(&relay) => ready,
        status = child.wait() => Err(format!("{} ended before it was ready: {status:?}", args.program)),
    };
    if let Err(err) = ready {
        kill_group();
        return Err(err);
    }

    let tls = server_tls(client_cert).map_err(|err| err.to_string())?;
    let acceptor = TlsAcceptor::from(tls.config);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let listening = listener.local_addr().map_err(|err| err.to_string())?.port();
    relay.touch();
    announce(&Handshake::new(listening, tls.fingerprint, relay_pid))
        .map_err(|err| format!("cannot print the handshake: {err}"))?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| err.to_string())?;
    let outcome = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let relay = Arc::clone(&relay);
                tokio::spawn(async move {
                    let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(stream)).await else {
                        return;
                    };
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
            () = relay.lease_expired() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
        }
    };
    kill_group();
    outcome
}

/// The handshake line on stdout, where the host (or Ray's job log) reads it.
fn announce(handshake: &Handshake) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", handshake.to_line())?;
    stdout.flush()
}

async fn wait_ready(relay: &Relay) -> Result<(), String> {
    let deadline = Instant::now() + CHILD_READY_LIMIT;
    let uri: Uri = format!("http://{}{}", relay.upstream, wire::PATH_HEALTH)
        .parse()
        .map_err(|err| format!("{err}"))?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    while Instant::now() < deadline {
        if let Ok(response) = client.get(uri.clone()).await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the worker did not answer /health within {CHILD_READY_LIMIT:?}"
    ))
}

impl Relay {
    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_request.store(now, Ordering::Relaxed);
    }

    async fn lease_expired(&self) {
        let Some(lease) = self.lease else {
            return std::future::pending().await;
        };
        loop {
            let last = Duration::from_millis(self.last_request.load(Ordering::Relaxed));
            let idle = self.started.elapsed().saturating_sub(last);
            if idle >= lease {
                tracing::warn!("no word from the host for {idle:?}: the lease is over");
                return;
            }
            tokio::time::sleep(lease - idle).await;
        }
    }

    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        self.touch();
        if request.method() == Method::POST && request.uri().path() == wire::PATH_LEASE {
            let lease = LeaseResponse {
                status: String::from("renewed"),
                lease_secs: self.lease.map(|lease| lease.as_secs()),
            };
            return json(
                StatusCode::OK,
                &serde_json::to_value(lease).unwrap_or_default(),
            );
        }
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        parts.uri = match format!("http://{}{path}", self.upstream).parse() {
            Ok(uri) => uri,
            Err(err) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"detail": err.to_string()}),
                )
            }
        };
        parts.headers.remove(hyper::header::HOST);
        match self.client.request(Request::from_parts(parts, body)).await {
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
