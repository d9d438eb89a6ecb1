//! The host's side of a remote worker's TLS: a client identity (a self-signed
//! certificate of the host's own), a connector for hyper-util's pooled client that
//! accepts exactly one server certificate (the one the worker's handshake named), and
//! the reading of that handshake from a worker's stdout.
//!
//! Trust is pinned both ways (see `cjm_interface::remote`): the worker is given
//! [`ClientIdentity::fingerprint`] in `CJM_CLIENT_CERT_SHA256` and accepts only this
//! certificate; the connector accepts only the certificate whose fingerprint the
//! worker printed. No names, dates or authorities are checked, because none of them is
//! what is trusted; signatures are, so each end proves it holds its key.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cjm_interface::remote::{Fingerprint, Handshake, HandshakeError};
use http_body_util::Full;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long connecting and the TLS handshake may take together, unless
/// [`PinnedConnector::connect_timeout`] says otherwise. A worker on another machine
/// that does not answer in this time is reported unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a worker may print on stdout before its handshake line (a plugin's own
/// prints, say). Past it the worker is not taken for one of ours.
const MAX_OUTPUT_BEFORE_HANDSHAKE: usize = 64 * 1024;

/// SHA-256 of a certificate's DER bytes.
pub fn certificate_fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint::from_digest(bytes)
}

/// Why the host's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The client certificate could not be made.
    #[error("cannot make the host's client certificate")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS")]
    Config(#[source] rustls::Error),
    /// A kept identity could not be read or written.
    #[error("cannot keep the host's TLS identity in {}", path.display())]
    Store {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The file, in the folder given to [`ClientIdentity::kept_in`], holding the host's
/// certificate and key together.
const IDENTITY_FILE: &str = "host-client.identity";
/// Its first bytes.
const IDENTITY_HEADER: &[u8] = b"cjm host identity 1\n";
/// The certificate, as earlier releases kept it.
const LEGACY_CERT_FILE: &str = "host-client.der";
/// Its key, as earlier releases kept it.
const LEGACY_KEY_FILE: &str = "host-client.key";

/// A `TlsError::Store` about `path`.
fn store(path: &std::path::Path) -> impl Fn(io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Store {
        path: path.clone(),
        source,
    }
}

/// The host's client certificate and its key: made fresh for each host process
/// ([`shared`](Self::shared)), or kept in a folder ([`kept_in`](Self::kept_in)) for
/// workers that outlive a host (attached ones are given its fingerprint once).
#[derive(Clone)]
pub struct ClientIdentity {
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
    fingerprint: Fingerprint,
}

// By hand, so that the key never reaches a log.
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// A new self-signed certificate (ECDSA P-256) and key.
    pub fn generate() -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![String::from("cjm-host")])
            .map_err(TlsError::Certificate)?;
        let cert = certified.cert.der().clone();
        Ok(ClientIdentity {
            fingerprint: certificate_fingerprint(&cert),
            cert,
            key: Arc::new(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            )),
        })
    }

    /// The identity of this host process, made on first use: every remote worker
    /// this process starts or attaches to is given the same fingerprint.
    pub fn shared() -> Result<ClientIdentity, TlsError> {
        static SHARED: OnceLock<ClientIdentity> = OnceLock::new();
        if let Some(identity) = SHARED.get() {
            return Ok(identity.clone());
        }
        let made = ClientIdentity::generate()?;
        // Two first callers at once: one identity wins, both use it.
        Ok(SHARED.get_or_init(|| made).clone())
    }

    /// The identity kept in `folder` (`host-client.identity`: certificate and key in
    /// one file, mode 0600, in a folder made 0700), made and kept there on first use.
    /// A host that attaches to workers needs the same identity at every start: those
    /// workers were given its fingerprint by their operators.
    ///
    /// Made by several processes at once, one identity wins and all of them use it:
    /// each writes its own whole to a private temporary file, and the first to link
    /// that file into place is kept (a link never replaces a file), the others read
    /// it. So a key never sits beside another's certificate. Blocking file work: from
    /// async code, call [`kept_in_async`](Self::kept_in_async).
    ///
    /// A folder from earlier releases (`host-client.der` and `host-client.key`) is
    /// read as it is, once its key is checked to match its certificate.
    pub fn kept_in(folder: &std::path::Path) -> Result<ClientIdentity, TlsError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = folder.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => return ClientIdentity::decode(&path, &bytes),
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(store(&path)(err)),
            Err(_) => {}
        }
        if let Some(identity) = ClientIdentity::legacy_kept_in(folder)? {
            return Ok(identity);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(store(folder))?;
        let made = ClientIdentity::generate()?;
        static TEMPORARIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // A name no other thread or process uses, so that nobody writes into it but us.
        let temporary = folder.join(format!(
            ".{IDENTITY_FILE}.{}.{}",
            std::process::id(),
            TEMPORARIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = (|| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(&made.encode())?;
            file.sync_all()
        })();
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(store(&temporary)(err));
        }
        let linked = std::fs::hard_link(&temporary, &path);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(made),
            // Another process (or thread) was first: its identity is the one kept.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path).map_err(store(&path))?;
                ClientIdentity::decode(&path, &bytes)
            }
            Err(err) => Err(store(&path)(err)),
        }
    }

    /// [`kept_in`](Self::kept_in) on tokio's blocking pool, off the runtime's threads.
    pub async fn kept_in_async(folder: std::path::PathBuf) -> Result<ClientIdentity, TlsError> {
        let path = folder.clone();
        tokio::task::spawn_blocking(move || ClientIdentity::kept_in(&folder))
            .await
            .map_err(|err| TlsError::Store {
                path,
                source: io::Error::other(format!("the task reading it ended: {err}")),
            })?
    }

    /// The pair earlier releases kept, if both files are there.
    fn legacy_kept_in(folder: &std::path::Path) -> Result<Option<ClientIdentity>, TlsError> {
        let cert_path = folder.join(LEGACY_CERT_FILE);
        let key_path = folder.join(LEGACY_KEY_FILE);
        match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            (Ok(cert), Ok(key)) => ClientIdentity::checked(&key_path, cert, key).map(Some),
            (Err(err), _) if err.kind() != io::ErrorKind::NotFound => Err(store(&cert_path)(err)),
            (_, Err(err)) if err.kind() != io::ErrorKind::NotFound => Err(store(&key_path)(err)),
            _ => Ok(None),
        }
    }

    /// The identity file's bytes: a header line, the certificate's length (4 bytes,
    /// big-endian), the certificate, the key (PKCS#8), all DER.
    fn encode(&self) -> Vec<u8> {
        let cert = self.cert.as_ref();
        let key = self.key.secret_pkcs8_der();
        let mut bytes = Vec::with_capacity(IDENTITY_HEADER.len() + 4 + cert.len() + key.len());
        bytes.extend_from_slice(IDENTITY_HEADER);
        // A certificate of ours is a few hundred bytes.
        bytes.extend_from_slice(&u32::try_from(cert.len()).unwrap_or(u32::MAX).to_be_bytes());
        bytes.extend_from_slice(cert);
        bytes.extend_from_slice(key);
        bytes
    }

    fn decode(path: &std::path::Path, bytes: &[u8]) -> Result<ClientIdentity, TlsError> {
        let invalid = || {
            store(path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a host identity written by cjm (remove it to make a new one; \
                 workers must then be given the new fingerprint)",
            ))
        };
        let rest = bytes.strip_prefix(IDENTITY_HEADER).ok_or_else(invalid)?;
        let (length, rest) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
        let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| invalid())?;
        if length == 0 || length >= rest.len() {
            return Err(invalid());
        }
        let (cert, key) = rest.split_at(length);
        ClientIdentity::checked(path, cert.to_vec(), key.to_vec())
    }

    /// An identity from a certificate and a key read from `path`, once the key is
    /// known to be the certificate's.
    fn checked(
        path: &std::path::Path,
        cert: Vec<u8>,
        key: Vec<u8>,
    ) -> Result<ClientIdentity, TlsError> {
        let cert = CertificateDer::from(cert);
        let key = PrivatePkcs8KeyDer::from(key);
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(key.clone_key()),
            &provider,
        )
        .map_err(|err| {
            store(path)(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the kept key is not the kept certificate's ({err}); remove the \
                     folder to make a new identity (workers must then be given the new \
                     fingerprint)"
                ),
            ))
        })?;
        Ok(ClientIdentity {
            fingerprint: certificate_fingerprint(&cert),
            cert,
            key: Arc::new(key),
        })
    }

    /// What a worker must be given in `CJM_CLIENT_CERT_SHA256`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(identity.key.as_ref().clone_key());
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer {
                expected: server,
                provider,
            }))
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

/// A certificate mismatch found by [`PinnedServer`], carried through rustls's error to
/// the connector, which names the peer (a worker, a Ray dashboard).
#[derive(Debug, thiserror::Error)]
#[error("it presented a certificate with SHA-256 {presented}, not the pinned {expected}")]
pub(crate) struct Mismatch {
    pub(crate) presented: Fingerprint,
    pub(crate) expected: Fingerprint,
}

fn handshake_error(worker: &str, expected: Fingerprint, source: io::Error) -> TlsConnectError {
    let mismatch = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<Mismatch>()
            }
            _ => None,
        });
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

/// Accepts only the server certificate with this fingerprint (names and dates are not
/// checked: the pin says which certificate, nothing else does).
#[derive(Debug)]
pub(crate) struct PinnedServer {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = certificate_fingerprint(end_entity);
        if presented == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(Mismatch {
                    presented,
                    expected: self.expected,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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

/// Why no handshake could be read from a worker's stdout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeReadError {
    /// No handshake line in time.
    #[error("the worker printed no handshake within {waited:?}")]
    Timeout {
        /// How long was waited.
        waited: Duration,
    },
    /// Stdout closed first: the worker exited (or closed it) without a handshake.
    #[error("the worker's stdout closed before its handshake (did it exit?)")]
    Closed,
    /// Stdout could not be read.
    #[error("cannot read the worker's stdout")]
    Read(#[source] io::Error),
    /// A handshake line that cannot be used.
    #[error("the worker's handshake cannot be used")]
    Invalid(#[source] HandshakeError),
    /// More output than any worker prints before its handshake.
    #[error("the worker printed over {MAX_OUTPUT_BEFORE_HANDSHAKE} bytes without a handshake")]
    TooMuchOutput,
}

/// Read `stdout` up to the worker's handshake line and check it, giving up after
/// `limit`. Lines before it (a plugin's own prints) are skipped; the rest of the
/// output stays in `stdout` for the caller to drain (a worker whose stdout pipe is
/// full would block).
pub async fn read_handshake<R>(
    stdout: &mut R,
    limit: Duration,
) -> Result<Handshake, HandshakeReadError>
where
    R: AsyncBufRead + Unpin,
{
    let read = async {
        let mut seen = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            let read = stdout
                .read_line(&mut line)
                .await
                .map_err(HandshakeReadError::Read)?;
            if read == 0 {
                return Err(HandshakeReadError::Closed);
            }
            if Handshake::is_candidate(&line) {
                return Handshake::parse_line(&line).map_err(HandshakeReadError::Invalid);
            }
            tracing::debug!("worker output before its handshake: {}", line.trim_end());
            seen += read;
            if seen > MAX_OUTPUT_BEFORE_HANDSHAKE {
                return Err(HandshakeReadError::TooMuchOutput);
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| HandshakeReadError::Timeout { waited: limit })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    #[test]
    fn a_kept_identity_is_the_same_at_every_start_and_only_its_owner_reads_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("tls");
        let first = ClientIdentity::kept_in(&folder).unwrap();
        let again = ClientIdentity::kept_in(&folder).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_ne!(
            first.fingerprint(),
            ClientIdentity::generate().unwrap().fingerprint()
        );
        let mode = |name: &str| {
            std::fs::metadata(folder.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("host-client.identity"), 0o600);
        // The identity file alone: no temporary is left behind.
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1);
        assert_eq!(
            std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A kept identity still makes a working TLS configuration.
        PinnedConnector::new(&again, first.fingerprint()).unwrap();
    }

    /// The key of `identity` is its certificate's.
    fn assert_whole(identity: &ClientIdentity) {
        rustls::sign::CertifiedKey::from_der(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
            &rustls::crypto::ring::default_provider(),
        )
        .unwrap();
    }

    /// Run by [`an_identity_made_by_many_at_once_is_one_and_whole`] in processes of
    /// its own (this test binary again): prints the fingerprint it got.
    #[test]
    fn identity_maker_in_a_child_process() {
        let Some(folder) = std::env::var_os("CJM_TEST_IDENTITY_FOLDER") else {
            return;
        };
        let identity = ClientIdentity::kept_in(std::path::Path::new(&folder)).unwrap();
        assert_whole(&identity);
        std::fs::write(
            std::path::Path::new(&folder).with_extension(format!("seen{}", std::process::id())),
            identity.fingerprint().to_string(),
        )
        .unwrap();
    }

    #[test]
    fn an_identity_made_by_many_at_once_is_one_and_whole() {
        // Several rounds: the race is between processes and threads alike.
        for _ in 0..5 {
            one_identity_made_by_many_at_once();
        }
    }

    fn one_identity_made_by_many_at_once() {
        const THREADS: usize = 8;
        const PROCESSES: usize = 4;
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("tls");
        let test_binary = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                std::process::Command::new(&test_binary)
                    .args(["--exact", "tls::tests::identity_maker_in_a_child_process"])
                    .env("CJM_TEST_IDENTITY_FOLDER", &folder)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (folder, start) = (folder.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    ClientIdentity::kept_in(&folder).unwrap()
                })
            })
            .collect();
        let mut seen: Vec<String> = threads
            .into_iter()
            .map(|thread| {
                let identity = thread.join().unwrap();
                assert_whole(&identity);
                identity.fingerprint().to_string()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        for entry in std::fs::read_dir(home.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|ext| ext.to_string_lossy().starts_with("seen"))
            {
                seen.push(std::fs::read_to_string(path).unwrap());
            }
        }
        assert_eq!(seen.len(), THREADS + PROCESSES);
        let kept = ClientIdentity::kept_in(&folder).unwrap();
        assert_whole(&kept);
        let kept = kept.fingerprint().to_string();
        assert!(
            seen.iter().all(|one| *one == kept),
            "{kept} kept; seen {seen:?}"
        );
    }

    #[test]
    fn an_identity_kept_by_an_earlier_release_is_read_if_whole() {
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("tls");
        std::fs::create_dir(&folder).unwrap();
        let old = ClientIdentity::generate().unwrap();
        std::fs::write(folder.join(LEGACY_CERT_FILE), old.cert.as_ref()).unwrap();
        std::fs::write(folder.join(LEGACY_KEY_FILE), old.key.secret_pkcs8_der()).unwrap();
        let read = ClientIdentity::kept_in(&folder).unwrap();
        assert_eq!(read.fingerprint(), old.fingerprint());
        assert!(!folder.join(IDENTITY_FILE).exists());

        // A key beside another's certificate (what two first writers at once could
        // leave) is refused, saying what to do.
        let stranger = ClientIdentity::generate().unwrap();
        std::fs::write(
            folder.join(LEGACY_KEY_FILE),
            stranger.key.secret_pkcs8_der(),
        )
        .unwrap();
        let err = ClientIdentity::kept_in(&folder).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|cause| cause.contains("remove the folder")),
            "{err}: {cause:?}"
        );
    }

    #[tokio::test]
    async fn the_handshake_is_read_past_other_output() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let line = Handshake::new(4100, certificate_fingerprint(b"x"), 7).to_line();
        writer
            .write_all(format!("plugin says hi\n{line}\nmore\n").as_bytes())
            .await
            .unwrap();
        let mut reader = BufReader::new(reader);
        let handshake = read_handshake(&mut reader, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(handshake.port, 4100);
        // What follows stays for the caller.
        let mut rest = String::new();
        reader.read_line(&mut rest).await.unwrap();
        assert_eq!(rest, "more\n");
    }

    #[tokio::test]
    async fn no_handshake_is_an_error_that_says_why() {
        let (writer, reader) = tokio::io::duplex(1024);
        drop(writer);
        let closed = read_handshake(&mut BufReader::new(reader), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(closed, HandshakeReadError::Closed), "{closed:?}");

        let (_writer, reader) = tokio::io::duplex(1024);
        let silent = read_handshake(&mut BufReader::new(reader), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            silent.to_string(),
            "the worker printed no handshake within 50ms"
        );

        let (mut writer, reader) = tokio::io::duplex(1024);
        writer
            .write_all(b"{\"cjm_worker\": 1, \"port\": 0}\n")
            .await
            .unwrap();
        let invalid = read_handshake(&mut BufReader::new(reader), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(invalid, HandshakeReadError::Invalid(_)),
            "{invalid:?}"
        );
    }

    #[test]
    fn one_identity_per_host_process() {
        let first = ClientIdentity::shared().unwrap();
        let second = ClientIdentity::shared().unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_ne!(
            ClientIdentity::generate().unwrap().fingerprint(),
            first.fingerprint()
        );
    }
}
