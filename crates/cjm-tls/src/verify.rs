//! The two verifiers, one for each direction: each accepts exactly one certificate,
//! named by its SHA-256, and checks its signatures in full (rustls with ring), so the
//! peer must hold the pinned certificate's private key, not merely a copy of it.

use std::sync::Arc;

use cjm_interface::remote::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::certificate_fingerprint;

/// A server certificate other than the pinned one, found by [`PinnedServer`] and
/// carried through rustls's error to whoever connected, who names the peer (a worker,
/// a Ray dashboard).
#[derive(Debug, Clone, thiserror::Error)]
#[error("it presented a certificate with SHA-256 {presented}, not the pinned {expected}")]
#[non_exhaustive]
pub struct Mismatch {
    /// The fingerprint of the certificate presented.
    pub presented: Fingerprint,
    /// The fingerprint pinned.
    pub expected: Fingerprint,
}

impl Mismatch {
    /// The mismatch `err` reports, if it is one ([`PinnedServer`]'s refusal).
    pub fn of(err: &rustls::Error) -> Option<&Mismatch> {
        match err {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<Mismatch>()
            }
            _ => None,
        }
    }
}

/// Accepts only the server certificate with this fingerprint: names and dates are not
/// checked (the pin says which certificate, nothing else does). Remote workers and
/// pinned Ray dashboards alike.
#[derive(Debug)]
pub struct PinnedServer {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedServer {
    /// Accept the certificate `expected`, checking signatures with `provider`'s
    /// algorithms.
    pub fn new(expected: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
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
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes(&self.provider)
    }
}

/// Requires a client certificate, and accepts only the one with this fingerprint: a
/// remote worker's check of its host.
#[derive(Debug)]
pub struct PinnedClient {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedClient {
    /// Accept the client certificate `expected`, checking signatures with
    /// `provider`'s algorithms.
    pub fn new(expected: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        PinnedClient { expected, provider }
    }
}

impl ClientCertVerifier for PinnedClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = certificate_fingerprint(end_entity);
        if presented == self.expected {
            return Ok(ClientCertVerified::assertion());
        }
        // Said here, where the worker's log can show it; the client only learns that
        // it was refused (an access_denied alert).
        tracing::warn!(
            "refused a TLS client: its certificate's fingerprint is {presented}, \
             the host's is {}",
            self.expected
        );
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes(&self.provider)
    }
}

fn verify_tls12(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn supported_schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_client_certificate_is_accepted() {
        let pinned = rcgen::generate_simple_self_signed(vec![String::from("host")]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec![String::from("host")]).unwrap();
        let verifier = PinnedClient::new(
            certificate_fingerprint(pinned.cert.der()),
            crate::provider(),
        );
        assert!(verifier.client_auth_mandatory());
        let now = UnixTime::now();
        assert!(verifier
            .verify_client_cert(pinned.cert.der(), &[], now)
            .is_ok());
        assert_eq!(
            verifier
                .verify_client_cert(other.cert.der(), &[], now)
                .unwrap_err(),
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
    }

    #[test]
    fn only_the_pinned_server_certificate_is_accepted_and_a_mismatch_names_both() {
        let pinned = rcgen::generate_simple_self_signed(vec![String::from("w")]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec![String::from("w")]).unwrap();
        let expected = certificate_fingerprint(pinned.cert.der());
        let verifier = PinnedServer::new(expected, crate::provider());
        let name = ServerName::try_from("w").unwrap();
        let now = UnixTime::now();
        assert!(verifier
            .verify_server_cert(pinned.cert.der(), &[], &name, &[], now)
            .is_ok());
        let err = verifier
            .verify_server_cert(other.cert.der(), &[], &name, &[], now)
            .unwrap_err();
        let mismatch = Mismatch::of(&err).unwrap();
        assert_eq!(mismatch.expected, expected);
        assert_eq!(
            mismatch.presented,
            certificate_fingerprint(other.cert.der())
        );
    }
}
