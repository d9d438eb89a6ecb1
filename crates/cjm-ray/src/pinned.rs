//! A dashboard pinned by its certificate's SHA-256. A copy of the proxy's verifier
//! for one step of the split: the pinned-TLS crate (cjm-tls) takes both.

use std::sync::Arc;

use cjm_interface::remote::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// SHA-256 of a certificate's DER bytes.
pub(crate) fn certificate_fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint::from_digest(bytes)
}

/// A certificate mismatch found by [`PinnedServer`], carried through rustls's error.
#[derive(Debug, thiserror::Error)]
#[error("it presented a certificate with SHA-256 {presented}, not the pinned {expected}")]
pub(crate) struct Mismatch {
    pub(crate) presented: Fingerprint,
    pub(crate) expected: Fingerprint,
}

/// Accepts only the server certificate with this fingerprint.
#[derive(Debug)]
pub(crate) struct PinnedServer {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedServer {
    pub(crate) fn new(expected: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        PinnedServer { expected, provider }
    }
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
