//! The bench's yardstick for the worker's serving model: the barest hyper server that
//! does a worker's job on one call. A current-thread tokio runtime accepts on the
//! socket the host hands over, serves each connection as a task, parses each JSON
//! body and answers it back. No plugin, no thread hand-over, no protocol checks:
//! what hyper itself costs on this machine, measured through the same manager calls
//! as the real workers (`exec_rps_c32_bare_hyper`, `exec_p50_bare_hyper_us`).
//!
//! `--manifest` prints its manifest; otherwise it serves on the socket in
//! `CJM_LISTEN_FD` until killed (the host stops it with its process group).

use std::convert::Infallible;
use std::os::fd::FromRawFd;

use anyhow::{Context, Result};
use bytes::Bytes;
use cjm_interface::wire::{self, HealthResponse};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

fn main() -> Result<()> {
    if std::env::args().any(|arg| arg == "--manifest") {
        let manifest = json!({
            "name": "bare-hyper",
            "version": env!("CARGO_PKG_VERSION"),
            "config_schema": {"type": "object"},
        });
        #[allow(clippy::print_stdout)]
        {
            println!("{manifest}");
        }
        return Ok(());
    }
    let fd: i32 = std::env::var(wire::LISTEN_FD_ENV)
        .context("no socket handed over")?
        .parse()
        .context("CJM_LISTEN_FD is not a descriptor")?;
    // SAFETY: the host handed this descriptor over for this process to own; nothing
    // else in this process uses it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async { Ok::<_, Infallible>(answer(request).await) });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == wire::PATH_HEALTH {
        let health = HealthResponse {
            status: String::from("running"),
            pid: std::process::id(),
            name: String::from("bare-hyper"),
            version: String::from(env!("CARGO_PKG_VERSION")),
            substrate_version: None,
            python_executable: None,
        };
        return json_response(serde_json::to_vec(&health).unwrap_or_default());
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    json_response(serde_json::to_vec(&value).unwrap_or_default())
}

fn json_response(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(wire::CONTENT_TYPE_JSON),
    );
    response
}
