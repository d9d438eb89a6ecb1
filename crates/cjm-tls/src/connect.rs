//! The host's side of a connection to a remote worker: a connector for hyper-util's
//! pooled client that presents the host's [`ClientIdentity`] and accepts exactly one
//! server certificate, the one the worker's handshake named.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cjm_interface::remote::Fingerprint;
use http_body_util::Full;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{ClientIdentity, Mismatch, PinnedServer, TlsError};

/// How long connecting and the TLS handshake may take together, unless
/// [`PinnedConnector::connect_timeout`] says otherwise. A worker on another machine
/// that does not answer in this time is reported unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects hyper-util's client to one remote worker: TCP to the URI's `host:port`
/// (`https://` or `http://` alike: the scheme is not what decides), then TLS 1.3
/// presenting `identity` and accepting only the server certificate `server`.
#[derive(Clone)]
pub struct PinnedConnector {
    config: Arc<ClientConfig>,
    expected: Fingerprint,
    timeout: Duration,
}

impl std::fmt::Debug for PinnedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedConnector")
            .field("expected", &self.expected)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PinnedConnector {
    /// Present `identity`; accept only the certificate whose fingerprint is `server`.
    pub fn new(identity: &ClientIdentity, server: Fingerprint) -> Result<Self, TlsError> {
        let provider = crate::provider();
        let key = PrivateKeyDer::Pkcs8(identity.key.as_ref().clone_key());
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer::new(server, provider)))
            .with_client_auth_cert(vec![identity.cert.clone()], key)
            .map_err(TlsError::Config)?;
        Ok(PinnedConnector {
            config: Arc::new(config),
            expected: server,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// Give up connecting (TCP and TLS together) after `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A pooled keep-alive client over this connector.
    pub fn client(self) -> Client<PinnedConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new()).build(self)
    }

    /// Connect to `host:port` and complete the TLS handshake.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TlsStream, TlsConnectError> {
        let worker = format_address(host, port);
        let server_name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| TlsConnectError::BadAddress {
                address: worker.clone(),
            })?
            .to_owned();
        let connector = TlsConnector::from(Arc::clone(&self.config));
        let attempt = async {
            let tcp = TcpStream::connect((server_name_host(&server_name), port))
                .await
                .map_err(|source| TlsConnectError::Connect {
                    worker: worker.clone(),
                    source,
                })?;
            // Small requests go out at once instead of waiting for more to send.
            let _ = tcp.set_nodelay(true);
            connector
                .connect(server_name.clone(), tcp)
                .await
                .map_err(|source| handshake_error(&worker, self.expected, source))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result.map(TlsStream),
            Err(_) => Err(TlsConnectError::Timeout {
                worker,
                waited: self.timeout,
            }),
        }
    }
}

fn format_address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn server_name_host(name: &ServerName<'_>) -> String {
    match name {
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => other.to_str().into_owned(),
    }
}

/// Why a connection to a remote worker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConnectError {
    /// The URI names no host or port to connect to.
    #[error("{address:?} is not a worker address (host:port)")]
    BadAddress {
        /// The address as given.
        address: String,
    },
    /// TCP could not connect (nothing listening, no route, refused).
    #[error("cannot connect to worker at {worker}")]
    Connect {
        /// `host:port`.
        worker: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The worker is not the one whose certificate was pinned.
    #[error(
        "worker at {worker} presented certificate with fingerprint {presented}, expected {expected}"
    )]
    WrongCertificate {
        /// `host:port`.
        worker: String,
        /// The certificate it showed.
        presented: Fingerprint,
        /// The certificate pinned.
        expected: Fingerprint,
    },
    /// The TLS handshake failed otherwise (not TLS at all, no common parameters).
    #[error("TLS handshake with worker at {worker} failed")]
    Handshake {
        /// `host:port`.
        worker: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Connecting and the handshake took longer than the connector's timeout.
    #[error("worker at {worker} did not answer within {waited:?}")]
    Timeout {
        /// `host:port`.
        worker: String,
        /// The timeout.
        waited: Duration,
    },
}

fn handshake_error(worker: &str, expected: Fingerprint, source: io::Error) -> TlsConnectError {
    let mismatch = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(Mismatch::of);
    match mismatch {
        Some(mismatch) => TlsConnectError::WrongCertificate {
            worker: worker.to_owned(),
            presented: mismatch.presented,
            expected,
        },
        None => TlsConnectError::Handshake {
            worker: worker.to_owned(),
            source,
        },
    }
}

/// An established TLS connection to a remote worker.
#[derive(Debug)]
pub struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl Connection for TlsStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl tower_service::Service<Uri> for PinnedConnector {
    type Response = TokioIo<TlsStream>;
    type Error = TlsConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(TlsConnectError::BadAddress {
                    address: uri.to_string(),
                });
            };
            connector.connect(host, port).await.map(TokioIo::new)
        })
    }
}
