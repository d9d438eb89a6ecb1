//! How the host reaches a Ray dashboard: plain TCP (loopback only, unless the
//! operator said `insecure_http` in so many words) or TLS, trusting the dashboard's
//! certificate through a CA file or by its pinned SHA-256.
//!
//! Everything the host learns from the dashboard is trusted: the worker's address
//! and certificate fingerprint come from the job's logs, and the token and the
//! uploaded binary go to it. Whoever can answer in the dashboard's place can therefore
//! substitute a worker of their own; that is why plain HTTP is refused off loopback.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cjm_interface::remote::Fingerprint;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use cjm_tls::{Mismatch, PinnedServer};

/// How the host trusts an `https://` Ray dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DashboardTrust {
    /// Certificates issued by one of the CAs in this PEM file; the certificate must
    /// name the address's host (a DNS name or an IP address) and be in date.
    CaFile(PathBuf),
    /// Exactly the certificate whose DER bytes have this SHA-256 (a self-signed one,
    /// say); names and dates are not checked, as with a pinned worker.
    Pinned(Fingerprint),
}

impl std::fmt::Display for DashboardTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DashboardTrust::CaFile(path) => write!(f, "the CAs in {}", path.display()),
            DashboardTrust::Pinned(fingerprint) => {
                write!(f, "the certificate with SHA-256 {fingerprint}")
            }
        }
    }
}

/// Why the dashboard's TLS could not be set up from a [`DashboardTrust`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no certificate rustls accepts as a trust anchor.
    #[error("the CA file {} holds no usable CA certificate{}", path.display(), reason.as_deref().map(|reason| format!(" ({reason})")).unwrap_or_default())]
    NoCa {
        /// The file.
        path: PathBuf,
        /// What rustls said of the certificates that were there.
        reason: Option<String>,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS for the dashboard")]
    Config(#[source] rustls::Error),
}

/// Whether `host` (as in a URL: a name, an IPv4 address, or a bracketed IPv6 one) is
/// this machine's loopback: `localhost`, 127.0.0.0/8, `::1` (or 127/8 mapped into
/// IPv6). Names other than `localhost` are not resolved: what a name resolves to is
/// exactly what someone on the path may change.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(is_loopback_ip)
}

fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The rustls configuration trusting `trust`: TLS 1.3 (all this workspace's rustls
/// speaks), no client certificate (the dashboard authenticates the host by its token).
pub(crate) fn client_config(trust: &DashboardTrust) -> Result<ClientConfig, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TrustError::Config)?;
    let config = match trust {
        DashboardTrust::CaFile(path) => builder
            .with_root_certificates(read_roots(path)?)
            .with_no_client_auth(),
        DashboardTrust::Pinned(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer::new(*expected, provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

fn read_roots(path: &Path) -> Result<RootCertStore, TrustError> {
    let read = |source| TrustError::Read {
        path: path.to_owned(),
        source,
    };
    let mut roots = RootCertStore::empty();
    let mut refused = None;
    for cert in CertificateDer::pem_file_iter(path).map_err(read)? {
        if let Err(err) = roots.add(cert.map_err(read)?) {
            refused = Some(err.to_string());
        }
    }
    if roots.is_empty() {
        return Err(TrustError::NoCa {
            path: path.to_owned(),
            reason: refused,
        });
    }
    Ok(roots)
}

/// Why a connection to the dashboard failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0:?} is not a usable address")]
    BadAddress(String),
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// Plain HTTP whose name resolved off loopback: refused even though the address
    /// passed the check when the client was made.
    #[error("{host} resolves to {resolved:?}, none of it loopback: plain http:// is refused")]
    NotLoopback { host: String, resolved: Vec<IpAddr> },
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed because the dashboard's certificate is not trusted.
    #[error("{reason}")]
    Untrusted { reason: String },
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake failed")]
    Handshake(#[source] io::Error),
}

/// Connects hyper-util's client to the dashboard: TCP, then TLS when the client was
/// made for `https://`.
#[derive(Clone)]
pub(crate) struct DashboardConnector {
    tls: Option<TlsConnector>,
    /// Plain TCP only to loopback addresses (after resolution too), unless the
    /// operator accepted plain HTTP elsewhere.
    loopback_only: bool,
}

impl DashboardConnector {
    pub(crate) fn plain(loopback_only: bool) -> Self {
        DashboardConnector {
            tls: None,
            loopback_only,
        }
    }

    pub(crate) fn tls(config: ClientConfig) -> Self {
        DashboardConnector {
            tls: Some(TlsConnector::from(Arc::new(config))),
            loopback_only: false,
        }
    }

    async fn connect(self, uri: Uri) -> Result<DashboardStream, ConnectError> {
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::BadAddress(uri.to_string()))?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(match self.tls {
            Some(_) => 443,
            None => 80,
        });
        let mut addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: bare.clone(),
                source,
            })?
            .collect();
        if self.tls.is_none() && self.loopback_only {
            let resolved: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
            addresses.retain(|address| is_loopback_ip(address.ip()));
            if addresses.is_empty() {
                return Err(ConnectError::NotLoopback {
                    host: bare,
                    resolved,
                });
            }
        }
        let tcp = TcpStream::connect(addresses.as_slice())
            .await
            .map_err(|source| ConnectError::Connect {
                address: format!("{host}:{port}"),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = self.tls else {
            return Ok(DashboardStream::Plain(tcp));
        };
        let name = ServerName::try_from(bare.clone())
            .map_err(|_| ConnectError::BadAddress(bare.clone()))?;
        match tls.connect(name, tcp).await {
            Ok(stream) => Ok(DashboardStream::Tls(Box::new(stream))),
            Err(err) => Err(tls_error(err)),
        }
    }
}

/// A certificate refusal (pinned mismatch, unknown CA, wrong name, expired) is
/// `Untrusted`, anything else a failed handshake.
fn tls_error(err: io::Error) -> ConnectError {
    let refusal = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(_) => {
                Some(Mismatch::of(tls).map_or_else(|| tls.to_string(), ToString::to_string))
            }
            _ => None,
        });
    match refusal {
        Some(reason) => ConnectError::Untrusted { reason },
        None => ConnectError::Handshake(err),
    }
}

impl tower_service::Service<Uri> for DashboardConnector {
    type Response = TokioIo<DashboardStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(uri).await.map(TokioIo::new) })
    }
}

/// A connection to the dashboard, plain or TLS.
#[derive(Debug)]
pub(crate) enum DashboardStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for DashboardStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for DashboardStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DashboardStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            DashboardStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DashboardStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DashboardStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            DashboardStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DashboardStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            DashboardStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DashboardStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            DashboardStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_localhost_127_8_and_v6_one() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "192.0.2.1",
            "10.0.0.1",
            "[::]",
            "0.0.0.0",
            "ray-head",
            "localhost.example",
            "127.0.0.1.nip.io",
            "[fe80::1]",
            "[::ffff:192.0.2.1]",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
