//! TLS for a TCP listener beyond loopback: a certificate and key given as PEM files,
//! or a self-signed pair made at the first start and kept in `$CJM_HOME/daemon-tls/`
//! (key 0600 in a 0700 folder), whose SHA-256 fingerprint the daemon prints so that
//! clients can pin it (there is no authority to vouch for it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cjm_interface::private::{write_private_file, IfExists};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::error::DaemonError;

/// Where a TLS listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// These PEM files: a certificate chain (the server's first) and its private key.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// Its private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A self-signed certificate kept in `$CJM_HOME/daemon-tls/`, made there at the
    /// first start (the same one at every later start, so that a pin holds).
    SelfSigned,
}

/// The folder of the self-signed pair, in the home.
pub(crate) const SELF_SIGNED_FOLDER: &str = "daemon-tls";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// How long a client has to finish its TLS handshake.
pub(crate) const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A listener's TLS: the acceptor, and its certificate's SHA-256 fingerprint (hex).
#[derive(Clone)]
pub(crate) struct TlsServer {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) fingerprint: String,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn tls_error(what: &'static str, path: &Path) -> impl Fn(String) -> DaemonError {
    let path = path.to_path_buf();
    move |detail| DaemonError::Tls {
        what,
        path: path.clone(),
        detail,
    }
}

impl TlsServer {
    /// The TLS of a listener on `addr`, from `source` (`home` keeps a self-signed pair).
    pub(crate) fn load(
        source: &TlsSource,
        home: &Path,
        addr: SocketAddr,
    ) -> Result<TlsServer, DaemonError> {
        let (chain, key) = match source {
            TlsSource::Files { cert, key } => (read_chain(cert)?, read_key(key)?),
            TlsSource::SelfSigned => self_signed(&home.join(SELF_SIGNED_FOLDER), addr)?,
        };
        let leaf = chain.first().ok_or_else(|| {
            let path = match source {
                TlsSource::Files { cert, .. } => cert.clone(),
                TlsSource::SelfSigned => home.join(SELF_SIGNED_FOLDER).join(CERT_FILE),
            };
            tls_error("no certificate in", &path)(String::from("no CERTIFICATE section"))
        })?;
        let fingerprint = fingerprint(leaf);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|err| {
                let path = match source {
                    TlsSource::Files { key, .. } => key.clone(),
                    TlsSource::SelfSigned => home.join(SELF_SIGNED_FOLDER),
                };
                tls_error("the certificate and key are refused", &path)(err.to_string())
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint,
        })
    }
}

/// SHA-256 of a certificate's DER bytes, lowercase hex: what a client pins.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, DaemonError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| tls_error("cannot read the certificate", path)(err.to_string()))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, DaemonError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|err| tls_error("cannot read the private key", path)(err.to_string()))
}

/// The pair kept in `folder`, made there if either half is missing.
fn self_signed(
    folder: &Path,
    addr: SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), DaemonError> {
    let cert_path = folder.join(CERT_FILE);
    let key_path = folder.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        return Ok((read_chain(&cert_path)?, read_key(&key_path)?));
    }
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DaemonError::Io { what, path, source }
    };
    cjm_interface::private::create_private_parent(&key_path)
        .map_err(io("cannot make the TLS folder", folder))?;
    // Names are not what a client trusts (it pins the fingerprint), but a browser
    // shown the certificate should see where it is from.
    let mut names = vec![
        String::from("localhost"),
        String::from("127.0.0.1"),
        String::from("::1"),
    ];
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        names.push(addr.ip().to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|err| tls_error("cannot make a certificate in", folder)(err.to_string()))?;
    let key_der = certified.signing_key.serialize_der();
    let cert_der = certified.cert.der().clone();
    // The key first: a start that dies between the two finds no certificate and
    // makes both again, never a certificate beside another's key.
    write_private_file(
        &key_path,
        crate::pem::encode("PRIVATE KEY", &key_der).as_bytes(),
        IfExists::Replace,
    )
    .map_err(io("cannot write", &key_path))?;
    write_private_file(
        &cert_path,
        crate::pem::encode("CERTIFICATE", cert_der.as_ref()).as_bytes(),
        IfExists::Replace,
    )
    .map_err(io("cannot write", &cert_path))?;
    tracing::info!("made a self-signed TLS certificate in {}", folder.display());
    Ok((
        vec![cert_der],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_self_signed_pair_is_made_once_kept_private_and_read_back_as_files() {
        let home = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let first = TlsServer::load(&TlsSource::SelfSigned, home.path(), addr).unwrap();
        assert_eq!(first.fingerprint.len(), 64);
        let again = TlsServer::load(&TlsSource::SelfSigned, home.path(), addr).unwrap();
        assert_eq!(again.fingerprint, first.fingerprint);
        let folder = home.path().join(SELF_SIGNED_FOLDER);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&folder.join(KEY_FILE)), 0o600);
        let files = TlsSource::Files {
            cert: folder.join(CERT_FILE),
            key: folder.join(KEY_FILE),
        };
        let given = TlsServer::load(&files, Path::new("/nonexistent"), addr).unwrap();
        assert_eq!(given.fingerprint, first.fingerprint);

        let missing = TlsSource::Files {
            cert: home.path().join("none.pem"),
            key: folder.join(KEY_FILE),
        };
        let refused = TlsServer::load(&missing, home.path(), addr)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("none.pem"), "{refused}");
        // A key that is not the certificate's.
        let other = tempfile::tempdir().unwrap();
        TlsServer::load(&TlsSource::SelfSigned, other.path(), addr).unwrap();
        let mismatched = TlsSource::Files {
            cert: folder.join(CERT_FILE),
            key: other.path().join(SELF_SIGNED_FOLDER).join(KEY_FILE),
        };
        let refused = TlsServer::load(&mismatched, home.path(), addr)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("refused"), "{refused}");
    }
}
