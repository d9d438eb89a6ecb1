//! A remote worker's TLS server (a native worker's `--listen`, or the relay's): a
//! fresh self-signed certificate at every start, and only the host's client
//! certificate accepted.

use std::sync::Arc;

use cjm_interface::remote::Fingerprint;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::{certificate_fingerprint, PinnedClient, TlsError};

/// The name in a worker's certificate. Nobody checks it (trust is the pinned
/// fingerprint), but a certificate must name something.
const CERTIFICATE_NAME: &str = "cjm-worker";

/// The TLS server of one worker start: its configuration and its certificate's
/// fingerprint (for the handshake line, see [`announce`](crate::announce)).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// TLS 1.3 with a new certificate, accepting only the client certificate `client`
    /// (the host's, from `CJM_CLIENT_CERT_SHA256`).
    pub fn new(client: Fingerprint) -> Result<ServerTls, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![String::from(CERTIFICATE_NAME)])
            .map_err(TlsError::Certificate)?;
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = crate::provider();
        let fingerprint = certificate_fingerprint(&cert);
        let config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(Arc::new(PinnedClient::new(client, provider)))
            .with_single_cert(vec![cert], key)
            .map_err(TlsError::Config)?;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The fingerprint of this start's certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// An acceptor for tokio-rustls.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_has_a_certificate_of_its_own() {
        let client = certificate_fingerprint(b"not a certificate, only bytes to hash");
        let first = ServerTls::new(client).unwrap();
        let second = ServerTls::new(client).unwrap();
        assert_ne!(first.fingerprint(), second.fingerprint());
    }
}
