//! The worker's TLS: a fresh self-signed certificate per start, and a client
//! verifier that accepts exactly one client certificate, the host's, named by its
//! SHA-256 fingerprint (see `cjm_interface::remote`).
//!
//! No certificate authority is involved either way: the host learns this worker's
//! certificate from the handshake line, the worker the host's from
//! `CJM_CLIENT_CERT_SHA256`. Signatures are still checked in full (rustls with ring),
//! so a client must hold the private key of the pinned certificate, not merely a copy
//! of the certificate.

use std::sync::Arc;

use cjm_interface::remote::Fingerprint;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
};

/// The name in the worker's certificate. Nobody checks it (trust is the pinned
/// fingerprint), but a certificate must name something.
const CERTIFICATE_NAME: &str = "cjm-worker";

/// Why the worker's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The self-signed certificate could not be made.
    #[error("cannot make the worker's certificate")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS")]
    Config(#[source] rustls::Error),
}

/// SHA-256 of a certificate's DER bytes.
pub(crate) fn fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint::from_digest(bytes)
}

/// The TLS server of one worker start: its configuration and its certificate's
/// fingerprint (for the handshake line).
pub(crate) struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) fingerprint: Fingerprint,
}

/// TLS 1.3 with a new certificate, accepting only the client certificate `client`.
pub(crate) fn server_tls(client: Fingerprint) -> Result<ServerTls, TlsSetupError> {
    let certified = rcgen::generate_simple_self_signed(vec![String::from(CERTIFICATE_NAME)])
        .map_err(TlsSetupError::Certificate)?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let fingerprint = fingerprint(&cert);
    let config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Config)?
        .with_client_cert_verifier(Arc::new(PinnedClient {
            expected: client,
            provider,
        }))
        .with_single_cert(vec![cert], key)
        .map_err(TlsSetupError::Config)?;
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
    })
}

/// Requires a client certificate, and accepts only the one with this fingerprint.
#[derive(Debug)]
struct PinnedClient {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
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
    ) -> Result<ClientCertVerified, Error> {
        let presented = fingerprint(end_entity);
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
        Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
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
    ) -> Result<HandshakeSignatureValid, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_has_a_certificate_of_its_own() {
        let client = fingerprint(b"not a certificate, only bytes to hash");
        let first = server_tls(client).unwrap();
        let second = server_tls(client).unwrap();
        assert_ne!(first.fingerprint, second.fingerprint);
    }

    #[test]
    fn only_the_pinned_client_certificate_is_accepted() {
        let pinned = rcgen::generate_simple_self_signed(vec![String::from("host")]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec![String::from("host")]).unwrap();
        let verifier = PinnedClient {
            expected: fingerprint(pinned.cert.der()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        assert!(verifier.client_auth_mandatory());
        let now = UnixTime::now();
        assert!(verifier
            .verify_client_cert(pinned.cert.der(), &[], now)
            .is_ok());
        assert_eq!(
            verifier
                .verify_client_cert(other.cert.der(), &[], now)
                .unwrap_err(),
            Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
    }

    #[test]
    fn the_fingerprint_is_sha256_of_the_der_bytes() {
        // SHA-256("abc"), from FIPS 180-2.
        assert_eq!(
            fingerprint(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
